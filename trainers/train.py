"""`tokenskim train`: fine-tune a checkpoint with any method of the recipe table (trainers/recipes.py) and write a
Hub-ready folder: safetensors weights, config, remote code, tokenizer, `eval_results.json` and a model card
(README.md) with the real results and the command that produced them.

    tokenskim train --method transkimmer --model PATH_OR_NAME --task sst2 --output-dir out/ \\
        [--skim-coefficient 0.5] [--learning-rate 2e-5 --num-train-epochs 3 ... any TrainingArguments flag]
    tokenskim train --method magic-pyramid --model PATH --task ag_news --output-dir out/ --stage-epochs 3,1,2,2
    tokenskim train --method sttabt --model PATH --task sst2 --output-dir out/ --max-train-samples 20000
    tokenskim train --method block-skim --model PATH --task squad --output-dir out/ [--doc-stride 128]

Every method runs the same way: data, evaluation split, stages, resume, Hub folder and model card. The task picks
the head: classification and regression tasks train a method's sequence-classification class, `--task squad` /
`squad_v2` its question-answering class (windowed contexts, SQuAD EM/F1; trainers/squad.py).
- The recipe's stages run in order, each from the model the stage before it saved. A one-stage recipe (dense,
  transkimmer, block-skim) trains in the output folder itself; in a recipe of several, stage N is saved, Hub-ready,
  in `output-dir/stage-N-<name>` and the final stage's files are copied to the output folder.
- `output-dir/schedule.json` lists every stage's evaluation. A stage whose folder holds `stage.json` is complete and
  skipped when the command runs again (delete that file to train it again); an interrupted stage resumes from its
  newest Trainer checkpoint, or from `--resume-from-checkpoint FOLDER`.
- Epochs and learning rate of a stage: `--stage-epochs` / `--stage-learning-rates` (one per stage, or one for all),
  else the stage's own (trainers/stages.py), else `--num-train-epochs` / `--learning-rate`.
- `--finetuned PATH` skips a recipe's first stage when it is a plain fine-tune and starts from PATH (for instance
  the dense baseline), so several methods can share one fine-tune.

Where we deviate from the Magic Pyramid paper: the exit heads start as copies of the fine-tuned final head
(`--exit-head-init classifier`, the default; `random` is FastBERT's), which gives them a useful start on
small training budgets.
"""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from . import data, metrics, modelcard, recipes, squad
from .errors import UsageError
from .evaluate import add_data_arguments, task_inputs, tokenizer_limit
from .records import format_results, results_record, strip_prefix
from .stages import prepare_stage
from .trainer import SkimTrainer, selector_of

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
DONE_FILE = "stage.json"
SUMMARY_FILE = "schedule.json"


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
    g.add_argument("--method", default="transkimmer", choices=list(recipes.RECIPES), metavar="METHOD",
                   help="; ".join(f"{name}: {r.description}" for name, r in recipes.RECIPES.items())
                   + ". Default: transkimmer")
    g.add_argument("--model", required=True, help="checkpoint folder or Hub name (any BERT/RoBERTa)")
    for name, (type_, help_) in recipes.HYPERPARAMETERS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type_,
                       help=f"{help_} (--method {', '.join(recipes.methods_taking(name))}; default: the checkpoint's)")
    g.add_argument("--selector-learning-rate", type=float,
                   help="learning rate of the token selector's parameters in the stages that train it "
                        "(default: the stage's own, else the selector's: LTP's log-relative thresholds 1e-2, "
                        "Transkimmer's predictors with a budget 1e-3; else --learning-rate)")
    g.add_argument("--skim-warmup-steps", type=int, default=0,
                   help="ramp the skim loss's weight from 0 to --skim-coefficient over this many steps (default 0)")
    g.add_argument("--distill-from", metavar="CHECKPOINT",
                   help="a dense teacher (e.g. the fine-tune the skimming model starts from): the stages that train "
                        "under skimming also learn its predictions")
    g.add_argument("--distill-alpha", type=float, default=0.5,
                   help="the distillation loss's share of the task loss, 0..1 (default 0.5)")
    g.add_argument("--distill-temperature", type=float, default=1.0,
                   help="softmax temperature of the distillation loss (default 1)")


