#!/usr/bin/env bash
# Magic Pyramid on AG News with 1,000 training rows held out (never trained on), and both inference knobs
# (threshold_scale, exit_threshold) calibrated to 4x FLOPs on them; each chosen pair, and each knob alone at 4x,
# then evaluated on the 1,520 evaluation rows. See README.md in this folder.
# Usage: OUT=runs/ag_news_ho results/ag_news_pyramid/holdout.sh train | calibrate | evaluate
set -euo pipefail
OUT=${OUT:-runs/ag_news_ho}
HERE=$(dirname "$0")
export HF_HUB_OFFLINE=1
# the settings of the floor-1 runs of this folder (layer 0 may prune, soft stage 1 epoch, exit heads 1 epoch at 5e-3)
F="--prune-first-layer true --final-threshold 3.0 --stage-epochs 1,1,0.5,1 --selector-learning-rate 3e-2
   --stage-learning-rates 5e-5,5e-5,5e-5,5e-3 --min-kept-tokens 1"
# the variants of budget 0.2, each in OUT_<variant>: another seed, the soft stage's encoder at 1e-5, and the first
# model's exit heads retrained 2 epochs (its pruning stages copied, so only the exit-heads stage trains)
MODELS="$OUT/mpr-t0.2 $OUT/mpr-t0.25 ${OUT}_s43/mpr-t0.2 ${OUT}_soft/mpr-t0.2 ${OUT}_exit2/mpr-t0.2"

name() {  # runs/ag_news_ho/mpr-t0.2 -> ho-mpr-t0.2, runs/ag_news_ho_s43/mpr-t0.2 -> ho-mpr-t0.2-s43
  local run=${1##*/} variant=${1%/*}; variant=${variant#"$OUT"}
  case $variant in _soft) variant=_soft1e-5 ;; esac
  echo "ho-$run${variant/_/-}"
}

variant() {  # variant NAME EXTRA...: OUT_NAME with dense-e1 linked in, mpr-t0.2 trained there with the EXTRA flags
  local out=${OUT}_$1; shift
  mkdir -p "$out" && ln -sfn "$PWD/$OUT/dense-e1" "$out/dense-e1"
  OUT=$out EXTRA="--holdout-samples 1000 $F $*" "$HERE/run.sh" mpr-t0.2
}

at() {  # at MODEL SCALE TAU LABEL: evaluate a copy of MODEL with both knobs set -> json/NAME-LABEL.json
  local copy; copy=$(mktemp -d)
  cp -r "$1"/. "$copy"
  python - "$copy/config.json" "$2" "$3" <<'PY'
import json, sys
path, scale, tau = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
config = json.load(open(path))
config.update(threshold_scale=scale, exit_threshold=tau)
json.dump(config, open(path, "w"), indent=2, sort_keys=True)
PY
  tokenskim evaluate --model "$copy" --task ag_news --max-length 128 --output-dir "$copy/eval" > /dev/null
  python - "$copy/eval/eval_results.json" "$HERE/json/$(name "$1")-$4.json" "$1 at $2 / $3" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
record["model"] = sys.argv[3]  # the model and its two knobs, not the temporary copy's path
json.dump(record, open(sys.argv[2], "w"), indent=2)
PY
  rm -rf "$copy"
}

case "${1:-}" in
  train)
    OUT=$OUT EXTRA="--holdout-samples 1000" "$HERE/run.sh" dense-e1
    OUT=$OUT EXTRA="--holdout-samples 1000 $F" "$HERE/run.sh" mpr-t0.2 mpr-t0.25
    OUT=$OUT EXTRA="--holdout-samples 1000" "$HERE/run.sh" densec-e2
    variant s43 --seed 43
    variant soft --stage-learning-rates 5e-5,1e-5,5e-5,5e-3
    mkdir -p "${OUT}_exit2/mpr-t0.2" && cp -r "$OUT/mpr-t0.2/stage-2-soft-pruning" "$OUT/mpr-t0.2/stage-3-hard-pruning" \
        "${OUT}_exit2/mpr-t0.2/"
    variant exit2 --stage-epochs 1,1,0.5,2
    ;;
  calibrate)  # on a copy of each model (--dry-run: the config stays), its calibration.json into this folder
    for m in $MODELS; do
      rm -rf "$m-joint" && cp -r "$m" "$m-joint"
      tokenskim calibrate --model "$m-joint" --task ag_news --max-length 128 --knob threshold_scale,exit_threshold \
          --target-flops 4.0 --calibration-split holdout --holdout-samples 1000 --dry-run
      cp "$m-joint/calibration.json" "$HERE/calibration_joint_$(name "$m").json"
    done
    ;;
  evaluate)  # as trained, the chosen pair, and each knob alone at its 4x point of the same search
    for m in $OUT/dense-e1 $OUT/densec-e2 $MODELS; do
      cp "$m/eval_results.json" "$HERE/json/$(name "$m").json"
    done
    for m in $MODELS; do
      read -r joint exit prune < <(python - "$HERE/calibration_joint_$(name "$m").json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
reach = [p for p in r["points"] if p["flops_ratio"] >= r["target_flops"]]
exits = min((p for p in reach if p["threshold_scale"] == r["trained_value"][0]), key=lambda p: p["exit_threshold"])
prune = min((p for p in reach if p["exit_threshold"] == 0), key=lambda p: p["threshold_scale"])
print(*("%s/%s" % tuple(pair) for pair in (r["chosen"], (exits["threshold_scale"], exits["exit_threshold"]),
                                     (prune["threshold_scale"], prune["exit_threshold"]))))
PY
)
      at "$m" "${joint%/*}" "${joint#*/}" joint4x
      at "$m" "${exit%/*}" "${exit#*/}" exit4x
      at "$m" "${prune%/*}" "${prune#*/}" scale4x
    done
    ;;
  *) echo "usage: OUT=runs/ag_news_ho $0 train | calibrate | evaluate" >&2; exit 2 ;;
esac
