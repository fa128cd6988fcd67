"""Multi-stage training schedules: the stages of LTP, FastBERT-style early exit and Magic Pyramid in one
command, each stage's model saved in its own folder, and a rerun continuing where the last one stopped.

    tokenskim train --method magic-pyramid --model PATH --task ag_news --output-dir out/ \\
        --stage-epochs 3,1,2,2 [--final-threshold 0.02 --skim-coefficient 0.1 --selector-learning-rate 1e-3]

Stages (the Magic Pyramid paper's Appendix C and Table 4; LTP's two-stage pruning; FastBERT's two steps):

| stage | trains | config during the stage |
|---|---|---|
| finetune | backbone + final classifier | pruning off, exits off |
| soft-pruning | backbone + classifier + thresholds (own learning rate: `--selector-learning-rate`) | `pruning_stage="soft"` |
| hard-pruning | backbone + classifier, thresholds frozen | `pruning_stage="hard"` |
| exit-heads | exit heads only (self-distillation from the final classifier), pruning active | exits on |

| method | stages |
|---|---|
| ltp | finetune, soft-pruning, hard-pruning |
| early-exit | finetune, exit-heads |
| magic-pyramid | finetune, soft-pruning, hard-pruning, exit-heads |

Stage N is saved, Hub-ready (weights, remote code, tokenizer, `eval_results.json`, model card), in
`output-dir/stage-N-<name>`; the final stage's files are also copied to `output-dir`, and
`output-dir/schedule.json` lists every stage's evaluation. A stage whose folder holds `stage.json` is
complete and skipped on a rerun; an interrupted stage resumes from its newest Trainer checkpoint.
`--finetuned PATH` skips the fine-tune stage and starts from an existing fine-tuned checkpoint (for
instance the dense baseline), so several methods can share one fine-tune.

Where we deviate from the paper: the exit heads start as copies of the fine-tuned final head
(`--exit-head-init classifier`, the default; `random` is FastBERT's), which gives them a useful start on
small training budgets.
"""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint

