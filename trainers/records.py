"""The results record a run leaves next to a model (`eval_results.json`, or `eval_results_<task>_<split>.json` for a
later evaluation): what it holds, how it is written, how it reads to a person. Training, evaluation and the model
card all read and write it through here."""

import json
import math
from pathlib import Path

RESULTS_FILE = "eval_results.json"


def strip_prefix(metrics_dict: dict, prefix: str = "eval") -> dict:
    """`{"eval_accuracy": ...}` -> `{"accuracy": ...}`; Trainer's speed entries are dropped (they time the
    whole loop, collation included, and are not the benchmark)."""
    out = {}
    for key, value in metrics_dict.items():
        name = key[len(prefix) + 1:] if key.startswith(prefix + "_") else key
        if name in ("runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"):
            continue
        out[name] = value
    return out


def results_record(results: dict, model: str, task: str, split: str = "validation", **extra) -> dict:
    """What `eval_results.json` holds: where the numbers come from, then the numbers."""
    return {"model": str(model), "task": task, "split": split, **extra, **results}


def evaluation_file(task: str, split: str) -> str:
    """The file name of one evaluation stored next to a model (never the training record RESULTS_FILE)."""
    return f"eval_results_{task}_{split}.json"


def write_results(output_dir, record: dict, name: str = RESULTS_FILE) -> Path:
    """Writes `record` as JSON. A non-finite number (a QA model's evaluation loss is infinite once it skipped a
    reference answer's position) is written as null: `Infinity` and `NaN` are not JSON."""
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def format_results(record: dict, metric_names) -> str:
    """A short human summary: the task metrics, then kept-token and FLOPs ratios."""
    lines = [f"{record['task']} {record['split']} ({record.get('num_examples', '?')} examples), model {record['model']}"]
    for name in (*metric_names, "kept_token_ratio", "flops_ratio"):
        if name in record:
            lines.append(f"  {name:<22} {record[name]:.4f}")
    return "\n".join(lines)
