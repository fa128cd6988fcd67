"""The README table of this experiment from its run folders (or from the copies in this folder's json/):
accuracy and its change against the dense run trained as long, kept-token ratio, FLOPs ratio, and the keep
rate of every layer, so a collapsed row shows at a glance. Also copies each run's eval_results.json here.

    python results/budget_sst2/table.py RUNS_DIR dense-e2 tk-t0.6 tk-t0.5 ... [--baseline dense-e2]
"""

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(root: Path, name: str) -> dict:
    path = root / name / "eval_results.json"
    if path.is_file():
        (HERE / "json").mkdir(exist_ok=True)
        shutil.copy(path, HERE / "json" / f"{name}.json")
    else:
        path = HERE / "json" / f"{name}.json"
    return json.loads(path.read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--baseline", default="dense-e2")
    args = parser.parse_args()
    base = load(args.root, args.baseline)
    print("| run | target kept | accuracy | change | kept-token ratio | FLOPs ratio | keep rate per layer |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names:
        r = load(args.root, name)
        layers = sorted((k for k in r if k.startswith("keep_rate_layer_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        rates = " ".join(f"{r[k]:.2f}" for k in layers) or "-"
        target = name.rsplit("-t", 1)[1] if "-t" in name else "-"
        change = 100 * (r["accuracy"] - base["accuracy"])
        print(f"| {name} | {target} | {100 * r['accuracy']:.2f} | {change:+.2f} | {r['kept_token_ratio']:.3f} "
              f"| {r['flops_ratio']:.2f}x | {rates} |")
    print()
    for name in args.names:
        cmd = args.root / f"{name}.cmd"
        if cmd.is_file():
            (HERE / "commands").mkdir(exist_ok=True)
            shutil.copy(cmd, HERE / "commands" / f"{name}.cmd")
        saved = HERE / "commands" / f"{name}.cmd"
        if saved.is_file():
            print(f"- `{name}`: `{saved.read_text().strip()}`")


if __name__ == "__main__":
    main()
