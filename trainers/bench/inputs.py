"""What every benchmark variant is fed: the examples of a task split (`BenchData`), their tokens, and their
padded batches (`Batch`). Tokenization and padding are `tokenskim.trainers.data`'s, as in train and evaluate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from .. import data as task_data
from .. import metrics


@dataclass
class BenchData:
    """Examples to benchmark on. `text_pairs` is None for single-sentence tasks.

    metric_fn(predictions, labels) -> {name: value}; `metric_name` is the headline key.
    `regression` makes predictions the squeezed logits instead of argmax.
    """

    texts: list
    labels: list
    metric_fn: Callable
    metric_name: str
    text_pairs: list | None = None
    regression: bool = False
    task: str = "custom"
    source: str = ""
    head: ClassVar[str] = task_data.SEQUENCE_CLASSIFICATION

    def encode(self, tokenizer, config, max_length: int) -> "EncodedExamples":
        """The examples tokenized to `max_length`, scored with `metric_fn` on the pass's predictions. (`config`,
        the model's, is for tasks whose inputs depend on it: QA's doc stride, `bench.qa`.)"""

        def score(result):
            return result.predictions, self.metric_fn(result.predictions, self.labels)

        return EncodedExamples(tokenize(tokenizer, self, max_length), score)


@dataclass
class EncodedExamples:
    """A benchmark's examples made into one model's inputs.

    features: per example, the unpadded token lists the model reads (`make_batches` pads them);
    score(pass_result) -> (predictions, {metric: value}): the variant's task metric from its untimed pass
        (`passes.PassResult`); predictions are compared across variants (`prediction_agreement_vs_dense`);
    settings: what the report records next to the max length (QA: the doc stride and the questions scored).
    """

    features: list
    score: Callable
    settings: dict = field(default_factory=dict)


def load_bench_data(task: str | None = None, data_dir: str | None = None, split: str = "validation",
                    max_examples: int | None = None, seed: int = 42, validation_file: str | None = None,
                    text_columns=None, label_column=None, label2id: dict | None = None) -> BenchData:
    """A split of a task through `tokenskim.trainers.data` (the same loader as train/evaluate), scored with
    `tokenskim.trainers.metrics`. `max_examples`: a seeded random subset (`data.subsample`; IMDB's files are
    ordered negative-then-positive, so a prefix would be one class). `label2id`: the model's mapping, for
    models trained on custom labels."""
    raw, spec = task_data.load_task(task=task, data_dir=data_dir, validation_file=validation_file,
                                    text_columns=text_columns, label_column=label_column, splits=(split,))
    ds = raw[split]
    total = ds.num_rows
    ds = task_data.subsample(ds, max_examples, seed)
    convert = task_data.label_to_id(spec, label2id if task is None else None)
    columns = spec.text_columns
    texts = ["" if t is None else str(t) for t in ds[columns[0]]]
    pairs = ["" if t is None else str(t) for t in ds[columns[1]]] if len(columns) > 1 else None
    labels = [convert(v) for v in ds[spec.label_column]]
    names = metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)

    def metric_fn(predictions, references):
        return metrics.compute(names, predictions, references)

    source = f"{spec.name} {split}" + (f" ({data_dir})" if data_dir else "")
    if ds.num_rows < total:
        source += f", seeded random subset of {ds.num_rows}/{total} (seed {seed})"
    return BenchData(texts=texts, labels=labels, metric_fn=metric_fn, metric_name=names[0], text_pairs=pairs,
                     regression=spec.is_regression, task=spec.name, source=source)


@dataclass
class Batch:
    """One padded batch: `inputs` (tensors for the model), `indices` of its examples in the data,
    `lengths` (real tokens per example)."""

    inputs: dict
    indices: list
    lengths: list

    @property
    def size(self):
        return len(self.indices)


def tokenize(tokenizer, data: BenchData, max_length: int) -> list:
    """Per-example token lists (no padding), truncated to `max_length` (`data.encode_texts`)."""
    columns = {"text": data.texts} if data.text_pairs is None else {"text": data.texts, "text_pair": data.text_pairs}
    enc = task_data.encode_texts(tokenizer, columns, list(columns), max_length)
    return [{k: enc[k][i] for k in enc} for i in range(len(data.texts))]


def truncate_features(feature: dict, length: int) -> dict:
    """Shortens an example to `length` tokens, keeping its final special token ([SEP] / </s>)."""
    n = len(feature["input_ids"])
    if length >= n:
        return feature
    return {k: v[: length - 1] + v[-1:] for k, v in feature.items()}


def make_batches(features: list, batch_size: int, pad_token_id: int, sort_by_length: bool = False,
                 equal_lengths: bool = False, device="cpu") -> list:
    """Groups examples into padded batches (`data.pad_batch`).

    sort_by_length: batches of examples of similar length (longest first), as a user cuts padding.
    equal_lengths: inputs without padding: examples sorted by length, and every batch truncated to its
        shortest example (keeping the final special token), so no batch holds a pad token. The metric
        is then on truncated inputs.
    """
    order = list(range(len(features)))
    if sort_by_length or equal_lengths:
        order.sort(key=lambda i: -len(features[i]["input_ids"]))
    batches = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        feats = [features[i] for i in idx]
        if equal_lengths:
            shortest = min(len(f["input_ids"]) for f in feats)
            feats = [truncate_features(f, shortest) for f in feats]
        inputs = {k: v.to(device) for k, v in task_data.pad_batch(feats, pad_token_id).items()}
        batches.append(Batch(inputs, idx, [len(f["input_ids"]) for f in feats]))
    return batches
