#!/usr/bin/env bash
# Budget-trained Magic Pyramid (LTP + early exit) and LTP on AG News: results/budget_sst2's runs on this task, the
# 6,080 training rows of the seeded 80/20 split of the local test file, max length 128, evaluated on its 1,520 rows.
# Usage: OUT=runs/ag_news_pyramid results/ag_news_pyramid/run.sh dense-e1 densec-e2 mp-t0.25 ltp-t0.25 ...
set -euo pipefail
TASK=ag_news MAXLEN=128 ROWS=all OUT=${OUT:-/tmp/ag_news_pyramid} \
  EXTRA="--train-sampling-strategy group_by_length ${EXTRA:-}" \
  exec "$(dirname "$0")/../budget_sst2/run.sh" "$@"
