"""Task metrics that work offline (scikit-learn / scipy), with the names and values of `evaluate`'s
GLUE metric: `accuracy`, `f1`, `matthews_correlation`, `pearson`, `spearmanr`.

Which metrics a task reports follows GLUE: CoLA Matthews correlation; MRPC and QQP accuracy and F1 (of the
positive class); STS-B Pearson and Spearman; the others accuracy. The first metric of a task is its main one.
"""

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
