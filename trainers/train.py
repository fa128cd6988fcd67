"""`tokenskim train`: fine-tune a checkpoint with a token-skimming method (or the dense baseline) and
write a Hub-ready folder: safetensors weights, config, remote code, tokenizer, `eval_results.json` and a
model card (README.md) with the real results and the command that produced them.

    tokenskim train --method transkimmer --model PATH_OR_NAME --task sst2 --output-dir out/ \\
        [--skim-coefficient 0.5] [--learning-rate 2e-5 --num-train-epochs 3 ... any TrainingArguments flag]
    tokenskim train --method block-skim --model PATH --task squad --output-dir out/ [--doc-stride 128]

Interrupted runs continue with `--resume-from-checkpoint auto` (or a checkpoint folder).
"""

import dataclasses
import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from . import data, metrics, methods, modelcard, squad
from .errors import UsageError
from .evaluate import add_data_arguments, format_results, results_record, strip_prefix, task_inputs, tokenizer_limit
from .trainer import SkimTrainer

logger = logging.getLogger(__name__)

# Our defaults where they differ from TrainingArguments' (those of the Transkimmer reference scripts for GLUE).
TRAINING_DEFAULTS = {
    "learning_rate": 2e-5,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 3.0,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 50,
    "report_to": "none",
    "dataloader_pin_memory": torch.cuda.is_available(),  # pinning only helps (and only works) with a GPU
}
DEFAULT_MAX_LENGTH = 128


# The command line's parser is a `transformers.HfArgumentParser` of these (cli.py): every TrainingArguments field
# is a flag (`--learning-rate` or `--learning_rate`), and a YAML/JSON config file can set any of them.
DATACLASSES = (TrainingArguments,)


def add_training_arguments(parser):
    """Our defaults for the TrainingArguments flags that `HfArgumentParser(DATACLASSES)` added to `parser`."""
    parser.set_defaults(**TRAINING_DEFAULTS)


def training_arguments(args) -> TrainingArguments:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init and hasattr(args, f.name)}
    if not values.get("output_dir"):
        raise UsageError("no output folder: give --output-dir DIR (where the model, its card and results are written)")
    return TrainingArguments(**values)


def add_method_arguments(parser):
    g = parser.add_argument_group("method")
    g.add_argument("--method", default="transkimmer", choices=list(methods.METHODS),
                   help="transkimmer (default) or dense (the stock transformers baseline)")
    g.add_argument("--model", required=True, help="checkpoint folder or Hub name (any BERT/RoBERTa)")
    for name, (type_, help_) in methods.HYPERPARAMETERS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type_, help=help_ + " (default: the checkpoint's)")
    g.add_argument("--selector-learning-rate", type=float,
                   help="learning rate of the token selector's parameters (default: --learning-rate)")
    g.add_argument("--skim-warmup-steps", type=int, default=0,
                   help="ramp the skim loss's weight from 0 to --skim-coefficient over this many steps (default 0)")


def add_arguments(parser):
    add_method_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--max-train-samples", type=int, help="train on a seeded random subset of this many rows")
    squad.add_arguments(parser)
    from .schedules import add_schedule_arguments  # flags of the multi-stage methods

    add_schedule_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(_parser=parser)  # run() rebuilds the command line for the model card from it


def resolve_resume(resume, output_dir):
    """`--resume-from-checkpoint`: a folder, or "auto"/"true"/"last" for the newest checkpoint in output_dir
    (a fresh start when there is none). Without it, existing checkpoints are reported, not silently lost."""
    if resume is None:
        if Path(output_dir).is_dir() and get_last_checkpoint(output_dir):
            logger.warning("%s has checkpoints; this run starts over. Pass --resume-from-checkpoint auto to continue.", output_dir)
        return None
    if str(resume).lower() in ("auto", "true", "last"):
        return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {resume}")
    return resume


def method_hyperparameters(args) -> dict:
    method = methods.get_method(args.method)
    given = {name: getattr(args, name, None) for name in methods.HYPERPARAMETERS}
    extra = [name for name, value in given.items() if value is not None and name not in method.hyperparameters]
    if extra:
        flags = ", ".join("--" + n.replace("_", "-") for n in extra)
        raise UsageError(f"{flags} do(es) not apply to --method {args.method}: drop it, or pick a method that takes it")
    return {name: given[name] for name in method.hyperparameters}


def task_config(spec) -> dict:
    """Config fields that make a checkpoint fit the task."""
    if spec.is_qa:
        return {"num_labels": spec.num_labels}
    if spec.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    id2label = spec.id2label
    return {
        "num_labels": spec.num_labels,
        "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()},
        "problem_type": "single_label_classification",
    }


