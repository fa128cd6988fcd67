#!/usr/bin/env bash
# Budget-trained skimming on long inputs: IMDB, 5,000 seeded training reviews at max length 512, evaluated on 2,000
# seeded test reviews; results/budget_sst2's runs (dense first, then the budget) on this task. See README.md here.
# Usage: OUT=runs/imdb_512 results/imdb_512/run.sh dense-e1 densec-e2 tkd-t0.3 ltp-t0.3 ...
# Batch 16 with 2 accumulation steps (32 per optimizer step, as on SST-2): 512-token masked attention for 32 rows
# needs more memory than a 23 GB machine has to spare.
set -euo pipefail
TASK=imdb MAXLEN=512 ROWS=${ROWS:-5000} OUT=${OUT:-/tmp/imdb_512} \
  EXTRA="--max-eval-samples 2000 --per-device-train-batch-size 16 --gradient-accumulation-steps 2
         --per-device-eval-batch-size 32 --train-sampling-strategy group_by_length ${EXTRA:-}" \
  exec "$(dirname "$0")/../budget_sst2/run.sh" "$@"
