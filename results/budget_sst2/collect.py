"""Copies each run's `eval_results.json` (to `json/NAME.json`) and command (to `commands/NAME.cmd`) from the runs
folder of `run.sh` into this folder; `python results/tables.py budget_sst2` then prints the README's tables.

    python results/budget_sst2/collect.py RUNS_DIR dense-e1 dense-e2 tk-t0.5 ...
"""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def collect(root: Path, name: str):
    for source, folder, target in ((root / name / "eval_results.json", "json", f"{name}.json"),
                                   (root / f"{name}.cmd", "commands", f"{name}.cmd")):
        if source.is_file():
            (HERE / folder).mkdir(exist_ok=True)
            shutil.copy(source, HERE / folder / target)
            print(f"{source} -> {HERE / folder / target}")
        else:
            print(f"missing: {source}")


if __name__ == "__main__":
    for run in sys.argv[2:]:
        collect(Path(sys.argv[1]), run)
