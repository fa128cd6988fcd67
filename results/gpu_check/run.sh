#!/usr/bin/env bash
# One call on a lent GPU machine (../shared/GPU.md): the speed checks of the engine first, alone on the GPU, then the
# test suite. Prepare .gpu/ here first (results/gpu_check/prepare.sh), then, through the device tool:
#   command: bash results/gpu_check/run.sh      carry: [".gpu"]      timeout_s: 540
# Writes to $OUT: device.txt, bench_*.md (the tables), bench.tgz (their JSON and plots), pytest.txt.
# The same script runs on CPU for a dry run: DEVICE=cpu DTYPE=float32 SIZES=minilm EXAMPLES=16 OUT=/tmp/gpu_dry ...
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT} DEVICE=${DEVICE:-cuda} DTYPE=${DTYPE:-float16}
SIZES=${SIZES:-bert-base minilm} EXAMPLES=${EXAMPLES:-512}
WORK=$(mktemp -d) PY=${PY:-python3}
if ! $PY -c "import tokenskim.modeling, datasets" 2>/dev/null; then  # the device: no datasets/evaluate, no network
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
  mkdir -p /tmp/tsk/tokenskim
  for p in modeling trainers model_cards; do ln -sfn "$PWD/$p" "/tmp/tsk/tokenskim/$p"; done
  export PYTHONPATH=/tmp/tsk:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TOKENSKIM_DATA_DIR=${TOKENSKIM_DATA_DIR:-$PWD/.gpu/data}
TOKENIZER=$([ -d .gpu/tokenizer ] && echo "--tokenizer .gpu/tokenizer")
{ nvidia-smi 2>/dev/null; $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"; } > "$OUT/device.txt" 2>&1

bench() {  # NAME, then bench flags
  name=$1; shift
  timeout 150 $PY -m tokenskim.trainers.cli bench --device "$DEVICE" --dtype "$DTYPE" --repeats 3 --no-memory \
    --variants dense,dense_sorted,engine_off,skim $TOKENIZER --output-dir "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1
  echo "$name: exit $?" >> "$OUT/device.txt"
  cp "$WORK/$name/bench.md" "$OUT/bench_$name.md" 2>/dev/null || tail -20 "$WORK/$name.log" > "$OUT/bench_$name.md"
}
# the issue's cases: 512-token reviews at batch 64 and SST-2 lengths at batch 32 / 128, about 2x fewer FLOPs
for size in $SIZES; do
  bench "imdb_$size" --synthetic "$size" --target-flops 2.0 --task imdb --max-length 512 --max-examples "$EXAMPLES" \
    --batch-sizes 32,64
  bench "sst2_$size" --synthetic "$size" --target-flops 2.0 --task sst2 --max-examples "$EXAMPLES" --batch-sizes 32,128
done
tar czf "$OUT/bench.tgz" -C "$WORK" .

XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
timeout 240 $PY -m pytest -q -p no:cacheprovider $XDIST > "$OUT/pytest.txt" 2>&1
echo "pytest: exit $?" >> "$OUT/device.txt"
