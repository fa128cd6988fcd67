"""Datasets for fine-tuning and evaluation (the task table is in `tasks.py`): the GLUE tasks, IMDB, 20 Newsgroups,
AG News and SQuAD v1.1/v2.0 from local files (the layout of `../shared/data`, see its README) or the Hub, and the user's own CSV/TSV/JSON
files (SQuAD-format JSON for the QA tasks, read by `squad.py`, which also windows QA rows into features).

Everything ends as a `DatasetDict` with `train` and/or `validation` splits whose rows carry the task's
text column(s) and label column; `tokenize` turns them into `input_ids`, `attention_mask`,
(`token_type_ids`) and `labels`, unpadded: `pad_batch` (the Trainer's `collator`, and the benchmark's batches)
pads each batch to its own longest row.
"""

import dataclasses
import functools
import logging
import os
from pathlib import Path

import datasets
import torch

from . import squad
from .errors import UsageError
# the task table lives in tasks.py; its names are part of this module's interface (`data.get_task`, `data.TaskSpec`)
from .tasks import (  # noqa: F401
    GLUE_TSV,
    NO_NA,
    QUESTION_ANSWERING,
    SEQUENCE_CLASSIFICATION,
    SPLITS,
    TASKS,
    LocalFile,
    TaskSpec,
    get_task,
)

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Where the data lives


def default_data_dir() -> Path | None:
    """`$TOKENSKIM_DATA_DIR`, else `../shared/data` next to the repository or the working directory."""
    env = os.environ.get("TOKENSKIM_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def hub_is_offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


# ----------------------------------------------------------------------------------------------------
# Reading


def read_file(builder: str, path, **read) -> datasets.Dataset:
    if builder == "squad":
        return squad.read_squad_file(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"{path} is empty: give a file with rows to read (CSV/TSV: a header row, then data rows)")
    try:
        ds = datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **read)
    except ValueError as e:  # a header and no rows: datasets' "Instruction "data" corresponds to no data!"
        if "corresponds to no data" not in str(e):
            raise
        ds = None
    if ds is None or ds.num_rows == 0:
        raise UsageError(f"{path} has no data rows (only a header?): add rows below the header")
    return ds


def load_local_task(spec: TaskSpec, data_dir, splits=SPLITS) -> datasets.DatasetDict:
    """Reads a known task from `data_dir` (the layout of ../shared/data)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    out = datasets.DatasetDict()
    if spec.split_from is not None:
        source, fraction, seed = spec.split_from
        f = spec.local[source]
        full = read_file(f.builder, data_dir / f.path, **f.read)
        parts = full.train_test_split(test_size=fraction, seed=seed, shuffle=True)
        logger.warning(
            "%s: only the %r split is available locally; using a seeded split of it (seed %d): %d train, %d validation rows",
            spec.name, source, seed, parts["train"].num_rows, parts["test"].num_rows,
        )
        out["train"], out["validation"] = parts["train"], parts["test"]
        return datasets.DatasetDict({s: out[s] for s in splits})
    for split in splits:
        if split not in spec.local:
            also = ", or --article-split to split the validation file by article" if spec.is_qa else ""
            raise FileNotFoundError(
                f"{spec.name}: no local {split} split in the shared data (see its README); "
                f"give --{split}-file{also}, or use the Hub when online"
            )
        f = spec.local[split]
        out[split] = read_file(f.builder, data_dir / f.path, **f.read)
    return out


def load_hub_task(spec: TaskSpec, splits=SPLITS) -> datasets.DatasetDict:
    if spec.hub is None:
        raise UsageError(f"{spec.name}: no Hub copy with these columns; pass --dataset-name and --text-columns")
    name, config, split_names, *renames = spec.hub
    out = datasets.DatasetDict({s: datasets.load_dataset(name, config, split=split_names[s]) for s in splits})
    return out.rename_columns(renames[0]) if renames and renames[0] else out


def file_read_options(path) -> tuple:
    """(builder, options) for a user file, from its extension. TSV is read without quoting, as GLUE's."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv", dict(NO_NA)
    if suffix == ".tsv":
        return "csv", {**GLUE_TSV, **NO_NA}
    if suffix in (".json", ".jsonl"):
        return "json", {}
    raise UsageError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .json or .jsonl")


def load_files(train_file=None, validation_file=None, squad_format=False) -> datasets.DatasetDict:
    """The user's files; `squad_format`: SQuAD-format JSON (or JSON lines in the Hub's columns), for QA tasks."""
    out = datasets.DatasetDict()
    for split, path in (("train", train_file), ("validation", validation_file)):
        if path is not None:
            builder, read = ("squad", {}) if squad_format else file_read_options(path)
            out[split] = read_file(builder, path, **read)
    return out


