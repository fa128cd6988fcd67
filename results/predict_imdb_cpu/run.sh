#!/bin/bash
# tokenskim predict on IMDB reviews, on this CPU: the dense fine-tune against the Transkimmer fine-tuned from it,
# both through the same command (length-sorted batches of 32, max length 256, float32, 2 threads).
#   results/predict_imdb_cpu/run.sh DENSE_DIR SKIM_DIR [N]
# The input is a seeded random sample of N reviews of the IMDB test split (../shared/data/imdb/test.csv);
# the label column is kept only to score the predictions afterwards (predict reads the text column).
set -euo pipefail
DENSE=$1; SKIM=$2; N=${3:-3000}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/tokenskim-predict-imdb}
PY=${PY:-python}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
$PY - "$N" "$WORK/imdb_test_$N.csv" <<'PY'
import sys, pandas as pd
n, out = int(sys.argv[1]), sys.argv[2]
rows = pd.read_csv("/work/shared/data/imdb/test.csv", keep_default_na=False).sample(n=n, random_state=42)
rows[["text", "label"]].to_csv(out, index=False)
PY
for name in dense transkimmer; do
  model=$DENSE; [ $name = transkimmer ] && model=$SKIM
  echo "load average before $name: $(cut -d' ' -f1-3 /proc/loadavg)"
  $PY -m tokenskim.trainers.cli predict --model "$model" --input "$WORK/imdb_test_$N.csv" --text-columns text \
      --output "$WORK/$name.jsonl" --batch-size 32 --max-length 256 --device cpu --overwrite --no-progress
done
$PY - "$WORK" "$N" "$HERE" <<'PY'
import json, sys, pandas as pd
work, n, here = sys.argv[1], sys.argv[2], sys.argv[3]
labels = pd.read_csv(f"{work}/imdb_test_{n}.csv")["label"].map({0: "neg", 1: "pos"}).tolist()
rows = []
for name in ("dense", "transkimmer"):
    s = json.load(open(f"{work}/{name}.jsonl.summary.json"))
    preds = [json.loads(l)["label"] for l in open(f"{work}/{name}.jsonl")]
    acc = sum(p == t for p, t in zip(preds, labels)) / len(labels)
    rows.append({"model": name, "accuracy": acc, **{k: s[k] for k in ("examples", "seconds", "examples_per_second",
                 "kept_token_ratio", "flops_ratio", "tokens_per_example")}})
dense = rows[0]["examples_per_second"]
for r in rows:
    r["speedup_vs_dense"] = r["examples_per_second"] / dense
json.dump(rows, open(f"{here}/results.json", "w"), indent=2)
print("| model | docs | accuracy | examples/s | speedup | kept-token ratio | FLOPs ratio | tokens/doc |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['examples']} | {r['accuracy']:.4f} | {r['examples_per_second']:.1f} | {r['speedup_vs_dense']:.2f}x "
          f"| {r['kept_token_ratio']:.3f} | {r['flops_ratio']:.2f}x | {r['tokens_per_example']:.0f} |")
PY
