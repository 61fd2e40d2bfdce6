"""Test-report figures and tables at a chosen threshold, and classes absent from the split."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_curve

from medpipe.evaluation.report import (
    ABSENT_NOTE,
    operating_point_marker,
    per_class_report,
    pr_marker,
    predicted_labels,
    report_text,
    write_test_report,
)

# Six test samples; at 0.5 the prediction is [0 0 0 1 1 1], at 0.4 it is [0 0 1 1 1 1].
PROBS = np.array([0.10, 0.30, 0.45, 0.60, 0.80, 0.95])
TARGET = np.array([0, 0, 1, 0, 1, 1])
CLASSES = ["normal", "lesion"]


def _confusion(path):
    with open(path, newline="") as f:
        return Counter((r["actual"], r["predicted"]) for r in csv.DictReader(f))


def test_threshold_changes_predictions_confusion_and_per_class_numbers(tmp_path):
    assert predicted_labels(PROBS, "binary").tolist() == [0, 0, 0, 1, 1, 1]
    assert predicted_labels(PROBS, "binary", threshold=0.4).tolist() == [0, 0, 1, 1, 1, 1]

    at_05 = per_class_report(PROBS, TARGET, "binary", CLASSES)
    at_04 = per_class_report(PROBS, TARGET, "binary", CLASSES, threshold=0.4)
    assert at_05["threshold"] == 0.5 and at_04["threshold"] == 0.4
    # 0.5: TP 2, FP 1, FN 1, TN 2; 0.4: TP 3, FP 1, FN 0, TN 2
    lesion5, lesion4 = at_05["classes"]["lesion"], at_04["classes"]["lesion"]
    assert lesion5["recall"] == pytest.approx(2 / 3) and lesion4["recall"] == 1.0
    assert lesion5["precision"] == pytest.approx(2 / 3) and lesion4["precision"] == 0.75
    assert lesion5["specificity"] == pytest.approx(2 / 3) and lesion4["specificity"] == (
        pytest.approx(2 / 3)
    )
    assert lesion4["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert at_04["classes"]["normal"]["recall"] == pytest.approx(2 / 3)  # TN / negatives
    assert lesion5["auroc"] == lesion4["auroc"]  # ranking does not depend on the threshold
    assert "threshold: 0.4" in report_text(at_04)

    files = write_test_report(PROBS, TARGET, "binary", CLASSES, tmp_path, threshold=0.4)
    assert set(files) == {"confusion_matrix", "roc", "pr", "report_json", "report_txt"}
    for key in ("confusion_matrix", "roc", "pr"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["pr"] == tmp_path / "plots" / "pr.png"
    assert json.loads(files["report_json"].read_text())["threshold"] == 0.4
    assert _confusion(tmp_path / "plots" / "confusion.csv") == {
        ("normal", "normal"): 2,
        ("normal", "lesion"): 1,
        ("lesion", "lesion"): 3,
    }
    write_test_report(PROBS, TARGET, "binary", CLASSES, tmp_path)  # default 0.5
    assert _confusion(tmp_path / "plots" / "confusion.csv") == {
        ("normal", "normal"): 2,
        ("normal", "lesion"): 1,
        ("lesion", "normal"): 1,
        ("lesion", "lesion"): 2,
    }


def test_multilabel_takes_one_threshold_per_label(tmp_path):
    probs = np.array([[0.2, 0.7], [0.6, 0.3], [0.4, 0.9], [0.8, 0.1]])
    target = np.array([[0, 1], [1, 0], [1, 1], [1, 0]])
    pred = predicted_labels(probs, "multilabel", threshold=np.array([0.35, 0.8]))
    assert pred.tolist() == [[0, 0], [1, 0], [1, 1], [1, 0]]
    report = per_class_report(probs, target, "multilabel", ["a", "b"], threshold=[0.35, 0.8])
    assert report["threshold"] == [0.35, 0.8]
    assert report["classes"]["a"]["recall"] == 1.0  # 0.6, 0.4, 0.8 all >= 0.35
    assert report["classes"]["b"]["recall"] == 0.5  # only 0.9 >= 0.8
    with pytest.raises(ValueError, match="multilabel thresholds"):
        predicted_labels(probs, "multilabel", threshold=[0.5, 0.5, 0.5])
    files = write_test_report(probs, target, "multilabel", ["a", "b"], tmp_path, [0.35, 0.8])
    assert files["roc"].stat().st_size > 5_000 and files["pr"].stat().st_size > 5_000


def test_multiclass_ignores_the_threshold():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.45, 0.45], [0.2, 0.2, 0.6]])
    assert predicted_labels(probs, "multiclass", threshold=0.9).tolist() == [0, 1, 2]
    assert per_class_report(probs, np.array([0, 1, 2]), "multiclass", list("abc"))["threshold"] is (
        None
    )


def test_an_absent_class_gets_the_note_and_no_numbers():
    # three classes, none of class "c" in this split
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    target = np.array([0, 1, 1, 0])
    report = per_class_report(probs, target, "multiclass", ["a", "b", "c"])
    c = report["classes"]["c"]
    assert c["support"] == 0 and c["note"] == ABSENT_NOTE
    assert all(c[k] is None for k in ("precision", "recall", "specificity", "f1", "auroc"))
    a, b = report["classes"]["a"], report["classes"]["b"]
    assert "note" not in a and b["recall"] == 0.5  # the 0.4 sample went to c
    # macro averages over the present classes only: recall (1 + 0.5) / 2, not (1 + 0.5 + 0) / 3
    assert report["macro"]["recall"] == pytest.approx(0.75)
    assert report["macro"]["precision"] == pytest.approx((a["precision"] + b["precision"]) / 2)
    text = report_text(report)
    row = next(line for line in text.splitlines() if line.startswith("c "))
    assert row.count("n/a") == 5 and row.endswith(f"({ABSENT_NOTE})")
    json.dumps(report)  # None serialises as null


def test_roc_marker_lies_at_the_documented_point():
    # at 0.45: predicted positive 0.45, 0.60, 0.80, 0.95 -> TP 3 of 3, FP 1 of 3
    fpr, tpr = operating_point_marker(TARGET, PROBS, 0.45)
    assert (fpr, tpr) == (pytest.approx(1 / 3), 1.0)
    assert operating_point_marker(TARGET, PROBS, 0.5) == (
        pytest.approx(1 / 3),
        pytest.approx(2 / 3),
    )
    # and on the ROC curve: at the vertex whose threshold it is
    curve_fpr, curve_tpr, thresholds = roc_curve(TARGET, PROBS, drop_intermediate=False)
    i = int(np.flatnonzero(thresholds == 0.45)[0])
    assert (curve_fpr[i], curve_tpr[i]) == pytest.approx((fpr, tpr))
    # PR: at 0.5, recall 2/3, precision 2/3; at 0.45 recall 1, precision 3/4
    assert pr_marker(TARGET, PROBS, 0.5) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert pr_marker(TARGET, PROBS, 0.45) == (1.0, 0.75)
    precision, recall, pr_thresholds = precision_recall_curve(TARGET, PROBS)
    j = int(np.flatnonzero(pr_thresholds == 0.45)[0])
    assert (recall[j], precision[j]) == (1.0, 0.75)
    assert np.isnan(pr_marker(TARGET, PROBS, 0.99)[1])  # nothing positive: no precision
