"""Calibration: ECE, Brier, reliability bins, temperature scaling and the reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.evaluation.calibration import (
    apply_temperature,
    brier,
    ece,
    fit_temperature,
    plot_reliability,
    reliability_bins,
)

N = 20_000


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _calibrated(task: str, rng: np.random.Generator, n: int = N):
    """Logits and targets drawn from the model's own probabilities: calibrated by construction."""
    if task == "binary":
        z = rng.normal(0.0, 2.0, n)
        return z, (rng.random(n) < _sigmoid(z)).astype(np.int64)
    if task == "binary2":  # two logits, softmax
        z = rng.normal(0.0, 1.5, (n, 2))
        return z, (rng.random(n) < _softmax(z)[:, 1]).astype(np.int64)
    if task == "multiclass":
        z = rng.normal(0.0, 2.0, (n, 4))
        cum = _softmax(z).cumsum(1)
        return z, np.minimum((rng.random((n, 1)) > cum).sum(1), 3)
    z = rng.normal(0.0, 2.0, (n, 3))
    return z, (rng.random((n, 3)) < _sigmoid(z)).astype(np.int64)


def test_ece_of_a_hand_made_sample():
    # confidences max(p, 1-p): 0.85, 0.85, 0.75, 0.75; correct: 1, 0, 1, 1
    # bin (0.8, 0.9]: confidence 0.85, accuracy 0.5; bin (0.7, 0.8]: confidence 0.75, accuracy 1
    probs, target = np.array([0.85, 0.85, 0.25, 0.25]), np.array([1, 0, 0, 0])
    rb = reliability_bins(probs, target, "binary", bins=10)
    assert rb.count.tolist() == [0, 0, 0, 0, 0, 0, 0, 2, 2, 0]
    assert rb.confidence[7] == pytest.approx(0.75) and rb.accuracy[7] == 1.0
    assert rb.confidence[8] == pytest.approx(0.85) and rb.accuracy[8] == 0.5
    assert np.isnan(rb.accuracy[0])  # an empty bin has no accuracy
    assert ece(probs, target, "binary", bins=10) == pytest.approx(0.5 * 0.35 + 0.5 * 0.25)
    # multilabel: the mean of the per-label ECEs (0 for a certain, right label)
    ml_probs = np.stack([probs, [1.0, 0.0, 0.0, 1.0]], 1)
    ml_target = np.stack([target, [1, 0, 0, 1]], 1)
    assert ece(ml_probs, ml_target, "multilabel", bins=10) == pytest.approx(0.30 / 2)
    # multiclass top-label: confidence 0.6 right, 0.7 wrong, in two different bins
    mc = np.array([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])
    assert ece(mc, np.array([0, 1]), "multiclass", bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.7)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_a_calibrated_sample_has_ece_near_zero(task):
    rng = np.random.default_rng(0)
    z, y = _calibrated(task, rng)
    probs = apply_temperature(z, 1.0, task)
    assert ece(probs, y, task) < 0.02
    # overconfident (logits x 3) is visibly miscalibrated: the test can fail
    assert ece(apply_temperature(3 * z, 1.0, task), y, task) > 0.05


@pytest.mark.parametrize("task", ["binary", "binary2", "multiclass", "multilabel"])
def test_temperature_scaling_recovers_the_factor_and_lowers_ece(task):
    rng = np.random.default_rng(1)
    z, y = _calibrated(task, rng)
    kind = "binary" if task == "binary2" else task
    hot = 3.0 * z
    t = fit_temperature(hot, y, kind)
    assert t == pytest.approx(3.0, rel=0.10)
    before = ece(apply_temperature(hot, 1.0, kind), y, kind)
    after = ece(apply_temperature(hot, t, kind), y, kind)
    assert after < before and after < 0.03
    # an underconfident model (logits / 2) gets T < 1
    assert fit_temperature(z / 2, y, kind) == pytest.approx(0.5, rel=0.10)


def test_fit_temperature_is_stable_for_huge_logits():
    rng = np.random.default_rng(2)
    z, y = _calibrated("multiclass", rng, n=4000)
    # + 1000 on every class leaves the softmax unchanged but overflows a naive exp(logit)
    hot = 10.0 * z + 1000.0
    t = fit_temperature(hot, y, "multiclass")
    assert t == pytest.approx(10.0, rel=0.10)
    probs = apply_temperature(hot, t, "multiclass")
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1.0)
    # one-logit binary with logits far out in both tails
    zb, yb = _calibrated("binary", rng, n=4000)
    assert fit_temperature(10.0 * zb, yb, "binary") == pytest.approx(10.0, rel=0.10)


def test_brier_against_hand_computation():
    # binary: (0.1^2 + 0.2^2 + 0.6^2) / 3
    assert brier(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0]), "binary") == pytest.approx(
        0.41 / 3
    )
    # multiclass: sample 1: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; sample 2: 0.1^2 + 0.7^2 + 0.6^2 = 0.86
    mc = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert brier(mc, np.array([0, 1]), "multiclass") == pytest.approx(0.5)
    # multilabel: mean of 0.2^2, 0.1^2, 0.7^2, 0.4^2 over the four entries
    ml = np.array([[0.8, 0.1], [0.3, 0.6]])
    assert brier(ml, np.array([[1, 0], [1, 1]]), "multilabel") == pytest.approx(0.70 / 4)


def test_apply_temperature_one_is_the_plain_softmax_or_sigmoid():
    rng = np.random.default_rng(3)
    z1, z2, zc = rng.normal(size=7), rng.normal(size=(7, 2)), rng.normal(size=(7, 5))
    np.testing.assert_allclose(apply_temperature(z1, 1.0, "binary"), _sigmoid(z1), rtol=1e-12)
    np.testing.assert_allclose(
        apply_temperature(z1[:, None], 1.0, "binary"), _sigmoid(z1), rtol=1e-12
    )
    two = apply_temperature(z2, 1.0, "binary")
    assert two.shape == (7,)
    np.testing.assert_allclose(two, _softmax(z2)[:, 1], rtol=1e-12)
    np.testing.assert_allclose(apply_temperature(zc, 1.0, "multiclass"), _softmax(zc), rtol=1e-12)
    np.testing.assert_allclose(apply_temperature(zc, 1.0, "multilabel"), _sigmoid(zc), rtol=1e-12)
    # scaling keeps the argmax (accuracy unchanged)
    assert (apply_temperature(zc, 4.0, "multiclass").argmax(1) == zc.argmax(1)).all()
    with pytest.raises(ValueError):
        apply_temperature(zc, 0.0, "multiclass")


def test_reliability_diagram_png(tmp_path):
    rng = np.random.default_rng(4)
    z, y = _calibrated("multiclass", rng, n=3000)
    before = apply_temperature(3 * z, 1.0, "multiclass")
    after = apply_temperature(3 * z, 3.0, "multiclass")
    one = plot_reliability(before, y, "multiclass", tmp_path / "a.png")
    two = plot_reliability(before, y, "multiclass", tmp_path / "b" / "r.png", probs_after=after)
    for png in (one, two):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
