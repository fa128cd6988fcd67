"""Extractive question answering data (SQuAD v1.1 / v2.0 and files in their format): reading, the split by
article, windowed features with character offsets, and post-processing of start/end logits into text answers.

Rows, one per question, as the Hub's `rajpurkar/squad`: `id`, `title`, `context`, `question` and
`answers = {"text": [...], "answer_start": [...]}` (empty lists: no answer, SQuAD v2.0).

Features, one per window of a context, what the QA models read: `input_ids`, `attention_mask`,
(`token_type_ids`), and `start_positions` / `end_positions`, the first answer's tokens, or CLS (0) when the
question has no answer or the window does not hold the answer whole. Evaluation features also carry
`example_id` and `offset_mapping` (each context token's character span, None elsewhere) for post-processing.
The question always comes first (Block-Skim protects the blocks holding it, at the start of a row), only the
context is truncated, and consecutive windows overlap by `doc_stride` tokens.
"""

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from . import metrics
from .errors import UsageError

COLUMNS = ("id", "title", "context", "question", "answers")
FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "title": datasets.Value("string"),
    "context": datasets.Value("string"),
    "question": datasets.Value("string"),
    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
})
DEFAULT_MAX_LENGTH = 384  # BERT's SQuAD recipe
VERSION_2_TASKS = ("squad_v2",)  # tasks with unanswerable questions: the v2.0 metric and the no-answer threshold

# A start/end logit at or below this marks a position the model skipped. Block-Skim writes the dtype's minimum
# there (-65504 in float16, about -3.4e38 in bfloat16/float32); -1e4 lies above all of those, below any real
# logit, and is itself representable in float16, so the test holds whatever dtype the logits come in.
SKIPPED_LOGIT = -1e4


@dataclass(frozen=True)
class QAOptions:
    """Windows and post-processing. doc_stride: tokens shared by consecutive windows of a long context;
    n_best_size: start and end candidates per window; max_answer_length: the longest answer, in tokens;
    null_score_diff_threshold: SQuAD v2.0 answers "no answer" when the CLS score beats the best span's by more."""

    doc_stride: int = 128
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0


# ----------------------------------------------------------------------------------------------------
# Reading


def flatten_articles(articles) -> list:
    """SQuAD's nested `[{"title", "paragraphs": [{"context", "qas": [...]}]}]` -> one row per question.
    Questions marked `is_impossible` (v2.0) have no answers, whatever their `answers` field holds."""
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows.append({
                    "id": str(qa["id"]), "title": article.get("title", ""), "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]},
                })
    return rows


