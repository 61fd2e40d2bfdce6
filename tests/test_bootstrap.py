"""medpipe.evaluation.bootstrap: intervals that cover the true value about as often as they claim,
seeded resampling, fixed class counts per replicate, and absent classes never counted as 0."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap as scipy_bootstrap
from scipy.stats import norm

from medpipe.evaluation.bootstrap import (
    MAX_JACKKNIFE,
    MIN_FINITE,
    BootstrapSettings,
    bootstrap_ci,
    classification_cis,
    jackknife,
    regression_cis,
    resample_weights,
    strata_of,
)
from medpipe.evaluation.stats import classification_metrics

D = 1.0  # positives ~ N(D, 1), negatives ~ N(0, 1)
TRUE_AUROC = norm.cdf(D / np.sqrt(2))
TRUE_ACC = norm.cdf(D / 2)  # threshold D/2: each class is right with probability Phi(D/2)


def _simulated_dataset(rng, n=300):
    target = (rng.random(n) < 0.4).astype(np.int64)
    return rng.normal(size=n) + D * target, target


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_coverage_near_nominal(method):
    """200 datasets from a known distribution: the 95% intervals of AUROC (true Phi(d/sqrt2))
    and accuracy (true Phi(d/2)) contain the truth in 88-99% of them."""
    rng = np.random.default_rng(2024)
    settings = BootstrapSettings(n=500, method=method, seed=1)
    hits = {"auroc": 0, "acc": 0}
    truth = {"auroc": TRUE_AUROC, "acc": TRUE_ACC}
    n_sets = 200
    for _ in range(n_sets):
        scores, target = _simulated_dataset(rng)
        ci = classification_cis(scores, target, "binary", ["neg", "pos"], D / 2, settings=settings)
        for k in hits:
            hits[k] += ci[k][0] <= truth[k] <= ci[k][1]
    for k, h in hits.items():
        assert 0.88 <= h / n_sets <= 0.99, (k, h / n_sets)


def test_same_seed_same_intervals():
    scores, target = _simulated_dataset(np.random.default_rng(0), n=200)
    run = lambda s: classification_cis(  # noqa: E731
        scores, target, "binary", ["neg", "pos"], settings=BootstrapSettings(n=300, seed=s)
    )
    a, b, c = run(7), run(7), run(8)
    assert dict(a) == dict(b)
    assert dict(a) != dict(c)
    assert a.point == b.point and a.point["auroc"] == pytest.approx(
        classification_metrics(scores, target, "binary", ["neg", "pos"])["auroc"]
    )


def test_stratified_resampling_keeps_class_counts():
    rng = np.random.default_rng(3)
    strata = rng.integers(0, 3, 500)
    strata[:2] = 7  # a class of two samples
    w = resample_weights(strata, 500, 400, np.random.default_rng(0))
    assert w.shape == (400, 500) and np.all(w == np.round(w)) and w.min() >= 0
    for s in np.unique(strata):
        np.testing.assert_array_equal(w[:, strata == s].sum(axis=1), np.sum(strata == s))
    # a resample, not a copy: rows differ and each sample appears once on average
    assert len({tuple(row) for row in w}) == 400
    assert w.mean(axis=0) == pytest.approx(np.ones(500), abs=0.25)
    plain = resample_weights(None, 500, 400, np.random.default_rng(0))
    np.testing.assert_array_equal(plain.sum(axis=1), 500)
    assert plain[:, strata == 7].sum(axis=1).std() > 0  # unstratified: class counts vary


def test_absent_class_never_counts_as_zero_in_a_replicate():
    """Class "c" is absent from the test set and the model is perfect on "a" and "b": every
    replicate's macro figures are 1, where counting "c" as 0 would give 2/3."""
    rng = np.random.default_rng(4)
    target = rng.integers(0, 2, 150)
    probs = np.full((150, 3), 0.1)
    probs[np.arange(150), target] = 0.8
    ci = classification_cis(
        probs, target, "multiclass", ["a", "b", "c"], settings=BootstrapSettings(n=200)
    )
    for k in ("acc", "balanced_acc", "recall", "precision", "f1_macro", "auroc", "specificity"):
        assert ci[k] == (1.0, 1.0), k
        assert ci.dropped[k] == 0
    assert np.isnan(ci["f1_c"][0]) and ci.dropped["f1_c"] == 200


