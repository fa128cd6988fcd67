"""Offline task metrics: values against hand computations, GLUE's choice per task, the Trainer hook."""

import math

import numpy as np
import pytest
from transformers import EvalPrediction

from tokenskim.trainers import metrics


def test_values_against_hand_computation():
    p, r = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    out = metrics.compute(("accuracy", "f1", "matthews_correlation"), p, r)
    tp, tn, fp, fn = 3, 1, 1, 1
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert out["matthews_correlation"] == pytest.approx(mcc)


def test_correlations():
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    y = [0.0, 1.0, 4.0, 9.0, 16.0]  # monotone but not linear
    out = metrics.compute(("pearson", "spearmanr"), x, y)
    assert out["spearmanr"] == pytest.approx(1.0)
    expected = np.corrcoef(x, y)[0, 1]
    assert out["pearson"] == pytest.approx(expected) and out["pearson"] < 0.99
    assert math.isnan(metrics.compute(("pearson",), [1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["pearson"])


def test_macro_f1_for_many_classes():
    out = metrics.compute(("macro_f1",), [0, 1, 2, 2], [0, 1, 2, 1])
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_glue_choice_of_metrics():
    assert metrics.metric_names("cola") == ("matthews_correlation",)
    assert metrics.metric_names("sst2") == ("accuracy",)
    assert metrics.metric_names("mrpc") == ("accuracy", "f1")
    assert metrics.metric_names("qqp") == ("accuracy", "f1")
    assert metrics.metric_names("stsb") == ("pearson", "spearmanr")
    for task in ("mnli", "qnli", "rte", "wnli", "imdb", "ag_news"):
        assert metrics.metric_names(task)[0] == "accuracy"
    assert metrics.metric_names("custom", is_regression=True) == ("pearson", "spearmanr")
    assert metrics.metric_names("custom", num_labels=2) == ("accuracy", "f1")
    assert metrics.metric_names("custom", num_labels=5) == ("accuracy", "macro_f1")


def test_compute_metrics_for_trainer():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [-1.0, 1.0]])
    fn = metrics.build_compute_metrics("mrpc")
    out = fn(EvalPrediction(predictions=logits, label_ids=np.array([0, 0, 1])))
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    # tuple predictions (extra model outputs) use the first element
    assert fn(EvalPrediction(predictions=(logits, np.zeros(3)), label_ids=np.array([0, 0, 1]))) == out


def test_regression_outputs_are_squeezed():
    fn = metrics.build_compute_metrics("stsb", is_regression=True)
    out = fn(EvalPrediction(predictions=np.array([[0.5], [1.5], [3.0]]), label_ids=np.array([0.0, 2.0, 2.5])))
    assert out["spearmanr"] == pytest.approx(1.0)


def test_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.compute(("accuracy",), [1, 0], [1])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.compute(("accuracy",), [], [])
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compute(("bleu",), [1], [1])
