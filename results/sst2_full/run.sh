#!/usr/bin/env bash
# Budget-trained skimming on the full SST-2 training set (67,349 rows): results/budget_sst2's runs with ROWS=all and
# length-grouped training batches (Trainer's group_by_length sampler; every run alike, dense included), which cut
# the padding of the short training phrases. See README.md in this folder.
# Usage: OUT=runs/sst2_full results/sst2_full/run.sh dense-e1 densec-e2 tkd-t0.45 ltp-t0.4 ...
set -euo pipefail
ROWS=all EXTRA="--train-sampling-strategy group_by_length ${EXTRA:-}" OUT=${OUT:-/tmp/sst2_full} \
  exec "$(dirname "$0")/../budget_sst2/run.sh" "$@"