def test_label_missing_from_some_replicates_is_left_out():
    """Unstratified (multilabel): a label with a single positive is missing from about a third of
    the replicates; there it is left out of the macro averages, not scored 0."""
    rng = np.random.default_rng(5)
    target = (rng.random((100, 3)) < 0.5).astype(np.int64)
    target[:, 2] = 0
    target[17, 2] = 1
    scores = np.where(target == 1, 0.9, 0.1)  # perfect on every label
    w = resample_weights(strata_of(target, "multilabel"), 100, 300, np.random.default_rng(0))
    got = classification_metrics(scores, target, "multilabel", ["x", "y", "z"], weights=w)
    missing = w[:, 17] == 0
    assert 0.2 < missing.mean() < 0.5
    for k in ("f1_macro", "recall", "precision", "auroc", "balanced_acc"):
        np.testing.assert_array_equal(got[k], 1.0)
    assert np.isnan(got["f1_z"][missing]).all() and (got["f1_z"][~missing] == 1).all()


def test_undefined_metric_gives_nan_interval_and_counts_drops():
    finite = []

    def metric(w):
        if w is None:
            return {"ok": 1.0, "rare": 1.0}
        rare = np.where(w[:, 0] >= 4, 1.0, np.nan)  # about 1 replicate in 50
        finite.append(int(np.isfinite(rare).sum()))
        return {"ok": np.ones(len(w)), "rare": rare}

    ci = bootstrap_ci(metric, 50, None, BootstrapSettings(n=300))
    assert 0 < sum(finite) < MIN_FINITE  # too few finite replicates for an interval
    assert ci["ok"] == (1.0, 1.0) and ci.dropped["ok"] == 0
    assert np.isnan(ci["rare"][0]) and np.isnan(ci["rare"][1])
    assert ci.dropped["rare"] == 300 - sum(finite)
    ci = bootstrap_ci(metric, 50, None, BootstrapSettings(n=2000))
    assert np.isfinite(ci["rare"]).all() and 1900 < ci.dropped["rare"] < 1990


def test_bca_agrees_with_scipy_on_a_skewed_mean():
    """BCa moves the interval of a right-skewed mean to the right of the percentile one, and
    agrees with scipy.stats.bootstrap(method='BCa') up to resampling noise."""
    x = np.random.default_rng(6).exponential(size=150)

    def mean(w):
        return {"mean": x.mean() if w is None else w @ x / w.sum(axis=1)}

    ours = bootstrap_ci(mean, x.size, None, BootstrapSettings(n=4000, method="bca", seed=2))
    pct = bootstrap_ci(mean, x.size, None, BootstrapSettings(n=4000, seed=2))
    ref = scipy_bootstrap((x,), np.mean, n_resamples=4000, method="BCa", rng=3).confidence_interval
    width = ref.high - ref.low
    assert ours["mean"][0] == pytest.approx(ref.low, abs=0.06 * width)
    assert ours["mean"][1] == pytest.approx(ref.high, abs=0.06 * width)
    assert ours["mean"][0] > pct["mean"][0] and ours["mean"][1] > pct["mean"][1]


def test_grouped_jackknife_for_large_test_sets():
    n = 2500

    def removed(w):
        return {"removed": w.shape[1] - w.sum(axis=1)}

    values = jackknife(removed, n)["removed"]
    assert values.size == MAX_JACKKNIFE
    assert set(values) == {2.0, 3.0} and values.sum() == n  # every sample left out once
    assert jackknife(removed, 40)["removed"].tolist() == [1.0] * 40  # leave-one-out


def test_regression_intervals_contain_the_point_estimate():
    rng = np.random.default_rng(7)
    target = rng.normal(size=400)
    pred = target + rng.normal(scale=0.5, size=400)
    for method in ("percentile", "bca"):
        ci = regression_cis(pred, target, BootstrapSettings(n=400, method=method))
        for k in ("mae", "rmse", "r2"):
            assert ci[k][0] < ci.point[k] < ci[k][1], (method, k)
        assert 0.35 < ci["mae"][0] < ci["mae"][1] < 0.45


def test_settings_are_checked():
    with pytest.raises(ValueError, match="method"):
        BootstrapSettings(method="basic")
    with pytest.raises(ValueError, match="level"):
        BootstrapSettings(level=95)
