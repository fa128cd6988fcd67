"""Task metrics that work offline (scikit-learn / scipy), with the names and values of `evaluate`'s
GLUE metric: `accuracy`, `f1`, `matthews_correlation`, `pearson`, `spearmanr`; and the official SQuAD v1.1 /
v2.0 exact match and F1 over text answers (`squad_v1`, `squad_v2`, in percent as the official scripts report).

Which metrics a task reports follows GLUE: CoLA Matthews correlation; MRPC and QQP accuracy and F1 (of the
positive class); STS-B Pearson and Spearman; the others accuracy; SQuAD F1 and exact match. The first metric of
a task is its main one.
"""

import collections
import re
import string

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

TASK_METRICS = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "imdb": ("accuracy",),
    "20newsgroups": ("accuracy", "macro_f1"),
    "ag_news": ("accuracy",),
    "squad": ("f1", "exact_match"),
    "squad_v2": ("f1", "exact_match", "HasAns_f1", "NoAns_f1"),
}


def _regression_metric(fn):
    def metric(predictions, references):
        if len(predictions) < 2 or np.std(predictions) == 0 or np.std(references) == 0:
            return float("nan")  # correlation is undefined for constant input
        return float(fn(predictions, references)[0])

    return metric


METRICS = {
    "accuracy": lambda p, r: float(accuracy_score(r, p)),
    "f1": lambda p, r: float(f1_score(r, p)),
    "macro_f1": lambda p, r: float(f1_score(r, p, average="macro")),
    "matthews_correlation": lambda p, r: float(matthews_corrcoef(r, p)),
    "pearson": _regression_metric(pearsonr),
    "spearmanr": _regression_metric(spearmanr),
}


def metric_names(task: str, is_regression: bool = False, num_labels: int = 2) -> tuple:
    """The metrics a task reports. Unknown (custom) tasks: Pearson/Spearman for regression, accuracy and
    F1 (binary) or macro F1 (more classes) for classification."""
    if task in TASK_METRICS:
        return TASK_METRICS[task]
    if is_regression:
        return ("pearson", "spearmanr")
    return ("accuracy", "f1" if num_labels == 2 else "macro_f1")


def compute(names, predictions, references) -> dict:
    """`{name: value}` for predicted labels (or scores, for regression) against references `[n]`."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
    if predictions.size == 0:
        raise ValueError("no predictions to score")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    return {name: METRICS[name](predictions, references) for name in names}


def predictions_from_logits(logits, is_regression: bool) -> np.ndarray:
    """`[n, labels]` logits -> `[n]` class ids, or `[n, 1]` / `[n]` regression outputs -> `[n]` scores."""
    logits = np.asarray(logits)
    if is_regression:
        return logits.reshape(len(logits))
    return logits.argmax(-1)


def build_compute_metrics(task: str, is_regression: bool = False, num_labels: int = 2):
    """A `compute_metrics` for `Trainer`: `EvalPrediction` -> the task's metrics."""
    names = metric_names(task, is_regression, num_labels)

    def compute_metrics(eval_pred):
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return compute(names, predictions_from_logits(logits, is_regression), eval_pred.label_ids)

    return compute_metrics


# ----------------------------------------------------------------------------------------------------
# SQuAD: the official evaluation scripts' rules (evaluate-v1.1.py, evaluate-v2.0.py)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: the official normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def answer_f1(prediction: str, truth: str, version_2: bool = False) -> float:
    """Token F1 of the normalised answers. v1.1 scores two empty answers 0 (no common token); v2.0 scores an
    empty answer 1 against an empty one and 0 against any other."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if version_2 and (not pred or not gold):
        return float(pred == gold)
    same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_v1(predictions: dict, references: dict) -> dict:
    """`{"exact_match", "f1"}` in percent over every question in `references` (`{id: [answer texts]}`), each the
    max over its reference answers; a question without a prediction (`{id: text}`) scores 0."""
    if not references:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    for qid, truths in references.items():
        if qid in predictions:
            em += max(answer_exact_match(predictions[qid], t) for t in truths)
            f1 += max(answer_f1(predictions[qid], t) for t in truths)
    return {"exact_match": 100.0 * em / len(references), "f1": 100.0 * f1 / len(references)}


def squad_v2(predictions: dict, references: dict) -> dict:
    """SQuAD v2.0's exact match and F1 in percent, overall and over the answerable (`HasAns_`) and unanswerable
    (`NoAns_`) questions with their counts (`_total`); a group without questions is left out.

    references: `{id: [answer texts]}`, empty for an unanswerable question, which only the empty prediction ""
    matches. As in the official script, reference answers that normalise to nothing are dropped from the
    comparison (a question left without any is scored against ""), but the question stays in `HasAns_`. A
    question without a prediction scores 0."""
    if not references:
        raise ValueError("no questions to score")
    scores = {}
    for qid, truths in references.items():
        gold = [t for t in truths if normalize_answer(t)] or [""]
        if qid not in predictions:
            scores[qid] = (0.0, 0.0)
            continue
        scores[qid] = (max(answer_exact_match(predictions[qid], t) for t in gold),
                       max(answer_f1(predictions[qid], t, version_2=True) for t in gold))
    groups = {"": list(references), "HasAns_": [q for q, t in references.items() if t],
              "NoAns_": [q for q, t in references.items() if not t]}
    out = {}
    for prefix, ids in groups.items():
        if ids:
            out[f"{prefix}exact_match"] = 100.0 * sum(scores[q][0] for q in ids) / len(ids)
            out[f"{prefix}f1"] = 100.0 * sum(scores[q][1] for q in ids) / len(ids)
            if prefix:
                out[f"{prefix}total"] = len(ids)
    return out
