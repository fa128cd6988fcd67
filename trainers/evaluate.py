"""`tokenskim evaluate`: the task metric, kept-token ratio and FLOPs ratio of a checkpoint on a task's
validation split, printed and written to a JSON file.

    tokenskim evaluate --model DIR --task sst2 [--data-dir DIR] [--batch-size 32] [--output-dir OUT]
    tokenskim evaluate --model QA_DIR --task squad [--validation-file dev-v1.1.json [--article-split 0.2]]

Extractive QA checkpoints (`--task squad` / `squad_v2`) report the official SQuAD EM/F1 over text answers.

`DIR/eval_results.json` is the training record the model card was written from, so an evaluation never
replaces it: next to the model it goes to `eval_results_<task>_<split>.json`; with `--output-dir` (another
folder) to `OUT/eval_results.json`.
"""

import argparse
import logging
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from . import data, metrics, squad
from .errors import UsageError
from .records import RESULTS_FILE, evaluation_file, format_results, results_record, strip_prefix, write_results
from .trainer import SkimTrainer

logger = logging.getLogger(__name__)

AUTO_CLASSES = {data.SEQUENCE_CLASSIFICATION: AutoModelForSequenceClassification,
                data.QUESTION_ANSWERING: AutoModelForQuestionAnswering}


def add_data_arguments(parser):
    """Flags that choose the data; shared by train, evaluate (and bench)."""
    g = parser.add_argument_group("data")
    g.add_argument("--task", help=f"a known task: {', '.join(data.TASKS)}; or give your own files")
    g.add_argument("--data-dir", help="folder with the layout of ../shared/data (default: $TOKENSKIM_DATA_DIR, "
                   "else ../shared/data next to the repository)")
    g.add_argument("--train-file", help="your training data: .csv, .tsv (read without quoting), .json or .jsonl")
    g.add_argument("--validation-file", help="your validation data, same formats")
    g.add_argument("--dataset-name", help="a Hub dataset name (online), e.g. nyu-mll/glue")
    g.add_argument("--dataset-config", help="the Hub dataset's configuration, e.g. sst2")
    g.add_argument("--validation-split", default="validation", help="the Hub dataset's evaluation split (default validation)")
    g.add_argument("--text-columns", type=lambda s: tuple(c for c in s.split(",") if c), metavar="COL[,COL2]",
                   help="text column, or a pair for sentence-pair tasks (default: the task's, else 'text')")
    g.add_argument("--text-column", dest="text_columns", type=lambda s: (s,), help=argparse.SUPPRESS)
    g.add_argument("--label-column", help="label column (default: the task's, else 'label')")
    g.add_argument("--problem-type", choices=["classification", "regression"],
                   help="for your own data: default is regression when labels are non-integer numbers")
    g.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default 128 for training; "
                   "evaluation uses the checkpoint tokenizer's model_max_length)")
    g.add_argument("--max-eval-samples", type=int, help="evaluate on a seeded random subset of this many rows")
    return g


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="a fine-tuned checkpoint folder or Hub name")
    add_data_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="evaluation batch size (default 32)")
    parser.add_argument("--output-dir", help=f"write OUT/{RESULTS_FILE} (default: eval_results_<task>_<split>.json "
                        f"in the model folder when local, else in the working directory; the model's own {RESULTS_FILE}, "
                        "its training record, is never replaced)")
    parser.add_argument("--seed", type=int, default=42, help="seed of --max-eval-samples' subset")
    squad.add_arguments(parser)


def load_eval_data(args, label2id=None):
    """`(validation Dataset of raw rows, TaskSpec)` from the data flags."""
    raw, spec = data.load_task(
        task=args.task, data_dir=args.data_dir, train_file=None, validation_file=args.validation_file,
        dataset_name=args.dataset_name, dataset_config=args.dataset_config, validation_split=args.validation_split,
        text_columns=args.text_columns, label_column=args.label_column, problem_type=args.problem_type,
        splits=("validation",), article_split=getattr(args, "article_split", None),
    )
    return data.subsample(raw["validation"], args.max_eval_samples, getattr(args, "seed", 42)), spec


