"""medpipe.evaluation.stats: the numpy metrics equal torchmetrics' when every class is present,
leave absent classes out of macro averages, and treat a weight matrix row as repeated rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from torchmetrics.functional import mean_absolute_error as tm_mae
from torchmetrics.functional import mean_squared_error as tm_mse
from torchmetrics.functional import r2_score as tm_r2
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_specificity,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
    multilabel_accuracy,
    multilabel_auroc,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
    multilabel_specificity,
)

from medpipe.evaluation.stats import (
    absent_classes,
    classification_metrics,
    regression_metrics,
    weighted_auroc,
)

TOL = 1e-6


def _binary_data(rng, n=300):
    target = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * target - 0.6)))
    return scores, target


def _multiclass_data(rng, n=400, k=4):
    target = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), target] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, target


def _multilabel_data(rng, n=300, k=3):
    target = (rng.random((n, k)) < [0.3, 0.5, 0.2]).astype(np.int64)
    scores = 0.2 + 0.6 / (1 + np.exp(-(rng.normal(size=(n, k)) + 1.5 * target - 0.7)))
    return scores, target


def _close(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert got[k] == pytest.approx(float(v), abs=TOL), k


def test_binary_equals_torchmetrics():
    scores, target = _binary_data(np.random.default_rng(0))
    got = classification_metrics(scores, target, "binary", ["normal", "Pneumonia X"])
    p, t = torch.tensor(scores), torch.tensor(target)
    two = torch.stack([1 - p, p], dim=1)
    f1_class = multiclass_f1_score(two, t, 2, average=None)
    _close(
        got,
        {
            "acc": binary_accuracy(p, t),
            "precision": binary_precision(p, t),
            "recall": binary_recall(p, t),
            "specificity": binary_specificity(p, t),
            "f1": binary_f1_score(p, t),
            "auroc": binary_auroc(p, t),
            "balanced_acc": multiclass_accuracy(two, t, 2, average="macro"),
            "f1_macro": multiclass_f1_score(two, t, 2, average="macro"),
            "f1_normal": f1_class[0],
            "f1_pneumonia_x": f1_class[1],  # class_key of the name
        },
    )
    assert all(isinstance(v, float) for v in got.values())


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_threshold(threshold):
    scores, target = _binary_data(np.random.default_rng(1))
    got = classification_metrics(scores, target, "binary", ["a", "b"], threshold=threshold)
    p, t = torch.tensor(scores), torch.tensor(target)
    _close(
        got,
        {
            "recall": binary_recall(p, t, threshold=threshold),
            "precision": binary_precision(p, t, threshold=threshold),
            "acc": binary_accuracy(p, t, threshold=threshold),
        },
    )


def test_multiclass_equals_torchmetrics():
    probs, target = _multiclass_data(np.random.default_rng(2))
    classes = ["N", "A", "O", "~"]
    got = classification_metrics(
        probs, target, "multiclass", classes, score_classes=["N", "A", "O"]
    )
    p, t = torch.tensor(probs), torch.tensor(target)
    f1_class = multiclass_f1_score(p, t, 4, average=None)
    _close(
        got,
        {
            "acc": multiclass_accuracy(p, t, 4, average="micro"),
            "balanced_acc": multiclass_accuracy(p, t, 4, average="macro"),
            "precision": multiclass_precision(p, t, 4, average="macro"),
            "recall": multiclass_recall(p, t, 4, average="macro"),
            "specificity": multiclass_specificity(p, t, 4, average="macro"),
            "f1": multiclass_f1_score(p, t, 4, average="macro"),
            "f1_macro": multiclass_f1_score(p, t, 4, average="macro"),
            "auroc": multiclass_auroc(p, t, 4, average="macro"),
            "f1_n": f1_class[0],
            "f1_a": f1_class[1],
            "f1_o": f1_class[2],
            "f1_class": f1_class[3],  # "~" has no [a-z0-9]: class_key's fallback
            "f1_score": f1_class[:3].mean(),
        },
    )


def test_multilabel_equals_torchmetrics():
    scores, target = _multilabel_data(np.random.default_rng(3))
    got = classification_metrics(scores, target, "multilabel", ["x", "y", "z"])
    p, t = torch.tensor(scores), torch.tensor(target)
    recall = multilabel_recall(p, t, 3, average="macro")
    specificity = multilabel_specificity(p, t, 3, average="macro")
    f1_class = multilabel_f1_score(p, t, 3, average=None)
    _close(
        got,
        {
            "acc": multilabel_accuracy(p, t, 3, average="micro"),
            "balanced_acc": (recall + specificity) / 2,
            "precision": multilabel_precision(p, t, 3, average="macro"),
            "recall": recall,
            "specificity": specificity,
            "f1": multilabel_f1_score(p, t, 3, average="macro"),
            "f1_macro": multilabel_f1_score(p, t, 3, average="macro"),
            "auroc": multilabel_auroc(p, t, 3, average="macro"),
            "f1_x": f1_class[0],
            "f1_z": f1_class[2],
        },
    )


def test_multilabel_per_label_threshold():
    """A (K,) threshold decides each label at its own cut: the same as torchmetrics' 0.5 on
    scores shifted by 0.5 - threshold (AUROC does not move under a shift)."""
    scores, target = _multilabel_data(np.random.default_rng(4))
    thr = np.array([0.4, 0.55, 0.6])
    got = classification_metrics(scores, target, "multilabel", ["x", "y", "z"], threshold=thr)
    p, t = torch.tensor(scores - thr + 0.5), torch.tensor(target)
    _close(
        got,
        {
            "acc": multilabel_accuracy(p, t, 3, average="micro"),
            "precision": multilabel_precision(p, t, 3, average="macro"),
            "recall": multilabel_recall(p, t, 3, average="macro"),
            "f1": multilabel_f1_score(p, t, 3, average="macro"),
            "auroc": multilabel_auroc(p, t, 3, average="macro"),
        },
    )
    assert got["f1"] != pytest.approx(
        classification_metrics(scores, target, "multilabel", ["x", "y", "z"])["f1"]
    )


@pytest.mark.filterwarnings("ignore:No positive samples:UserWarning")  # torchmetrics, class "c"
def test_missing_class_is_left_out_of_macro_averages():
    probs, target = _multiclass_data(np.random.default_rng(5))
    target[target == 2] = 0  # class "c" has no sample
    got = classification_metrics(probs, target, "multiclass", ["a", "b", "c", "d"])
    present = [0, 1, 3]
    ovr = [roc_auc_score(target == c, probs[:, c]) for c in present]
    assert got["auroc"] == pytest.approx(np.mean(ovr), abs=1e-12)
    tm = float(multiclass_auroc(torch.tensor(probs), torch.tensor(target), 4, average="macro"))
    assert tm < got["auroc"] - 0.05  # torchmetrics counts the absent class as 0
    p, t = torch.tensor(probs), torch.tensor(target)
    f1_class = multiclass_f1_score(p, t, 4, average=None).numpy()
    recall_class = multiclass_recall(p, t, 4, average=None).numpy()
    assert np.isnan(got["f1_c"])
    assert got["f1_macro"] == pytest.approx(f1_class[present].mean(), abs=TOL)
    assert got["recall"] == pytest.approx(recall_class[present].mean(), abs=TOL)
    assert got["balanced_acc"] == got["recall"]
    assert absent_classes(target, "multiclass", ["a", "b", "c", "d"]) == ["c"]


def test_absent_positive_class_in_binary():
    scores = np.array([0.1, 0.7, 0.3, 0.9])
    target = np.zeros(4, dtype=int)
    got = classification_metrics(scores, target, "binary", ["neg", "pos"])
    for k in ("precision", "recall", "f1", "auroc", "f1_pos"):
        assert np.isnan(got[k]), k
    assert got["specificity"] == 0.5
    assert got["balanced_acc"] == 0.5  # class "neg" only: its recall
    assert got["f1_macro"] == got["f1_neg"] == pytest.approx(2 * 2 / (2 * 2 + 2))
    assert absent_classes(target, "binary", ["neg", "pos"]) == ["pos"]


def test_present_class_never_predicted_scores_zero():
    scores, target = _binary_data(np.random.default_rng(6))
    got = classification_metrics(scores, target, "binary", ["a", "b"], threshold=2.0)
    assert got["precision"] == got["recall"] == got["f1"] == 0.0
    assert got["specificity"] == 1.0
    assert got["auroc"] == pytest.approx(
        float(binary_auroc(torch.tensor(scores), torch.tensor(target)))
    )


def test_multilabel_absent_label():
    scores, target = _multilabel_data(np.random.default_rng(7))
    target[:, 1] = 0
    got = classification_metrics(scores, target, "multilabel", ["x", "y", "z"])
    ovr = [roc_auc_score(target[:, c], scores[:, c]) for c in (0, 2)]
    assert got["auroc"] == pytest.approx(np.mean(ovr), abs=1e-12)
    assert np.isnan(got["f1_y"])
    assert got["f1_macro"] == pytest.approx((got["f1_x"] + got["f1_z"]) / 2)
    assert absent_classes(target, "multilabel", ["x", "y", "z"]) == ["y"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_integer_weights_equal_repeated_rows(task):
    rng = np.random.default_rng(8)
    data = {"binary": _binary_data, "multiclass": _multiclass_data, "multilabel": _multilabel_data}
    scores, target = data[task](rng, n=120)
    scores = np.round(scores, 2)  # ties within a sample and across the repeats
    k = 2 if task == "binary" else scores.shape[1]
    classes = [f"c{i}" for i in range(k)]
    weights = rng.integers(0, 4, size=(3, len(target)))
    got = classification_metrics(
        scores, target, task, classes, score_classes=classes[:2], weights=weights
    )
    assert all(v.shape == (3,) for v in got.values())
    for r, w in enumerate(weights):
        want = classification_metrics(
            np.repeat(scores, w, axis=0), np.repeat(target, w, axis=0), task, classes,
            score_classes=classes[:2],
        )  # fmt: skip
        for name, v in want.items():
            assert got[name][r] == pytest.approx(v, abs=1e-12, nan_ok=True), (name, r)


@pytest.mark.parametrize("prevalence", [0.3, 0.7])  # either class the larger one
def test_weighted_auroc_with_ties_equals_sklearn(prevalence):
    rng = np.random.default_rng(9)
    score = np.round(rng.random(200), 1)
    positive = rng.random(200) < prevalence
    w = rng.random((4, 200))
    got = weighted_auroc(score, positive, w)
    want = [roc_auc_score(positive, score, sample_weight=row) for row in w]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_auroc_nan_per_replicate_without_positives():
    scores, target = _binary_data(np.random.default_rng(10), n=50)
    weights = np.ones((2, 50))
    weights[1, target == 1] = 0  # replicate 1 has no positive
    got = classification_metrics(scores, target, "binary", ["a", "b"], weights=weights)
    assert np.isfinite(got["auroc"][0]) and np.isnan(got["auroc"][1])
    assert np.isnan(got["recall"][1]) and got["specificity"][1] == got["specificity"][0]


def test_bad_input():
    with pytest.raises(ValueError, match="task"):
        classification_metrics(np.zeros(3), np.zeros(3), "ordinal", ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(np.zeros((3, 3)), np.zeros(3), "multiclass", ["a", "b"])
    with pytest.raises(ValueError, match="weights"):
        classification_metrics(np.zeros(3), np.zeros(3), "binary", ["a", "b"], weights=np.ones(3))


def test_regression_equals_sklearn_and_torchmetrics():
    rng = np.random.default_rng(11)
    target = rng.normal(70, 12, 500)
    pred = target + rng.normal(2, 5, 500)
    got = regression_metrics(pred, target)
    p, t = torch.tensor(pred), torch.tensor(target)
    assert got["mae"] == pytest.approx(mean_absolute_error(target, pred), abs=1e-10)
    assert got["mae"] == pytest.approx(float(tm_mae(p, t)), abs=TOL)
    assert got["rmse"] == pytest.approx(float(tm_mse(p, t, squared=False)), abs=TOL)
    assert got["r2"] == pytest.approx(r2_score(target, pred), abs=1e-10)
    assert got["r2"] == pytest.approx(float(tm_r2(p, t)), abs=TOL)


def test_regression_weights_and_constant_target():
    rng = np.random.default_rng(12)
    target, pred = rng.normal(size=80), rng.normal(size=80)
    weights = rng.integers(0, 3, size=(2, 80))
    got = regression_metrics(pred, target, weights=weights)
    for r, w in enumerate(weights):
        want = regression_metrics(np.repeat(pred, w), np.repeat(target, w))
        for k in want:
            assert got[k][r] == pytest.approx(want[k], abs=1e-10), k
    flat = regression_metrics(np.array([1.0, 2.0, 3.0]), np.full(3, 1e6 + 0.1))
    assert np.isnan(flat["r2"]) and flat["mae"] == pytest.approx(1e6 + 0.1 - 2)