# ----------------------------------------------------------------------------------------------------
# Custom datasets: the spec comes from the user's columns and the training labels


def infer_spec(ds: datasets.Dataset, text_columns, label_column, problem_type=None, name="custom") -> TaskSpec:
    """A TaskSpec for user data: classification over the sorted distinct labels, or regression when
    asked (`problem_type="regression"`) or when the labels are non-integer floats."""
    check_columns(ds, text_columns, label_column)
    values = ds.unique(label_column)
    if any(v is None or v == "" for v in values):
        raise UsageError(f"label column {label_column!r} has empty values")
    floats = all(isinstance(v, (int, float)) for v in values) and any(isinstance(v, float) and not v.is_integer() for v in values)
    if problem_type == "regression" or (problem_type is None and floats):
        return TaskSpec(name, tuple(text_columns), label_column, labels=None)
    if floats:
        raise UsageError(f"label column {label_column!r} holds non-integer numbers; use --problem-type regression")
    labels = tuple(sorted(int(v) if isinstance(v, float) else v for v in values))
    if len(labels) < 2:
        raise UsageError(f"label column {label_column!r} has a single value {labels[0]!r}; classification needs two or more")
    return TaskSpec(name, tuple(text_columns), label_column, labels=labels)


def check_columns(ds: datasets.Dataset, text_columns, label_column=None):
    if not 1 <= len(text_columns) <= 2:
        raise UsageError(f"give one text column or a pair, got {list(text_columns)}")
    wanted = list(text_columns) + ([label_column] if label_column else [])
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise UsageError(f"column(s) {missing} not found; the data has columns {ds.column_names}: "
                         "name the right ones with --text-columns / --label-column")


def load_task(
    task=None,
    data_dir=None,
    train_file=None,
    validation_file=None,
    dataset_name=None,
    dataset_config=None,
    validation_split="validation",
    text_columns=None,
    label_column=None,
    problem_type=None,
    splits=SPLITS,
    article_split=None,
) -> tuple:
    """Loads the requested splits and returns `(DatasetDict, TaskSpec)`.

    Sources, first match wins: the user's files (`train_file` / `validation_file`), a Hub dataset
    (`dataset_name`, whose `validation_split` is read as validation), a known task's local files
    (`data_dir`, else `default_data_dir()`), a known task's Hub copy when online. `text_columns` /
    `label_column` override the task's columns. `article_split` `(eval fraction, seed)` (QA tasks): the
    validation data, from the same sources, is split by article into train and validation (`squad.split_by_article`).
    """
    spec = get_task(task) if task else None
    if article_split is not None:
        if spec is None or not spec.is_qa:
            raise UsageError("--article-split splits SQuAD-style data by article: give --task squad or squad_v2")
        if train_file:
            raise UsageError("--article-split splits the validation data into both parts: drop --train-file")
        raw, spec = load_task(task, data_dir, None, validation_file, dataset_name, dataset_config, validation_split,
                              text_columns, label_column, splits=("validation",))
        parts = dict(zip(SPLITS, squad.split_by_article(raw["validation"], *article_split)))
        return datasets.DatasetDict({s: parts[s] for s in splits}), spec
    if train_file or validation_file:
        raw = load_files(train_file if "train" in splits else None, validation_file if "validation" in splits else None,
                         squad_format=spec is not None and spec.is_qa)
        missing = [s for s in splits if s not in raw]
        if missing:
            raise UsageError(f"no {missing[0]} data: give --{missing[0]}-file")
    elif dataset_name:
        names = {"train": "train", "validation": validation_split}
        raw = datasets.DatasetDict({s: datasets.load_dataset(dataset_name, dataset_config, split=names[s]) for s in splits})
    elif spec is None:
        raise UsageError("give --task, or your own data with --train-file/--validation-file, or --dataset-name")
    else:
        data_dir = Path(data_dir) if data_dir else default_data_dir()
        if data_dir is not None:
            raw = load_local_task(spec, data_dir, splits)
        elif not hub_is_offline():
            raw = load_hub_task(spec, splits)
        else:
            raise FileNotFoundError(
                "no local data: pass --data-dir DIR (the layout of ../shared/data), set TOKENSKIM_DATA_DIR, "
                "or go online (unset HF_HUB_OFFLINE) to read the task from the Hub"
            )

    if spec is None or text_columns or label_column:
        cols = tuple(text_columns or (spec.text_columns if spec else ("text",)))
        label = label_column or (spec.label_column if spec else "label")
        reference = raw["train"] if "train" in raw else raw[splits[0]]
        if spec is None:
            spec = infer_spec(reference, cols, label, problem_type)
        else:
            spec = dataclasses.replace(spec, text_columns=cols, label_column=label)
    for split in raw:
        check_columns(raw[split], spec.text_columns, spec.label_column)
    return raw, spec


