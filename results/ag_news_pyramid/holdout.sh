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
MODELS="$OUT/mpr-t0.2 $OUT/mpr-t0.25 ${OUT}_s43/mpr-t0.2"

name() {  # runs/ag_news_ho_s43/mpr-t0.2 -> ho-mpr-t0.2-s43
  local run=${1##*/} suffix=; [[ $1 == *_s43/* ]] && suffix=-s43
  echo "ho-$run$suffix"
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
  cp "$copy/eval/eval_results.json" "$HERE/json/$(name "$1")-$4.json"
  rm -rf "$copy"
}

case "${1:-}" in
  train)
    OUT=$OUT EXTRA="--holdout-samples 1000" "$HERE/run.sh" dense-e1
    OUT=$OUT EXTRA="--holdout-samples 1000 $F" "$HERE/run.sh" mpr-t0.2 mpr-t0.25
    OUT=$OUT EXTRA="--holdout-samples 1000" "$HERE/run.sh" densec-e2
    mkdir -p "${OUT}_s43" && ln -sfn "$PWD/$OUT/dense-e1" "${OUT}_s43/dense-e1"
    OUT=${OUT}_s43 EXTRA="--holdout-samples 1000 --seed 43 $F" "$HERE/run.sh" mpr-t0.2
    ;;
  calibrate)  # on a copy of each model (--dry-run: the config stays), its calibration.json into this folder
    for m in $MODELS; do
      cp -r "$m" "$m-joint"
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