def add_stage_arguments(parser):
    g = parser.add_argument_group("stages")
    g.add_argument("--stage-epochs", help="epochs per stage, comma-separated, or one for every stage (default: the "
                   "recipe's, e.g. the paper's 3,1,2,2 for magic-pyramid; one-stage recipes: --num-train-epochs)")
    g.add_argument("--stage-learning-rates", help="learning rate per stage, comma-separated (default: the recipe's, "
                   "else --learning-rate)")
    g.add_argument("--exit-head-init", choices=("classifier", "random"), default="classifier",
                   help="exit heads start as copies of the final head (default) or at random (FastBERT)")
    g.add_argument("--finetuned", help="an already fine-tuned checkpoint: skip the recipe's fine-tune stage and start from it")


def add_arguments(parser):
    add_method_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--max-train-samples", type=int, help="train on a seeded random subset of this many rows")
    parser.add_argument("--holdout-samples", type=int,
                        help="set this many seeded training rows aside, never trained on, for `tokenskim calibrate "
                             "--calibration-split holdout` (the same rows whatever --seed; before --max-train-samples)")
    squad.add_arguments(parser)
    add_stage_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(_parser=parser)  # run() rebuilds the command line for the model card from it


def resolve_resume(resume):
    """`--resume-from-checkpoint`: a checkpoint folder for the first stage that trains; "auto"/"true"/"last" (or
    nothing): an interrupted stage continues from its newest checkpoint."""
    if resume is None or str(resume).lower() in ("auto", "true", "last"):
        return None
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {resume}")
    return str(resume)


def method_hyperparameters(args) -> dict:
    """The method's config fields from the command line (None: not given)."""
    recipe = recipes.get_recipe(args.method)
    given = {name: getattr(args, name, None) for name in recipes.HYPERPARAMETERS}
    extra = [name for name, value in given.items() if value is not None and name not in recipe.hyperparameters]
    if extra:
        flags = ", ".join("--" + n.replace("_", "-") for n in extra)
        raise UsageError(f"{flags} do(es) not apply to --method {args.method}: drop it, or pick a method that takes it")
    return {name: given[name] for name in recipe.hyperparameters}


def check_stage_flags(method: str, finetuned, selector_learning_rate, distill_from=None, distill_alpha=0.5,
                      distill_temperature=1.0):
    """Flags that need a stage the recipe does not have."""
    stages = recipes.get_recipe(method).stages
    if distill_from and not any(s.distills for s in stages):
        raise UsageError(f"--method {method} never trains under skimming; drop --distill-from")
    if distill_from and not (0.0 <= distill_alpha <= 1.0 and distill_temperature > 0):
        raise UsageError(f"--distill-alpha takes 0..1 and --distill-temperature a positive number; got "
                         f"{distill_alpha} and {distill_temperature}")
    if finetuned and not (len(stages) > 1 and stages[0].name == "finetune"):
        raise UsageError(f"--finetuned skips a recipe's first fine-tune stage; --method {method} trains in one stage: "
                         "give the checkpoint as --model instead")
    if selector_learning_rate is not None and not any(s.tunes_selector for s in stages):
        raise UsageError(f"--method {method} trains no token selector; drop --selector-learning-rate")


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


def parse_list(text, n: int, convert=float, what="values"):
    """`"3,1,2,2"` -> `[3.0, 1.0, 2.0, 2.0]` (one per stage); a single value applies to every stage."""
    if text is None:
        return [None] * n
    values = [convert(v) for v in str(text).split(",") if v.strip()]
    if len(values) == 1:
        values *= n
    if len(values) != n:
        raise UsageError(f"give one of {what} per stage ({n} stages), or a single value; got {text!r}")
    return values