def load_classifier(name_or_path, dtype=None, head=data.SEQUENCE_CLASSIFICATION):
    """`(model, tokenizer)` of a checkpoint folder or Hub name with the task's `head` (`data.SEQUENCE_CLASSIFICATION`
    or `data.QUESTION_ANSWERING`), the model in eval mode."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AUTO_CLASSES[head].from_pretrained(name_or_path, dtype=dtype)
    except OSError as e:  # transformers' "not a local folder and not a valid model identifier", many lines long
        raise UsageError(f"cannot load model {name_or_path!r} ({str(e).splitlines()[0]}): "
                         "give a checkpoint folder or a Hub model name") from e
    return model.eval(), tokenizer


def check_model_fits_task(config, spec):
    qa_model = any("QuestionAnswering" in name for name in (config.architectures or ()))
    if qa_model and not spec.is_qa:
        raise UsageError(f"the model answers questions (architectures {config.architectures}); task {spec.name!r} "
                         "is classification: evaluate it with --task squad or squad_v2")
    if spec.is_qa and not qa_model:
        raise UsageError(f"the model has no question-answering head (architectures {config.architectures}): "
                         f"fine-tune it first with tokenskim train --task {spec.name}")
    if config.num_labels != spec.num_labels:
        raise UsageError(
            f"the model has {config.num_labels} output(s) but task {spec.name!r} needs {spec.num_labels}; "
            "was it fine-tuned on another task?"
        )


def position_limit(config) -> int:
    """The longest input the model's position embeddings take (RoBERTa's positions start after padding_idx)."""
    return config.max_position_embeddings - (config.pad_token_id + 1 if "roberta" in config.model_type else 0)


def tokenizer_limit(tokenizer, config, fallback=512) -> int:
    """The model's real maximum length: the tokenizer's own limit (a huge sentinel when unset) capped by the
    positions. This is what a saved tokenizer carries, so `pipeline(...)` truncates and warns correctly."""
    saved = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else fallback
    return min(saved, position_limit(config))


def default_max_length(tokenizer, config, fallback=512) -> int:
    """The length the model was fine-tuned with (`config.training_max_length`, written by tokenskim), else
    the tokenizer's limit; capped by the model's positions. (Checkpoints from before `training_max_length`
    carry the training length in the tokenizer.)"""
    trained = getattr(config, "training_max_length", None)
    return min(trained, position_limit(config)) if trained else tokenizer_limit(tokenizer, config, fallback)


def task_inputs(spec, raw, tokenizer, max_length: int, label2id=None, qa_options=None) -> dict:
    """What `SkimTrainer` takes for a task's data: `train_dataset` / `eval_dataset` made from the `train` /
    `validation` rows in `raw`, `data_collator` and `compute_metrics`.

    Classification: tokenized rows, dynamic padding, the task's metrics. Extractive QA (`spec.is_qa`):
    windowed features (`qa_options`, a `squad.QAOptions`), text answers scored with SQuAD's EM/F1 (squad.py).
    """
    if spec.is_qa:
        return squad.trainer_inputs(raw, tokenizer, spec, max_length, qa_options or squad.QAOptions())
    tokenized = data.tokenize(raw, tokenizer, spec, max_length, label2id=label2id)
    return {
        "train_dataset": tokenized.get("train"), "eval_dataset": tokenized.get("validation"),
        "data_collator": data.collator(tokenizer),
        "compute_metrics": metrics.build_compute_metrics(spec.name, spec.is_regression, spec.num_labels),
    }


def evaluate_model(model, tokenizer, dataset, spec, batch_size=32, max_length=128, label2id=None, output_dir=None,
                   qa_options=None) -> dict:
    """Task metrics, kept-token ratio, FLOPs ratio and per-layer keep rates of `model` on `dataset` (raw rows)."""
    inputs = task_inputs(spec, {"validation": dataset}, tokenizer, max_length, label2id, qa_options)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=output_dir or tmp, per_device_eval_batch_size=batch_size, report_to=[],
                                 dataloader_pin_memory=torch.cuda.is_available())
        trainer = SkimTrainer(model=model, args=args, processing_class=tokenizer, data_collator=inputs["data_collator"],
                              compute_metrics=inputs["compute_metrics"])
        results = strip_prefix(trainer.evaluate(eval_dataset=inputs["eval_dataset"]))
    results["num_examples"] = dataset.num_rows
    return results


def results_path(args, task: str, split: str = "validation") -> tuple:
    """`(folder, file name)` of an evaluation's results: `--output-dir`/eval_results.json when it is another
    folder than the model's, else `eval_results_<task>_<split>.json` next to the model (or here)."""
    model_dir = Path(args.model) if Path(args.model).is_dir() else None
    if args.output_dir and not (model_dir and Path(args.output_dir).resolve() == model_dir.resolve()):
        return args.output_dir, RESULTS_FILE
    return (model_dir or Path(".")), evaluation_file(task, split)


def run(args):
    custom = not args.task
    head = data.get_task(args.task).head if args.task else data.SEQUENCE_CLASSIFICATION
    model, tokenizer = load_classifier(args.model, head=head)
    dataset, spec = load_eval_data(args)
    check_model_fits_task(model.config, spec)
    max_length = args.max_length or default_max_length(tokenizer, model.config)
    qa_options = squad.options_from_args(args, model.config) if spec.is_qa else None
    results = evaluate_model(
        model, tokenizer, dataset, spec, args.batch_size, max_length,
        label2id=model.config.label2id if custom and not spec.is_regression else None, qa_options=qa_options,
    )
    extra = {"doc_stride": qa_options.doc_stride} if qa_options else {}
    record = results_record(results, args.model, spec.name, max_length=max_length, **extra)
    folder, name = results_path(args, spec.name)
    path = write_results(folder, record, name)
    print(format_results(record, metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)))
    print(f"wrote {path}")
    return 0
