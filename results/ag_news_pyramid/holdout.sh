#!/usr/bin/env bash
# Magic Pyramid on AG News with 1,000 training rows held out (never trained on), and both inference knobs
# (threshold_scale, exit_threshold) calibrated to 4x FLOPs on them; each chosen pair, and each knob alone at 4x,
# then evaluated on the 1,520 evaluation rows. See README.md in this folder.
# Usage: OUT=runs/ag_news_ho results/ag_news_pyramid/holdout.sh train | calibrate | evaluate [RUN...]
#   RUN: dense-e1 densec-e2 densec-e3 (train only) mpr-t0.2 mpr-t0.25 s43 soft exit2 kd kd-s43 kd-t0.15 hard2
#   kdhard2 from2; default: all, in order
set -euo pipefail
OUT=${OUT:-runs/ag_news_ho}
HERE=$(dirname "$0")
export HF_HUB_OFFLINE=1
# the settings of the floor-1 runs of this folder (layer 0 may prune, soft stage 1 epoch, exit heads 1 epoch at 5e-3)
F="--prune-first-layer true --final-threshold 3.0 --stage-epochs 1,1,0.5,1 --selector-learning-rate 3e-2
   --stage-learning-rates 5e-5,5e-5,5e-5,5e-3 --min-kept-tokens 1"
# the variants of budget 0.2, each in OUT_<variant>: another seed, the soft stage's encoder at 1e-5, the first
# model's exit heads retrained 2 epochs (its pruning stages copied, so only the exit-heads stage trains), the
# pruning stages distilling the dense control's predictions (kd; kd-s43 with seed 43; kd-t0.15 at budget 0.15), a
# hard stage of 1.5 epochs instead of 0.5 (hard2; kdhard2 distilling too), and the pruning stages from the 2-epoch
# dense model (from2: densec-e2; its control densec-e3)
DENSE="dense-e1 densec-e2 densec-e3"
MAGIC="mpr-t0.2 mpr-t0.25 s43 soft exit2 kd kd-s43 kd-t0.15 hard2 kdhard2 from2"

folder() {  # folder RUN: the folder of a run of this series
  case $1 in
    dense-e*|densec-e*|mpr-t*) echo "$OUT/$1" ;;
    *-t*) echo "${OUT}_${1%%-t*}/mpr-t${1#*-t}" ;;  # kd-t0.15 -> OUT_kd/mpr-t0.15
    *) echo "${OUT}_$1/mpr-t0.2" ;;
  esac
}

name() {  # runs/ag_news_ho/mpr-t0.2 -> ho-mpr-t0.2, runs/ag_news_ho_s43/mpr-t0.2 -> ho-mpr-t0.2-s43
  local run=${1##*/} variant=${1%/*}; variant=${variant#"$OUT"}
  case $variant in _soft) variant=_soft1e-5 ;; esac
  echo "ho-$run${variant/_/-}"
}

variant() {  # variant NAME RUN EXTRA...: OUT_NAME with dense-e1 linked in, RUN trained there with the EXTRA flags
  local out=${OUT}_$1 run=$2; shift 2
  mkdir -p "$out" && ln -sfn "$PWD/$OUT/dense-e1" "$out/dense-e1"
  OUT=$out EXTRA="--holdout-samples 1000 $F $*" "$HERE/run.sh" "$run"
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

KD="--distill-from $PWD/$OUT/densec-e2"  # the dense control as teacher
train() {  # train RUN
  case $1 in
    dense-e1|densec-e2|densec-e3) OUT=$OUT EXTRA="--holdout-samples 1000" "$HERE/run.sh" "$1" ;;
    mpr-t0.2|mpr-t0.25) OUT=$OUT EXTRA="--holdout-samples 1000 $F" "$HERE/run.sh" "$1" ;;
    s43) variant s43 mpr-t0.2 --seed 43 ;;
    soft) variant soft mpr-t0.2 --stage-learning-rates 5e-5,1e-5,5e-5,5e-3 ;;
    exit2)
      mkdir -p "${OUT}_exit2/mpr-t0.2" && cp -r "$OUT/mpr-t0.2/stage-2-soft-pruning" \
          "$OUT/mpr-t0.2/stage-3-hard-pruning" "${OUT}_exit2/mpr-t0.2/"
      variant exit2 mpr-t0.2 --stage-epochs 1,1,0.5,2 ;;
    kd) variant kd mpr-t0.2 $KD ;;
    kd-t*) variant kd "mpr-t${1#kd-t}" $KD ;;
    kd-s43) variant kd-s43 mpr-t0.2 $KD --seed 43 ;;
    hard2) variant hard2 mpr-t0.2 --stage-epochs 1,1,1.5,1 ;;
    kdhard2) variant kdhard2 mpr-t0.2 $KD --stage-epochs 1,1,1.5,1 ;;
    from2) variant from2 mpr-t0.2 --finetuned "$PWD/$OUT/densec-e2" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

step=${1:-}; shift || true
case $step in
  train)  # dense-e1 first, densec-e2 before the runs that distill it
    for run in ${@:-$DENSE $MAGIC}; do train "$run"; done
    ;;
  calibrate)  # on a copy of each model (--dry-run: the config stays), its calibration.json into this folder
    for run in ${@:-$MAGIC}; do
      m=$(folder "$run")
      rm -rf "$m-joint" && cp -r "$m" "$m-joint"
      tokenskim calibrate --model "$m-joint" --task ag_news --max-length 128 --knob threshold_scale,exit_threshold \
          --target-flops 4.0 --calibration-split holdout --holdout-samples 1000 --dry-run
      cp "$m-joint/calibration.json" "$HERE/calibration_joint_$(name "$m").json"
    done
    ;;
  evaluate)  # as trained, the chosen pair, and each knob alone at its 4x point of the same search
    for run in ${@:-$DENSE $MAGIC}; do
      m=$(folder "$run")
      cp "$m/eval_results.json" "$HERE/json/$(name "$m").json"
      case " $DENSE " in *" $run "*) continue ;; esac
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
  *) echo "usage: OUT=runs/ag_news_ho $0 train | calibrate | evaluate [RUN...]" >&2; exit 2 ;;
esac