def stage_dir(output_dir, index: int, name: str, num_stages: int) -> Path:
    """Where stage `index` (from 1) is saved: the output folder in a one-stage recipe, else `stage-<index>-<name>`."""
    return Path(output_dir) if num_stages == 1 else Path(output_dir) / f"stage-{index}-{name}"


def is_complete(folder: Path) -> bool:
    return (Path(folder) / DONE_FILE).is_file()


def stage_training_args(training_args, folder, epochs, learning_rate) -> TrainingArguments:
    """The command's TrainingArguments with the stage's folder, epochs and learning rate (None: unchanged)."""
    changes = {"output_dir": str(folder)}
    if epochs is not None:
        changes["num_train_epochs"] = float(epochs)
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    return dataclasses.replace(training_args, **changes)


def train_stage(model, tokenizer, inputs: dict, training_args, *, num_examples: int, selector_learning_rate=None,
                skim_warmup_steps: int = 0, resume_from_checkpoint=None, distillation: dict | None = None):
    """Trains and evaluates a model set up for its stage; returns `(trainer, results)` with results keyed
    without `eval_`.

    inputs: the task's datasets, collator and metrics from `evaluate.task_inputs` (made with `tokenizer`);
    num_examples: the validation rows they come from (QA: questions, which the windowed features outnumber).
    distillation: `SkimTrainer`'s `teacher`, `distill_alpha`, `distill_temperature` (None: no teacher).
    """
    trainer = SkimTrainer(
        model=model,
        args=training_args,
        processing_class=tokenizer,
        **inputs,
        selector_learning_rate=selector_learning_rate,
        skim_warmup_steps=skim_warmup_steps,
        **(distillation or {}),
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    results = strip_prefix(trainer.evaluate())
    results["num_examples"] = num_examples
    return trainer, results


def train_recipe(
    method: str,
    model_name_or_path: str,
    raw,
    spec,
    training_args,
    *,
    hyperparameters: dict | None = None,
    stage_epochs=None,
    stage_learning_rates=None,
    selector_learning_rate: float | None = None,
    skim_warmup_steps: int = 0,
    exit_head_init: str = "classifier",
    finetuned: str | None = None,
    distill_from: str | None = None,
    distill_alpha: float = 0.5,
    distill_temperature: float = 1.0,
    resume_from_checkpoint: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    command: str = "",
    split: str = "validation",
    qa_options: squad.QAOptions | None = None,
) -> list:
    """Runs (or continues) the method's stages; returns one record per stage (its evaluation results).

    raw: DatasetDict with `train` and `validation` rows (the latter from split `split`); spec: its TaskSpec, whose
    head picks the method's class; training_args: the `TrainingArguments` every stage starts from (output_dir is
    the run's folder). hyperparameters: the method's config fields from the command line (None: unset).
    stage_epochs / stage_learning_rates: one value per stage or one for all (None: the stages' own).
    distill_from: a dense teacher checkpoint for the stages that train under skimming (`Stage.distills`), with
    `distill_alpha` and `distill_temperature` (`SkimTrainer`).
    qa_options: extractive QA's windows and post-processing (default `squad.QAOptions()`).
    """
    recipe = recipes.get_recipe(method)
    if spec.is_qa:
        qa_options = qa_options or squad.QAOptions()
    check_stage_flags(method, finetuned, selector_learning_rate, distill_from, distill_alpha, distill_temperature)
    start = finetuned or model_name_or_path
    values = recipes.starting_hyperparameters(method, hyperparameters or {}, start)
    n = len(recipe.stages)
    epochs = [e if e is not None else s.epochs for e, s in zip(parse_list(stage_epochs, n, what="epochs"), recipe.stages)]
    rates = [r if r is not None else s.learning_rate
             for r, s in zip(parse_list(stage_learning_rates, n, what="learning rates"), recipe.stages)]
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(start)  # save_hub_folder records max_length
    inputs = task_inputs(spec, raw, tokenizer, max_length, qa_options=qa_options)
    teacher = None
    if distill_from:  # the checkpoint run dense, in the stock class of the task's head
        teacher = recipes.load_model("dense", distill_from, head=spec.head, **task_config(spec))

    previous, records = model_name_or_path, []
    for index, stage in enumerate(recipe.stages, start=1):
        folder = stage_dir(output_dir, index, stage.name, n)
        if index == 1 and finetuned:
            previous = finetuned
            records.append({"stage": stage.name, "skipped": f"--finetuned {finetuned}"})
            continue
        if is_complete(folder):
            logger.warning("stage %d (%s) is complete in %s: skipped (delete its %s to train it again)",
                           index, stage.name, folder, DONE_FILE)
            records.append(json.loads((folder / DONE_FILE).read_text()))
            previous = str(folder)
            continue

        model = recipes.load_model(method, str(previous), values, head=spec.head, **task_config(spec))
        prepare_stage(model, stage, {"exit_head_init": exit_head_init})
        args = stage_training_args(training_args, folder, epochs[index - 1], rates[index - 1])
        # the flag, else the stage's, else what the selector asks for (LTP's log-relative thresholds: 1e-2)
        selector_lr = next((lr for lr in (selector_learning_rate, stage.selector_learning_rate,
                                          getattr(selector_of(model), "default_learning_rate", None))
                            if lr is not None), None)
        selector_lr = selector_lr if stage.tunes_selector else None
        resume = resume_from_checkpoint or (get_last_checkpoint(str(folder)) if folder.is_dir() else None)
        resume_from_checkpoint = None  # an explicit checkpoint belongs to the first stage that trains
        logger.info("stage %d/%d (%s): %s epochs from %s%s", index, n, stage.name, args.num_train_epochs, previous,
                    f", resuming {resume}" if resume else "")
        trainer, results = train_stage(
            model, tokenizer, inputs, args, num_examples=raw["validation"].num_rows, selector_learning_rate=selector_lr,
            skim_warmup_steps=skim_warmup_steps if stage.tunes_selector else 0, resume_from_checkpoint=resume,
            distillation=dict(teacher=teacher, distill_alpha=distill_alpha, distill_temperature=distill_temperature)
            if teacher is not None and stage.distills else None,
        )
        save_hub_folder(
            trainer, results, spec, method=method, base_model=model_name_or_path, command=command,
            max_length=max_length, train_rows=raw["train"].num_rows, split=split,
            doc_stride=qa_options.doc_stride if spec.is_qa else None,
            extra_training={
                **({"stage": f"{index}/{n} {stage.name}"} if n > 1 else {}),
                **{name: getattr(model.config, name, None) for name in recipe.hyperparameters},
                "selector learning rate": selector_lr,
                "skim warm-up steps": (skim_warmup_steps or None) if stage.tunes_selector else None,
                **({"distilled from": distill_from, "distill alpha": distill_alpha,
                    "distill temperature": distill_temperature} if teacher is not None and stage.distills else {}),
            },
        )
        record = {"stage": stage.name, "index": index, "epochs": args.num_train_epochs, "from": str(previous),
                  "split": split, **results}
        if trainer.is_world_process_zero():
            (folder / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        records.append(record)
        previous = str(folder)

    if training_args.process_index == 0:
        if Path(previous) != output_dir:  # the final stage's files (not its Trainer checkpoints) into the output folder
            for item in Path(previous).iterdir():
                if item.is_file() and item.name != DONE_FILE:
                    shutil.copy2(item, output_dir / item.name)
        (output_dir / SUMMARY_FILE).write_text(json.dumps({"method": method, "stages": records}, indent=2) + "\n")
    return records


def record_lengths(tokenizer, config, max_length: int):
    """The saved tokenizer keeps the model's real limit (so `pipeline(...)` neither warns about 127 > 64 nor
    cuts inputs at the training length); the length the model was fine-tuned with goes into the config, where
    `evaluate` and `predict` take it as their default."""
    tokenizer.model_max_length = tokenizer_limit(tokenizer, config)
    config.training_max_length = max_length


def save_hub_folder(trainer, results: dict, spec, *, method, base_model, command, max_length, train_rows,
                    extra_training=None, split="validation", doc_stride=None):
    """Writes weights, remote code, tokenizer, eval_results.json and README.md to the output folder.

    split: the name of the split `results` come from. doc_stride: extractive QA's window overlap, recorded as
    `config.training_doc_stride` (evaluate's default).

    What only the command line knows goes to `trainer.card_context`, so `trainer.save_model` here and a later
    `trainer.push_to_hub()` write the same card. Call on every process (saving is collective under some
    launchers); files come from the main one, which gets the results record back."""
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
    record = results_record(results, output_dir, spec.name, split, method=method, max_length=max_length, **stride)
    trainer.card_context = dict(
        method=method,
        base_model=str(base_model),
        task=spec.name,
        task_description=squad.task_description(spec) if spec.is_qa
        else ("regression" if spec.is_regression else f"{spec.num_labels}-way classification")
        + f" on {' + '.join(spec.text_columns)}",
        head=spec.head,
        split=split,
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
    head = data.get_task(args.task).head if args.task else data.SEQUENCE_CLASSIFICATION
    recipes.model_classes(args.method, head)  # a method without the task's head fails here, before any data is read
    training_args = training_arguments(args)
    hyperparameters = method_hyperparameters(args)
    raw, spec = data.load_task(
        task=args.task, data_dir=args.data_dir, train_file=args.train_file, validation_file=args.validation_file,
        dataset_name=args.dataset_name, dataset_config=args.dataset_config, validation_split=args.validation_split,
        text_columns=args.text_columns, label_column=args.label_column, problem_type=args.problem_type,
        article_split=args.article_split,
    )
    raw["train"], _ = data.hold_out(raw["train"], args.holdout_samples)
    raw["train"] = data.subsample(raw["train"], args.max_train_samples, training_args.seed)
    raw["validation"] = data.subsample(raw["validation"], args.max_eval_samples, training_args.seed)
    records = train_recipe(
        args.method, args.model, raw, spec, training_args,
        hyperparameters=hyperparameters, stage_epochs=args.stage_epochs, stage_learning_rates=args.stage_learning_rates,
        selector_learning_rate=args.selector_learning_rate, skim_warmup_steps=args.skim_warmup_steps,
        exit_head_init=args.exit_head_init, finetuned=args.finetuned, distill_from=args.distill_from,
        distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
        resume_from_checkpoint=resolve_resume(training_args.resume_from_checkpoint),
        max_length=args.max_length or (squad.DEFAULT_MAX_LENGTH if spec.is_qa else DEFAULT_MAX_LENGTH),
        command=modelcard.command_line("tokenskim train", args._parser, args),
        split=args.validation_split if args.dataset_name else "validation",
        qa_options=squad.options_from_args(args) if spec.is_qa else None,
    )
    if training_args.process_index == 0:
        names = metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)
        if len(records) > 1:
            for record in records:
                shown = {k: record[k] for k in (*names, "kept_token_ratio", "flops_ratio", "mean_exit_layer") if k in record}
                print(f"{record['stage']:<13} " + (record.get("skipped") or "  ".join(f"{k} {v:.4f}" for k, v in shown.items())))
        final = results_record(records[-1], training_args.output_dir, spec.name, method=args.method)
        print(format_results(final, names))
        print(f"saved to {training_args.output_dir}")
    return 0