def read_squad_file(path) -> datasets.Dataset:
    """A SQuAD-format JSON file (`{"data": [articles]}`), or JSON lines with the Hub's columns, -> rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path} is not JSON ({e}); give a file in SQuAD format") from e
        if not isinstance(content, dict) or not isinstance(content.get("data"), list):
            raise UsageError(f'{path} is not in SQuAD format: expected {{"data": [{{"title", "paragraphs": '
                             '[{"context", "qas": [{"id", "question", "answers"}]}]}]}')
        try:
            rows = flatten_articles(content["data"])
        except (KeyError, TypeError) as e:
            raise UsageError(f"{path}: an article, paragraph or question lacks the SQuAD field {e}") from e
    if not rows:
        raise UsageError(f"{path} holds no questions")
    missing = [c for c in COLUMNS if c != "title" and c not in rows[0]]
    if missing:
        raise UsageError(f"{path}: rows lack the column(s) {missing}; SQuAD rows have {list(COLUMNS)}")
    return datasets.Dataset.from_list([{c: row.get(c, "") for c in COLUMNS} for row in rows], features=FEATURES)


def parse_article_split(text: str) -> tuple:
    """`"0.2"` or `"0.2:0"` -> `(eval fraction, seed)`; the seed defaults to 0."""
    fraction, _, seed = str(text).partition(":")
    try:
        fraction, seed = float(fraction), int(seed or 0)
    except ValueError:
        raise UsageError(f"--article-split takes FRACTION[:SEED], e.g. 0.2 or 0.2:0; got {text!r}") from None
    if not 0 < fraction < 1:
        raise UsageError(f"--article-split: the evaluation fraction must lie between 0 and 1, got {fraction}")
    return fraction, seed


def split_by_article(ds: datasets.Dataset, eval_fraction: float, seed: int = 0) -> tuple:
    """`(train, validation)` rows, split by article so that no context or question is in both.

    The articles (rows grouped by `title`, in the order they first appear) are shuffled with
    `random.Random(seed)`; the first `round(articles * eval_fraction)` (at least one) evaluate. On the SQuAD
    v1.1 dev file (48 articles), 0.2 and seed 0 give the 10 evaluation articles of results/blockskim_squad/.
    """
    titles = list(dict.fromkeys(ds["title"]))
    n_eval = max(1, round(len(titles) * eval_fraction))
    if n_eval >= len(titles):
        raise UsageError(f"--article-split: the data has {len(titles)} article(s) (by title); nothing would be left "
                         "to train on: give more articles or a smaller fraction")
    order = list(range(len(titles)))
    random.Random(seed).shuffle(order)
    held_out = {titles[i] for i in order[:n_eval]}
    is_eval = [t in held_out for t in ds["title"]]
    return (ds.select([i for i, e in enumerate(is_eval) if not e]), ds.select([i for i, e in enumerate(is_eval) if e]))


# ----------------------------------------------------------------------------------------------------
# Features


def answer_positions(offsets, answers) -> tuple:
    """Token span `(start, end)`, inclusive, of the first answer in one window, or `(0, 0)` (CLS) when there is
    no answer or the window does not hold it whole.

    offsets: per token its `(first, end)` character span in the context, None outside the context;
    answers: `{"text": [...], "answer_start": [...]}`.
    """
    if not answers["answer_start"]:
        return 0, 0
    first = answers["answer_start"][0]
    last = first + len(answers["text"][0])
    context = [i for i, o in enumerate(offsets) if o is not None]
    if not context or offsets[context[0]][0] > first or offsets[context[-1]][1] < last:
        return 0, 0
    start = next(i for i in context if offsets[i][1] > first)  # answers may start inside a token
    end = next(i for i in reversed(context) if offsets[i][0] < last)
    return (start, end) if end >= start else (0, 0)


def encode_features(rows: dict, tokenizer, max_length: int, doc_stride: int, with_metadata: bool = False) -> dict:
    """Rows as columns (`{"id": [...], "question": [...], ...}`) -> features as columns (module docstring)."""
    questions = [q.lstrip() for q in rows["question"]]  # leading spaces only cost tokens
    enc = tokenizer(questions, rows["context"], truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    example_of = enc.pop("overflow_to_sample_mapping")
    all_offsets = enc.pop("offset_mapping")
    features = {**enc, "start_positions": [], "end_positions": []}
    if with_metadata:
        features.update(example_id=[], offset_mapping=[])
    for i, example in enumerate(example_of):
        offsets = [tuple(o) if s == 1 else None for o, s in zip(all_offsets[i], enc.sequence_ids(i))]
        start, end = answer_positions(offsets, rows["answers"][example])
        features["start_positions"].append(start)
        features["end_positions"].append(end)
        if with_metadata:
            features["example_id"].append(rows["id"][example])
            features["offset_mapping"].append(offsets)
    return features


def featurize(raw, tokenizer, max_length: int, doc_stride: int) -> datasets.DatasetDict:
    """Each split's rows -> features; splits other than `train` keep the post-processing metadata."""
    if doc_stride >= max_length:
        raise UsageError(f"--doc-stride {doc_stride} must be below --max-length {max_length} (it is the overlap of windows)")
    out = datasets.DatasetDict()
    for split, ds in raw.items():
        out[split] = ds.map(
            encode_features, batched=True, remove_columns=ds.column_names, desc=f"Windowing {split}",
            fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride,
                       "with_metadata": split != "train"},
        )
    return out


@dataclass
class QACollator:
    """Pads a batch of features on the right whatever the tokenizer's side: the answer positions count from the
    start of each row, and Block-Skim's question blocks sit there."""

    tokenizer: object

    def __call__(self, features):
        return self.tokenizer.pad(features, padding=True, padding_side="right", return_tensors="pt")


# ----------------------------------------------------------------------------------------------------
# Post-processing


def best_span(start_logits, end_logits, offsets, n_best_size: int = 20, max_answer_length: int = 30):
    """The best answer span of one window: `(score, start, end)` token positions, or None.

    start_logits, end_logits: `[>= tokens]` (anything past the window's tokens is ignored); offsets: `[tokens]`,
    None outside the context. Candidates are the `n_best_size` best starts and ends among the context positions
    the model did not skip (logit above `SKIPPED_LOGIT`); a span needs start <= end and at most
    `max_answer_length` tokens; its score is start logit + end logit.
    """
    n = len(offsets)
    start_logits = np.asarray(start_logits[:n], dtype=np.float64)
    end_logits = np.asarray(end_logits[:n], dtype=np.float64)
    context = np.array([o is not None for o in offsets], dtype=bool)
    starts = np.flatnonzero(context & (start_logits > SKIPPED_LOGIT))
    ends = np.flatnonzero(context & (end_logits > SKIPPED_LOGIT))
    starts = starts[np.argsort(-start_logits[starts], kind="stable")[:n_best_size]]
    ends = ends[np.argsort(-end_logits[ends], kind="stable")[:n_best_size]]
    scores = start_logits[starts][:, None] + end_logits[ends][None, :]
    length = ends[None, :] - starts[:, None] + 1
    scores[(length < 1) | (length > max_answer_length)] = -np.inf
    if scores.size == 0 or not np.isfinite(scores).any():
        return None
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[i, j]), int(starts[i]), int(ends[j])