# ----------------------------------------------------------------------------------------------------
# Tokenization and batching


def label_to_id(spec: TaskSpec, label2id: dict | None = None):
    """A function raw label -> model label. Regression: float. Classification: the index of the raw
    value in `spec.labels`, or, for a model trained on custom data, its `config.label2id` (by name)."""
    if spec.is_regression:
        return float
    mapping = {str(v): i for i, v in enumerate(spec.labels)}
    if not any(isinstance(v, int) for v in spec.labels):
        mapping.update({str(i): i for i in range(len(spec.labels))})  # class ids (Hub GLUE) for named labels
    if label2id:
        mapping = {str(k): int(v) for k, v in label2id.items()}

    def convert(value):
        key = str(int(value) if isinstance(value, float) and value.is_integer() else value)
        if key not in mapping:
            raise UsageError(f"label {value!r} is not one of the task's labels {list(mapping)}: "
                             "fix the label column, or pick the task (--task) or model these labels belong to")
        return mapping[key]

    return convert


def tokenize(raw: datasets.DatasetDict, tokenizer, spec: TaskSpec, max_length=128, label2id=None, desc="Tokenizing"):
    """Text columns -> `input_ids`, `attention_mask` (+ `token_type_ids`), raw labels -> `labels`.

    No padding here (the collator pads per batch). Texts longer than `max_length` tokens are truncated
    (for pairs, the longer one first). `label2id`: the model's mapping, for custom-label models.
    """
    convert = label_to_id(spec, label2id)

    def encode(batch):
        enc = encode_texts(tokenizer, batch, spec.text_columns, max_length)
        enc["labels"] = [convert(v) for v in batch[spec.label_column]]
        return enc

    out = datasets.DatasetDict()
    for split, ds in raw.items():
        out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"{desc} {split}")
    return out


def encode_texts(tokenizer, rows: dict, text_columns, max_length: int):
    """Rows as columns (`{column: [values]}`) -> the tokenizer's unpadded encoding of the text column(s).
    Missing text is the empty string; longer texts are truncated to `max_length` tokens."""
    texts = (["" if t is None else str(t) for t in rows[c]] for c in text_columns)
    return tokenizer(*texts, truncation=True, max_length=max_length)


def pad_batch(features: list, pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict:
    """Unpadded rows `[{key: token list or value}]` -> one batch of tensors, right-padded to its longest row.

    Token lists become `[batch, seq]` long tensors: `input_ids` padded with `pad_token_id`, the others
    (`token_type_ids`, `attention_mask`) with 0; an absent `attention_mask` is added (1 on real tokens).
    Per-row values (`labels`) are stacked to `[batch]`.
    """
    lengths = [len(f["input_ids"]) for f in features]
    seq = max(lengths)
    if pad_to_multiple_of:
        seq = -(-seq // pad_to_multiple_of) * pad_to_multiple_of
    if "attention_mask" not in features[0]:
        features = [{**f, "attention_mask": [1] * n} for f, n in zip(features, lengths)]
    batch = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], (list, tuple)):
            fill = pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([list(v) + [fill] * (seq - len(v)) for v in values], dtype=torch.long)
        else:
            batch[key] = torch.tensor(values)
    return batch


def collator(tokenizer, pad_to_multiple_of=None):
    """Dynamic padding for `Trainer`: each batch is padded to its own longest row, never to `max_length`."""
    return functools.partial(pad_batch, pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of)


def subsample(ds: datasets.Dataset, n: int | None, seed: int = 42) -> datasets.Dataset:
    """A seeded random subset of `n` rows (all rows when n is None or larger than the set)."""
    if n is None or n >= ds.num_rows:
        return ds
    if n <= 0:
        raise UsageError(f"sample size must be positive, got {n}")
    return ds.shuffle(seed=seed).select(range(n))


# the held-out rows depend on their number only (not on --seed), so train and calibrate agree without a record
HOLDOUT_SEED = 0


def hold_out(ds: datasets.Dataset, n: int | None) -> tuple:
    """`(rest, held out)`: `n` seeded rows of `ds` set aside, e.g. for `tokenskim calibrate`, and the others (both
    in their original order). A smaller `n` holds out a subset of a larger one's rows, so calibrating on up to `n`
    of them never reads a row that training with `n` read. n None: `(ds, None)`."""
    if n is None:
        return ds, None
    if not 0 < n < ds.num_rows:
        raise UsageError(f"--holdout-samples must be between 1 and {ds.num_rows - 1} (the split's rows), got {n}")
    order = torch.randperm(ds.num_rows, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held = order[:n].sort().values.tolist()
    return ds.select(order[n:].sort().values.tolist()), ds.select(held)
