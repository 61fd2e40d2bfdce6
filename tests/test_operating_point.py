"""Operating-point rules on hand-made scores: each rule picks the threshold worked out below."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.evaluation.operating_point import (
    choose_threshold,
    choose_thresholds,
    describe_rule,
    parse_rule,
    select_operating_point,
)

# Ten validation samples, 5 positive and 5 negative, sorted by score.
SCORES = np.array([0.10, 0.20, 0.30, 0.35, 0.40, 0.55, 0.60, 0.70, 0.80, 0.90])
TARGET = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 1])
# Worked by hand, positive when score >= t (P = N = 5):
#   t     TP FP  sens spec  J    F1 = 2TP / (2TP + FP + FN)
#   0.90   1  0  0.2  1.0  0.2  2/6  = 0.333
#   0.80   2  0  0.4  1.0  0.4  4/7  = 0.571
#   0.70   3  0  0.6  1.0  0.6  6/8  = 0.750
#   0.60   3  1  0.6  0.8  0.4  6/9  = 0.667
#   0.55   4  1  0.8  0.8  0.6  8/10 = 0.800   <- max F1
#   0.40   4  2  0.8  0.6  0.4  8/11 = 0.727
#   0.35   4  3  0.8  0.4  0.2  8/12 = 0.667
#   0.30   5  3  1.0  0.4  0.4  10/13 = 0.769
#   0.20   5  4  1.0  0.2  0.2  10/14 = 0.714
#   0.10   5  5  1.0  0.0  0.0  10/15 = 0.667
# Youden's J ties at 0.70 and 0.55 (0.6): ties go to the highest threshold, 0.70.


def _sens_spec(scores, target, t):
    pred = scores >= t
    pos, neg = target == 1, target == 0
    return (pred & pos).sum() / pos.sum(), (~pred & neg).sum() / neg.sum()


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("0.5", 0.5),
        (0.3, 0.3),
        ("youden", 0.70),
        ("max_f1", 0.55),
        ("sensitivity@0.95", 0.30),  # only t <= 0.30 reaches sensitivity 1; the highest is 0.30
        ("sensitivity@0.8", 0.55),  # 0.8 first reached at 0.55 (exactly 4/5)
        ("sensitivity@0.5", 0.70),
        ("specificity@0.8", 0.55),  # 0.8 holds down to 0.55; 0.40 drops to 0.6
        ("specificity@0.95", 0.70),  # specificity 1 down to 0.70
        ("specificity@0.5", 0.40),
    ],
)
def test_each_rule_picks_the_documented_threshold(rule, expected):
    assert choose_threshold(SCORES, TARGET, rule) == pytest.approx(expected, abs=0)


def test_the_chosen_point_is_reproduced_on_the_same_data():
    t = choose_threshold(SCORES, TARGET, "sensitivity@0.95")
    assert _sens_spec(SCORES, TARGET, t) == (1.0, 0.4)
    t = choose_threshold(SCORES, TARGET, "specificity@0.8")
    assert _sens_spec(SCORES, TARGET, t) == (0.8, 0.8)


def test_sensitivity_target_is_met_at_the_most_specific_point():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1).round(3)  # rounding makes ties
    t = choose_threshold(scores, y, "sensitivity@0.95")
    sens, _ = _sens_spec(scores, y, t)
    assert sens >= 0.95
    higher = np.unique(scores[scores > t])
    assert len(higher) and _sens_spec(scores, y, higher[0])[0] < 0.95  # the next one up misses
    t = choose_threshold(scores, y, "specificity@0.9")
    assert _sens_spec(scores, y, t)[1] >= 0.9
    lower = np.unique(scores[scores < t])
    assert _sens_spec(scores, y, lower[-1])[1] < 0.9  # the next one down misses


def test_unreachable_specificity_predicts_nothing_positive():
    scores, target = np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 1, 1, 0])  # top score negative
    t = choose_threshold(scores, target, "specificity@0.9")
    assert t > 0.9 and _sens_spec(scores, target, t) == (0.0, 1.0)


@pytest.mark.parametrize(
    "rule",
    [
        "youdenn",
        "sensitivity@1.5",
        "sensitivity@",
        "sensitivity@0",
        "specificity@abc",
        "sensitivity0.9",
        "1.5",
        "0",
        "1",
        "",
        "f1",
        True,
        None,
    ],
)
def test_bad_rules_are_rejected_with_what_is_allowed(rule):
    with pytest.raises(ValueError, match="unknown operating-point rule") as err:
        parse_rule(rule)
    message = str(err.value)
    for allowed in ("(0, 1)", "'youden'", "'max_f1'", "'sensitivity@<x>'", "'specificity@<x>'"):
        assert allowed in message
    with pytest.raises(ValueError):
        choose_threshold(SCORES, TARGET, rule)


def test_parse_rule_kinds():
    assert parse_rule("0.5") == ("fixed", 0.5)
    assert parse_rule(0.25) == ("fixed", 0.25)
    assert parse_rule(" Youden ") == ("youden", None)
    assert parse_rule("max_f1") == ("max_f1", None)
    assert parse_rule("sensitivity@0.95") == ("sensitivity", 0.95)
    assert parse_rule("specificity@0.9") == ("specificity", 0.9)


def test_data_rules_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(SCORES, np.ones(10, int), "youden")
    assert choose_threshold(SCORES, np.ones(10, int), "0.4") == 0.4  # a fixed one does not


def test_choose_thresholds_per_task():
    assert choose_thresholds(SCORES, TARGET, "binary", "max_f1") == pytest.approx(0.55, abs=0)
    two_col = np.stack([1 - SCORES, SCORES], 1)  # (N, 2) form: column 1 is P(positive)
    assert choose_thresholds(two_col, TARGET, "binary", "youden") == pytest.approx(0.70, abs=0)
    mc = np.tile([0.2, 0.3, 0.5], (10, 1))
    assert choose_thresholds(mc, np.arange(10) % 3, "multiclass", "youden") is None
    # multilabel: label 0 is the hand-made column, label 1 reversed, label 2 has no positive
    probs = np.stack([SCORES, SCORES[::-1], SCORES], 1)
    target = np.stack([TARGET, TARGET[::-1], np.zeros(10, int)], 1)
    with pytest.warns(UserWarning, match="labels \\[2\\]"):
        op = select_operating_point(probs, target, "multilabel", "max_f1")
    np.testing.assert_array_equal(op.threshold, [0.55, 0.55, 0.5])
    assert op.fallback == (2,)
    fixed = select_operating_point(probs, target, "multilabel", "0.3")
    np.testing.assert_array_equal(fixed.threshold, [0.3, 0.3, 0.3])
    assert fixed.fallback == ()
    with pytest.warns(UserWarning):
        single = select_operating_point(SCORES, np.zeros(10, int), "binary", "youden")
    assert single.threshold == 0.5 and single.fallback == (1,)


def test_describe_rule_says_what_it_picks():
    assert "highest" in describe_rule("sensitivity@0.95") and "0.95" in describe_rule(
        "sensitivity@0.95"
    )
    assert "lowest" in describe_rule("specificity@0.9")
    assert "Youden" in describe_rule("youden")
    assert "F1" in describe_rule("max_f1")
    assert ">= 0.5" in describe_rule(0.5)