def postprocess(examples, features, start_logits, end_logits, version_2: bool = False,
                options: QAOptions = QAOptions()) -> dict:
    """`{question id: answer text}` from the logits of every window; "" means no answer.

    examples: rows with `id` and `context`; features: their windows with `example_id` and `offset_mapping`, in
    the order of the logits `[features, >= tokens]`. A question's answer is its best span over its windows.
    SQuAD v2.0 (`version_2`): "no answer" when the lowest CLS score over its windows (start + end logit at
    position 0) exceeds that span's score by more than `options.null_score_diff_threshold`.
    """
    windows = defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        windows[example_id].append(i)
    offsets = features["offset_mapping"]
    answers = {}
    for example_id, context in zip(examples["id"], examples["context"]):
        best, null = None, None
        for i in windows[example_id]:
            span = best_span(start_logits[i], end_logits[i], offsets[i], options.n_best_size, options.max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = (span[0], offsets[i][span[1]][0], offsets[i][span[2]][1])
            window_null = float(start_logits[i][0]) + float(end_logits[i][0])
            null = window_null if null is None else min(null, window_null)
        text = "" if best is None else context[best[1] : best[2]]
        if version_2 and best is not None and null - best[0] > options.null_score_diff_threshold:
            text = ""
        answers[example_id] = text
    return answers


def references(examples) -> dict:
    """`{question id: [reference answer texts]}` (empty: unanswerable)."""
    return {example_id: list(a["text"]) for example_id, a in zip(examples["id"], examples["answers"])}


def build_compute_metrics(examples, features, version_2: bool = False, options: QAOptions = QAOptions()):
    """A `compute_metrics` for `SkimTrainer` on exactly these evaluation `features`: `EvalPrediction` whose
    predictions are `(start_logits, end_logits)` `[features, tokens]` -> the official SQuAD EM/F1 (in percent)."""
    gold = references(examples)
    metadata = features.select_columns(["example_id", "offset_mapping"])

    def compute_metrics(eval_pred):
        start_logits, end_logits = eval_pred.predictions[:2]
        predicted = postprocess(examples, metadata, start_logits, end_logits, version_2, options)
        return metrics.squad_v2(predicted, gold) if version_2 else metrics.squad_v1(predicted, gold)

    return compute_metrics


def trainer_inputs(raw, tokenizer, spec, max_length: int, options: QAOptions = QAOptions()) -> dict:
    """What `SkimTrainer` takes for extractive QA on `raw` (`train` and/or `validation` rows): the datasets of
    windowed features, the collator, and `compute_metrics` for the validation windows."""
    features = featurize(raw, tokenizer, max_length, options.doc_stride)
    inputs = {"data_collator": QACollator(tokenizer), "train_dataset": features.get("train")}
    if "validation" in features:
        validation = features["validation"]
        inputs["eval_dataset"] = validation.remove_columns(["example_id", "offset_mapping"])
        inputs["compute_metrics"] = build_compute_metrics(raw["validation"], validation, spec.name in VERSION_2_TASKS, options)
    return inputs


def task_description(spec) -> str:
    if spec.name in VERSION_2_TASKS:
        return "extractive question answering, unanswerable questions included: SQuAD v2.0 rules"
    return "extractive question answering: SQuAD v1.1 rules"


# ----------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser):
    """Flags of extractive QA (`--task squad` / `squad_v2`), shared by train, evaluate and bench."""
    g = parser.add_argument_group("question answering (--task squad / squad_v2)")
    g.add_argument("--article-split", type=parse_article_split, metavar="FRACTION[:SEED]",
                   help="split the validation data (e.g. the local SQuAD dev file) by article: FRACTION of the articles "
                   "(shuffled with SEED, default 0) evaluate, the rest train; 0.2 reproduces results/blockskim_squad/'s split")
    g.add_argument("--doc-stride", type=int, help=f"tokens shared by consecutive windows of a long context "
                   f"(default {QAOptions.doc_stride}; evaluate and bench: the one the model was trained with)")
    g.add_argument("--n-best-size", type=int, default=QAOptions.n_best_size,
                   help=f"start and end candidates per window (default {QAOptions.n_best_size})")
    g.add_argument("--max-answer-length", type=int, default=QAOptions.max_answer_length,
                   help=f"the longest answer in tokens (default {QAOptions.max_answer_length})")
    g.add_argument("--null-score-diff-threshold", type=float, default=QAOptions.null_score_diff_threshold,
                   help="SQuAD v2.0: answer nothing when the no-answer score beats the best span's by more (default 0)")
    return g


def options_from_args(args, config=None) -> QAOptions:
    """QAOptions from the flags; the stride defaults to the one the model was trained with (`config.training_doc_stride`)."""
    stride = getattr(args, "doc_stride", None) or getattr(config, "training_doc_stride", None) or QAOptions.doc_stride
    return QAOptions(stride, args.n_best_size, args.max_answer_length, args.null_score_diff_threshold)
