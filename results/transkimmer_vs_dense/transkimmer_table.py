"""Markdown rows from the Transkimmer run folders: task metric(s), kept-token ratio, FLOPs ratio, and below the
table the command of each row (from `NAME.cmd`, written by transkimmer_runs.sh and transkimmer_sst2_sweep.sh).

    python results/transkimmer_vs_dense/transkimmer_table.py /tmp/transkimmer sst2-dense sst2-tk-c0.5 ...
"""

import json
import sys
from pathlib import Path

from tokenskim.trainers.metrics import metric_names

root = Path(sys.argv[1])
commands = []
print("| run | task | method | metric | kept-token ratio | FLOPs ratio | eval rows |")
print("|---|---|---|---|---|---|---|")
for name in sys.argv[2:]:
    r = json.loads((root / name / "eval_results.json").read_text())
    metric = ", ".join(f"{n} {100 * r[n]:.2f}" for n in metric_names(r["task"]))
    print(f"| {name} | {r['task']} | {r['method']} | {metric} | {r['kept_token_ratio']:.3f} | {r['flops_ratio']:.2f}x | {r['num_examples']} |")
    cmd = root / f"{name}.cmd"
    if cmd.is_file():
        commands.append(f"- `{name}`: `{cmd.read_text().strip()}`")
print()
print("\n".join(commands))