from . import data, metrics, methods
from .evaluate import strip_prefix
from .trainer import SkimTrainer

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage: config fields set before it (those the model's config has), whether only
    the exit heads train, whether the pruning thresholds train, and the paper's epochs (AG News/Yelp)."""

    config: dict
    exit_heads_only: bool = False
    thresholds_train: bool = False
    default_epochs: float = 1.0


STAGES = {
    "finetune": Stage({"skim_enabled": False, "exit_enabled": False}, default_epochs=3),
    "soft-pruning": Stage({"skim_enabled": True, "pruning_stage": "soft", "exit_enabled": False},
                          thresholds_train=True, default_epochs=1),
    "hard-pruning": Stage({"skim_enabled": True, "pruning_stage": "hard", "exit_enabled": False}, default_epochs=2),
    # skim_enabled switches exits too, and the finetune stage turned it off
    "exit-heads": Stage({"skim_enabled": True, "exit_enabled": True}, exit_heads_only=True, default_epochs=2),
}

SCHEDULES = {
    "ltp": ("finetune", "soft-pruning", "hard-pruning"),
    "early-exit": ("finetune", "exit-heads"),
    "magic-pyramid": ("finetune", "soft-pruning", "hard-pruning", "exit-heads"),
}

DONE_FILE = "stage.json"
SUMMARY_FILE = "schedule.json"


def stage_dir(output_dir, index: int, name: str) -> Path:
    """`output_dir/stage-<index>-<name>` (index from 1)."""
    return Path(output_dir) / f"stage-{index}-{name}"


def is_complete(folder: Path) -> bool:
    return (Path(folder) / DONE_FILE).is_file()


def parse_list(text, n: int, convert=float, what="values"):
    """`"3,1,2,2"` -> `[3.0, 1.0, 2.0, 2.0]` (one per stage); a single value applies to every stage."""
    if text is None:
        return [None] * n
    values = [convert(v) for v in str(text).split(",") if v.strip()]
    if len(values) == 1:
        values *= n
    if len(values) != n:
        raise ValueError(f"give one of {what} per stage ({n} stages), or a single value; got {text!r}")
    return values


def prepare_stage(model, name: str, exit_head_init: str = "classifier"):
    """Sets the stage's config fields and which parameters train. Returns the model."""
    stage = STAGES[name]
    for field, value in stage.config.items():
        if hasattr(model.config, field):
            setattr(model.config, field, value)
    for p in model.parameters():
        p.requires_grad = True
    if stage.exit_heads_only:
        if exit_head_init == "classifier":
            model.init_exit_heads_from_classifier()
        model.freeze_for_exit_training()
    elif hasattr(model, "exit_heads"):
        for p in model.exit_heads.parameters():  # unused before their stage: keep them out of the optimizer
            p.requires_grad = False
    if not stage.thresholds_train:
        for module in model.modules():
            if hasattr(module, "threshold_offsets"):
                module.threshold_offsets.requires_grad = False
    return model


def _stage_training_args(training_args, folder, epochs, learning_rate):
    changes = {"output_dir": str(folder)}
    if epochs is not None:
        changes["num_train_epochs"] = float(epochs)
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    return dataclasses.replace(training_args, **changes)


def _copy_final(folder: Path, output_dir: Path):
    """The final stage's files (not its Trainer checkpoints) into the output folder."""
    for item in Path(folder).iterdir():
        if item.is_file() and item.name != DONE_FILE:
            shutil.copy2(item, output_dir / item.name)


def run_schedule(
    method: str,
    model_name_or_path: str,
    raw,
    spec,
    training_args,
    *,
    hyperparameters: dict | None = None,
    stage_epochs=None,
    stage_learning_rates=None,
    threshold_learning_rate: float | None = None,
    max_length: int = 128,
    exit_head_init: str = "classifier",
    finetuned: str | None = None,
    command: str = "",
    skim_warmup_steps: int = 0,
) -> list:
    """Runs (or continues) the method's stages; returns one record per stage (its evaluation results).

    raw: DatasetDict with `train` and `validation` rows; spec: its TaskSpec; training_args: the
    `TrainingArguments` every stage starts from (output_dir is the schedule's folder).
    stage_epochs / stage_learning_rates: one value per stage (None: the paper's epochs / the common rate).
    threshold_learning_rate: learning rate of LTP's thresholds in the soft-pruning stage.
    skim_warmup_steps: warm-up of the pruning loss's weight in the soft-pruning stage (see `SkimTrainer`).
    finetuned: an existing fine-tuned checkpoint; the fine-tune stage is skipped.
    """
    from .train import save_hub_folder, task_config  # train imports this module for its --method hook

    if method not in SCHEDULES:
        raise ValueError(f"no schedule for method {method!r}; schedules: {', '.join(SCHEDULES)}")
    names = SCHEDULES[method]
    epochs = [e if e is not None else STAGES[n].default_epochs for e, n in zip(parse_list(stage_epochs, len(names)), names)]
    rates = parse_list(stage_learning_rates, len(names), what="learning rates")
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(finetuned or model_name_or_path)  # save_hub_folder records max_length
    tokenized = data.tokenize(raw, tokenizer, spec, max_length)
    compute_metrics = metrics.build_compute_metrics(spec.name, spec.is_regression, spec.num_labels)

    previous, records = model_name_or_path, []
    for index, name in enumerate(names, start=1):
        folder = stage_dir(output_dir, index, name)
        if name == "finetune" and finetuned:
            previous = finetuned
            records.append({"stage": name, "skipped": f"--finetuned {finetuned}"})
            continue
        if is_complete(folder):
            logger.info("stage %d (%s) is complete in %s: skipped", index, name, folder)
            records.append(json.loads((folder / DONE_FILE).read_text()))
            previous = str(folder)
            continue

        model = methods.load_model(method, str(previous), hyperparameters, **task_config(spec))
        prepare_stage(model, name, exit_head_init)
        args = _stage_training_args(training_args, folder, epochs[index - 1], rates[index - 1])
        trainer = SkimTrainer(
            model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
            processing_class=tokenizer, data_collator=data.collator(tokenizer), compute_metrics=compute_metrics,
            selector_learning_rate=threshold_learning_rate if STAGES[name].thresholds_train else None,
            skim_warmup_steps=skim_warmup_steps if STAGES[name].thresholds_train else 0,
        )
        resume = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        logger.info("stage %d (%s): %s epochs from %s%s", index, name, epochs[index - 1], previous,
                    f", resuming {resume}" if resume else "")
        trainer.train(resume_from_checkpoint=resume)
        results = strip_prefix(trainer.evaluate())
        results["num_examples"] = tokenized["validation"].num_rows
        save_hub_folder(
            trainer, results, spec, method=method, base_model=model_name_or_path, command=command,
            max_length=max_length, train_rows=raw["train"].num_rows,
            extra_training={"stage": f"{index}/{len(names)} {name}", "threshold learning rate": threshold_learning_rate
                            if STAGES[name].thresholds_train else None},
        )
        record = {"stage": name, "index": index, "epochs": epochs[index - 1], "from": str(previous), **results}
        if trainer.is_world_process_zero():
            (folder / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        records.append(record)
        previous = str(folder)

    if training_args.process_index == 0:
        _copy_final(Path(previous), output_dir)
        (output_dir / SUMMARY_FILE).write_text(json.dumps({"method": method, "stages": records}, indent=2) + "\n")
    return records


def add_schedule_arguments(parser):
    """Flags of the multi-stage methods (ltp, early-exit, magic-pyramid)."""
    g = parser.add_argument_group("stages (ltp, early-exit, magic-pyramid)")
    g.add_argument("--stage-epochs", help="epochs per stage, comma-separated (default: the paper's 3,1,2,2 for "
                   "finetune, soft-pruning, hard-pruning, exit-heads; --num-train-epochs is not used)")
    g.add_argument("--stage-learning-rates", help="learning rate per stage, comma-separated (default: --learning-rate)")
    g.add_argument("--exit-head-init", choices=("classifier", "random"), default="classifier",
                   help="exit heads start as copies of the final head (default) or at random (FastBERT)")
    g.add_argument("--finetuned", help="an already fine-tuned checkpoint: skip the fine-tune stage and start from it")
    return g


def _command(args) -> str:
    """The command line for the model cards (train.py's parser is attached to args as `_parser`)."""
    from .modelcard import command_line

    parser = getattr(args, "_parser", None)
    return command_line("tokenskim train", parser, args) if parser is not None else f"tokenskim train --method {args.method}"


def run(args):
    """`tokenskim train --method ltp|early-exit|magic-pyramid ...` (called by `train.run`)."""
    from .train import DEFAULT_MAX_LENGTH, method_hyperparameters, training_arguments

    training_args = training_arguments(args)
    raw, spec = data.load_task(
        task=args.task, data_dir=args.data_dir, train_file=args.train_file, validation_file=args.validation_file,
        dataset_name=args.dataset_name, dataset_config=args.dataset_config, text_columns=args.text_columns,
        label_column=args.label_column, problem_type=args.problem_type,
    )
    raw["train"] = data.subsample(raw["train"], args.max_train_samples, training_args.seed)
    raw["validation"] = data.subsample(raw["validation"], args.max_eval_samples, training_args.seed)
    records = run_schedule(
        args.method, args.model, raw, spec, training_args,
        hyperparameters=method_hyperparameters(args), stage_epochs=args.stage_epochs,
        stage_learning_rates=args.stage_learning_rates, threshold_learning_rate=args.selector_learning_rate,
        max_length=args.max_length or DEFAULT_MAX_LENGTH, exit_head_init=args.exit_head_init,
        finetuned=args.finetuned, command=_command(args), skim_warmup_steps=args.skim_warmup_steps,
    )
    names = metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)
    for record in records:
        shown = {k: record[k] for k in (*names, "kept_token_ratio", "flops_ratio", "mean_exit_layer") if k in record}
        print(f"{record['stage']:<13} " + (record.get("skipped") or "  ".join(f"{k} {v:.4f}" for k, v in shown.items())))
    print(f"saved to {training_args.output_dir}")
    return 0
