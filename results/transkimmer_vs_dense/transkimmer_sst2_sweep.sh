#!/usr/bin/env bash
# Pilot grid for Transkimmer's skim coefficient and selector learning rate on the bundled SST-2 sample
# (4,000 training rows, 1 epoch, full 872-row dev set), starting from the SST-2 dense fine-tune.
set -uo pipefail
OUT=${OUT:-/tmp/transkimmer}
HERE=$(cd "$(dirname "$0")/../.." && pwd)  # the repository
export HF_HUB_OFFLINE=1
for run in "$@"; do  # run = COEFF:SELECTOR_LR, e.g. 0.3:1e-4
  c=${run%%:*}; s=${run##*:}; name=pilot-c$c-s$s
  args="--method transkimmer --model $OUT/sst2-dense --task sst2 --train-file $HERE/trainers/data/sst2_train_sample.tsv --validation-file $HERE/trainers/data/sst2_dev.tsv --max-length 64 --num-train-epochs 1 --learning-rate 2e-5 --skim-coefficient $c --selector-learning-rate $s --eval-strategy no --save-strategy no --logging-steps 25 --disable-tqdm true --output-dir $OUT/$name"
  echo "tokenskim train $args" > "$OUT/$name.cmd"
  tokenskim train $args > "$OUT/$name.log" 2>&1 || { echo "$name failed"; continue; }
  echo "$name: $(python -c "import json; r=json.load(open('$OUT/$name/eval_results.json')); print(round(r['accuracy'],4), round(r['kept_token_ratio'],3), round(r['flops_ratio'],2))")"
done