def fine_tune(
    method: str,
    model_name_or_path: str,
    raw,
    spec,
    training_args: TrainingArguments,
    hyperparameters: dict | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    selector_learning_rate: float | None = None,
    resume_from_checkpoint=None,
    skim_warmup_steps: int = 0,
    qa_options=None,
):
    """Fine-tunes and evaluates; returns `(trainer, results)` with results keyed without `eval_`.

    raw: DatasetDict of raw rows with `train` and `validation`; spec: its TaskSpec. Inputs are truncated to
    `max_length` tokens (QA: windows of `max_length` with `qa_options`, a `squad.QAOptions`); `save_hub_folder`
    records it as `config.training_max_length`.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    model = methods.load_model(method, model_name_or_path, hyperparameters, spec.head, **task_config(spec))
    trainer = SkimTrainer(
        model=model,
        args=training_args,
        processing_class=tokenizer,
        **task_inputs(spec, raw, tokenizer, max_length, qa_options=qa_options),
        selector_learning_rate=selector_learning_rate,
        skim_warmup_steps=skim_warmup_steps,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    results = strip_prefix(trainer.evaluate())
    results["num_examples"] = raw["validation"].num_rows
    return trainer, results


def record_lengths(tokenizer, config, max_length: int):
    """The saved tokenizer keeps the model's real limit (so `pipeline(...)` neither warns about 127 > 64 nor
    cuts inputs at the training length); the length the model was fine-tuned with goes into the config, where
    `evaluate` and `predict` take it as their default."""
    tokenizer.model_max_length = tokenizer_limit(tokenizer, config)
    config.training_max_length = max_length


def save_hub_folder(trainer, results: dict, spec, *, method, base_model, command, max_length, train_rows, extra_training=None,
                    doc_stride=None):
    """Writes weights, remote code, tokenizer, eval_results.json and README.md to the output folder.

    What only the command line knows goes to `trainer.card_context`, so `trainer.save_model` here and a later
    `trainer.push_to_hub()` write the same card. Call on every process (saving is collective under some
    launchers); files come from the main one, which gets the results record back. doc_stride: QA's window overlap,
    recorded as `config.training_doc_stride` (evaluate's default)."""
    output_dir = trainer.args.output_dir
    record_lengths(trainer.processing_class, trainer.model.config, max_length)
    stride = {"doc_stride": doc_stride} if doc_stride else {}
    if doc_stride:  # QA: evaluate windows the contexts as in training
        trainer.model.config.training_doc_stride = doc_stride
    trainer.model.config.finetuning_task = spec.name
    args = trainer.args
    training = {
        "method": method,
        "learning_rate": args.learning_rate,
        "epochs": args.num_train_epochs if args.max_steps <= 0 else f"{args.max_steps} steps",
        "batch size (global)": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "max length": max_length,
        **{k.replace("_", " "): v for k, v in stride.items()},
        "seed": args.seed,
        **{k: v for k, v in (extra_training or {}).items() if v is not None},
    }
    record = results_record(results, output_dir, spec.name, method=method, max_length=max_length, **stride)
    trainer.card_context = dict(
        method=method,
        base_model=str(base_model),
        task=spec.name,
        task_description=squad.task_description(spec) if spec.is_qa
        else ("regression" if spec.is_regression else f"{spec.num_labels}-way classification")
        + f" on {' + '.join(spec.text_columns)}",
        head=spec.head,
        split="validation",
        metrics=record,
        metric_names=metrics.metric_names(spec.name, spec.is_regression, spec.num_labels),
        command=command,
        training=training,
        train_description=f"{train_rows} {'questions' if spec.is_qa else 'rows'}",
        max_length=max_length,
    )
    trainer.save_model(output_dir)  # SkimTrainer.save_model: weights, tokenizer, eval_results.json, README.md
    return record if trainer.is_world_process_zero() else None


def run(args):
    from . import schedules  # ltp, early-exit and magic-pyramid train in stages

    head = data.get_task(args.task).head if args.task else data.SEQUENCE_CLASSIFICATION
    methods.model_class_of(args.method, head)  # a method without the task's head fails here, before any data is read
    if args.method in schedules.SCHEDULES:
        return schedules.run(args)
    training_args = training_arguments(args)
    hyperparameters = method_hyperparameters(args)
    raw, spec = data.load_task(
        task=args.task, data_dir=args.data_dir, train_file=args.train_file, validation_file=args.validation_file,
        dataset_name=args.dataset_name, dataset_config=args.dataset_config, validation_split=args.validation_split,
        text_columns=args.text_columns, label_column=args.label_column, problem_type=args.problem_type,
        article_split=args.article_split,
    )
    raw["train"] = data.subsample(raw["train"], args.max_train_samples, training_args.seed)
    raw["validation"] = data.subsample(raw["validation"], args.max_eval_samples, training_args.seed)
    max_length = args.max_length or (squad.DEFAULT_MAX_LENGTH if spec.is_qa else DEFAULT_MAX_LENGTH)
    qa_options = squad.options_from_args(args) if spec.is_qa else None
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer, results = fine_tune(
        args.method, args.model, raw, spec, training_args, hyperparameters, max_length,
        args.selector_learning_rate, resume, args.skim_warmup_steps, qa_options,
    )
    record = save_hub_folder(
        trainer, results, spec, method=args.method, base_model=args.model,
        command=modelcard.command_line("tokenskim train", args._parser, args), max_length=max_length,
        train_rows=raw["train"].num_rows, doc_stride=qa_options.doc_stride if qa_options else None,
        extra_training={
            **{name: getattr(trainer.model.config, name, None) for name in hyperparameters},
            "selector learning rate": args.selector_learning_rate,
            "skim warm-up steps": args.skim_warmup_steps or None,
        },
    )
    if record is not None:
        print(format_results(record, metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)))
        print(f"saved to {training_args.output_dir}")
    return 0
