"""medpipe.evaluation.paired: fast DeLong against the O(n_pos * n_neg) definition, exact McNemar
against a hand-counted table, and the paired bootstrap of two models on the same rows."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from medpipe.evaluation.bootstrap import BootstrapSettings, strata_of
from medpipe.evaluation.paired import delong_test, mcnemar_exact, midranks, paired_bootstrap
from medpipe.evaluation.stats import classification_metrics, regression_metrics


def _two_models(rng, n=160):
    target = (rng.random(n) < 0.45).astype(np.int64)
    common = rng.normal(size=n)  # shared difficulty: the models' scores are correlated
    a = np.round(common + 1.2 * target + 0.5 * rng.normal(size=n), 1)  # rounded: ties
    b = np.round(common + 0.8 * target + 0.7 * rng.normal(size=n), 1)
    return a, b, target


def _delong_slow(a, b, target, level=0.95):
    """DeLong et al. (1988) by the definition: kernel psi over every (positive, negative) pair,
    structural components V10, V01, their covariance matrices S10, S01."""
    pos, neg = target == 1, target == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, auc = [], [], []
    for s in (a, b):
        x, y = s[pos][:, None], s[neg][None, :]
        psi = (x > y) + 0.5 * (x == y)  # (m, n)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        auc.append(psi.mean())
    s10 = np.cov(np.array(v10))  # 2 x 2, ddof 1
    s01 = np.cov(np.array(v01))
    cov = s10 / m + s01 / n
    c = np.array([1.0, -1.0])
    se = np.sqrt(c @ cov @ c)
    diff = auc[0] - auc[1]
    z = norm.ppf(0.5 + level / 2)
    return {
        "auroc_a": auc[0],
        "auroc_b": auc[1],
        "diff": diff,
        "se": se,
        "ci_low": diff - z * se,
        "ci_high": diff + z * se,
        "p_value": 2 * norm.sf(abs(diff) / se),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_the_slow_definition(seed):
    a, b, target = _two_models(np.random.default_rng(seed))
    assert len(np.unique(a)) < len(a)  # the data has ties
    got, want = delong_test(a, b, target), _delong_slow(a, b, target)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-10, rel=0), k
    assert got["auroc_a"] == pytest.approx(roc_auc_score(target, a), abs=1e-12)
    assert got["auroc_b"] == pytest.approx(roc_auc_score(target, b), abs=1e-12)


def test_delong_level_and_a_clear_difference():
    a, b, target = _two_models(np.random.default_rng(3), n=600)
    r95, r99 = delong_test(a, b, target), delong_test(a, b, target, level=0.99)
    assert r99["ci_low"] < r95["ci_low"] < r95["diff"] < r95["ci_high"] < r99["ci_high"]
    assert r95["diff"] > 0 and r95["p_value"] < 0.01  # model a is built to be better
    swapped = delong_test(b, a, target)
    assert swapped["diff"] == pytest.approx(-r95["diff"]) and swapped["p_value"] == pytest.approx(
        r95["p_value"]
    )


def test_delong_identical_models():
    a, _, target = _two_models(np.random.default_rng(4))
    r = delong_test(a, a.copy(), target)
    assert r["diff"] == 0 and r["se"] == 0 and r["p_value"] == 1.0
    assert r["ci_low"] == r["ci_high"] == 0


def test_delong_needs_both_classes():
    with pytest.raises(ValueError, match="positives"):
        delong_test(np.arange(5.0), np.arange(5.0), np.array([0, 0, 0, 0, 1]))


def test_midranks():
    np.testing.assert_array_equal(
        midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [[4.0, 1.0, 4.0, 2.0, 4.0]]
    )


def test_mcnemar_on_a_hand_made_table():
    # both right 50, a right / b wrong 12, a wrong / b right 4, both wrong 10
    table = [(1, 1)] * 50 + [(1, 0)] * 12 + [(0, 1)] * 4 + [(0, 0)] * 10
    correct_a, correct_b = np.array(table).T
    r = mcnemar_exact(correct_a, correct_b)
    assert (r["b"], r["c"]) == (12, 4)
    assert r["acc_a"] == pytest.approx(62 / 76) and r["acc_b"] == pytest.approx(54 / 76)
    assert r["diff"] == pytest.approx(8 / 76)
    assert r["p_value"] == pytest.approx(binomtest(12, 16, 0.5).pvalue, abs=1e-12)
    # the exact two-sided p by hand: twice the upper tail of Binomial(16, 1/2) at 12
    assert r["p_value"] == pytest.approx(2 * sum(comb(16, k) for k in range(12, 17)) / 2**16)


def test_mcnemar_without_discordant_pairs():
    same = np.array([1, 0, 1, 1, 0], dtype=bool)
    r = mcnemar_exact(same, same)
    assert r["b"] == r["c"] == 0 and r["p_value"] == 1.0 and r["diff"] == 0


def _binary_fn(scores, target):
    return lambda w: classification_metrics(scores, target, "binary", ["n", "p"], weights=w)


def test_paired_bootstrap_of_a_model_against_itself():
    a, _, target = _two_models(np.random.default_rng(5))
    scores = 1 / (1 + np.exp(-a))
    fn = _binary_fn(scores, target)
    out = paired_bootstrap(
        fn, fn, len(target), strata_of(target, "binary"), BootstrapSettings(n=200)
    )
    assert {"auroc", "acc", "f1_macro", "f1_p"} <= set(out)
    for k, r in out.items():
        assert r["diff"] == 0 and r["ci_low"] == r["ci_high"] == 0, k
        assert r["p_value"] == 1.0 and r["dropped"] == 0, k


def test_paired_bootstrap_agrees_with_delong():
    """For binary AUROC both estimate the same difference: the same point, and a bootstrap
    interval about as wide as DeLong's."""
    a, b, target = _two_models(np.random.default_rng(6), n=400)
    out = paired_bootstrap(
        _binary_fn(a, target),
        _binary_fn(b, target),
        len(target),
        strata_of(target, "binary"),
        BootstrapSettings(n=1000, seed=3),
    )["auroc"]
    dl = delong_test(a, b, target)
    assert out["diff"] == pytest.approx(dl["diff"], abs=1e-12)
    width, dl_width = out["ci_high"] - out["ci_low"], dl["ci_high"] - dl["ci_low"]
    assert width == pytest.approx(dl_width, rel=0.2)
    assert (out["p_value"] < 0.05) == (dl["p_value"] < 0.05)


def test_paired_bootstrap_regression():
    rng = np.random.default_rng(7)
    target = rng.normal(size=300)
    good, bad = target + rng.normal(scale=0.3, size=300), target + rng.normal(scale=0.6, size=300)
    out = paired_bootstrap(
        lambda w: regression_metrics(good, target, weights=w),
        lambda w: regression_metrics(bad, target, weights=w),
        300,
        None,
        BootstrapSettings(n=500),
    )
    assert out["mae"]["diff"] < 0 and out["mae"]["ci_high"] < 0 and out["mae"]["p_value"] < 0.01
    assert out["r2"]["diff"] > 0 and out["r2"]["ci_low"] > 0
    assert out["mae"]["a"] == pytest.approx(regression_metrics(good, target)["mae"])
