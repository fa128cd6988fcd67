"""Copies each run's `eval_results.json` (to `json/NAME.json`) and command (to `commands/NAME.cmd`) from the runs
folder of `run.sh` into this folder (or `--into FOLDER`: results/sst2_full); `python results/tables.py budget_sst2`
then prints the README's tables.

    python results/budget_sst2/collect.py RUNS_DIR dense-e1 dense-e2 tk-t0.5 ...
    python results/budget_sst2/collect.py RUNS_DIR dense-e1 densec-e2 tkd-t0.45 ... --into results/sst2_full
"""

import argparse
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def collect(root: Path, name: str, into: Path = HERE):
    for source, folder, target in ((root / name / "eval_results.json", "json", f"{name}.json"),
                                   (root / f"{name}.cmd", "commands", f"{name}.cmd")):
        if source.is_file():
            (into / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, into / folder / target)
            print(f"{source} -> {into / folder / target}")
        else:
            print(f"missing: {source}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--into", type=Path, default=HERE)
    args = parser.parse_args()
    for run in args.names:
        collect(args.runs_dir, run, args.into)
