"""Results you can trust, end to end: a trained run keeps its predictions, reports its test
metrics with intervals at an operating point chosen on the validation split, carries that point in
its checkpoint and exported model, and two runs are compared paired only on the same test rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medpipe.evaluation.metrics import ClassificationMetrics
from medpipe.evaluation.predictions import Predictions

from conftest import TINY, run_cli


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")


def _train(root: Path, *args: str):
    out = run_cli(
        "train",
        *TINY,
        "evaluation.bootstrap.n=300",
        f"paths.root_dir={root}",
        "experiment_name=trust",
        *args,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two nets on the same synthetic test set, and one on other data."""
    root = tmp_path_factory.mktemp("trust")
    first = _train(
        root, "model=cnn", "run_name=cnn", "log_model=true", "evaluation.explain.enabled=true"
    )
    _train(root, "model=linear", "run_name=linear", "threshold=max_f1", "calibration=none")
    _train(root, "model=linear", "run_name=other-data", "data.seed=7")
    client = _client(root)
    runs = {
        r.info.run_name: r
        for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
    }
    return root, runs, first


@pytest.mark.slow  # three trainings: about 45 s; the statistics have fast unit tests
def test_the_run_prints_intervals_and_its_operating_point(two_runs):
    _, _, out = two_runs
    text = out.stdout
    line = next(x for x in text.splitlines() if x.strip().startswith("test/auroc"))
    value, low, high = (float(v.strip("[],")) for v in line.split()[1:4])  # 0.9 [0.8, 0.95]
    assert low <= value <= high
    assert "(youden, chosen on the validation split)" in text


@pytest.mark.slow  # three trainings: about 45 s; the statistics have fast unit tests
def test_the_run_keeps_predictions_report_and_calibration(two_runs):
    root, runs, _ = two_runs
    run = runs["cnn"]
    m = run.data.metrics
    for key in ("test/auroc", "test/acc", "test/recall", "test/f1"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    for key in ("test/ece", "test/brier", "threshold", "temperature", "test_at_0.5/acc"):
        assert key in m, key
    assert "test/ece_uncalibrated" in m  # temperature scaling: before and after
    client = _client(root)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "predictions", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/reliability.png", "plots/pr.png", "plots/roc.png"} <= plots
    assert {"plots/explanations.png", "plots/pointing_game.png"} <= plots
    assert m["test/pointing_game_random"] <= 1 and "test/pointing_game_ig" in m
    local = client.download_artifacts(run.info.run_id, "predictions", str(root / "dl"))
    kept = Predictions.load(Path(local) / "test.csv")
    assert len(kept) == 128 and kept.threshold == pytest.approx(m["threshold"])
    # the kept predictions give the logged metrics again
    from medpipe.evaluation.stats import classification_metrics

    again = classification_metrics(kept.scores, kept.target, "binary", kept.classes, kept.threshold)
    assert again["auroc"] == pytest.approx(m["test/auroc"], abs=1e-6)
    assert again["acc"] == pytest.approx(m["test/acc"], abs=1e-6)
    html = (
        Path(client.download_artifacts(run.info.run_id, "report.html", str(root / "dl")))
    ).read_text()
    assert "data:image/png;base64," in html and "Test metrics" in html


@pytest.mark.slow  # three trainings: about 45 s; the statistics have fast unit tests
def test_checkpoint_and_exported_model_carry_the_operating_point(two_runs):
    root, runs, _ = two_runs
    run = runs["cnn"]
    first = min((root / "logs" / "runs").rglob("best.ckpt"), key=lambda p: p.stat().st_mtime)
    ckpt = torch.load(first, map_location="cpu", weights_only=False)  # the cnn run's
    op = ckpt["medpipe"]["operating_point"]
    assert op["threshold_rule"] == "youden"
    assert op["threshold"] == pytest.approx(run.data.metrics["threshold"])
    assert float(ckpt["state_dict"]["temperature"]) == pytest.approx(op["temperature"])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    assert float(model.threshold) == pytest.approx(op["threshold"])
    assert float(model.temperature) == pytest.approx(op["temperature"])


@pytest.mark.slow  # three trainings: about 45 s; the statistics have fast unit tests
def test_paired_comparison_of_two_runs_on_the_same_test_set(two_runs):
    root, runs, _ = two_runs
    a, b = runs["cnn"].info.run_id, runs["linear"].info.run_id
    out = run_cli("compare", f"runs={a[:8]},{b}", f"paths.root_dir={root}", "format=csv")
    assert out.returncode == 0, out.stderr[-2000:]
    rows: dict[str, list[str]] = {}  # the first row of each metric: its dedicated test
    for line in out.stdout.strip().splitlines()[1:]:
        rows.setdefault(line.split(",")[0], line.split(","))
    assert "DeLong" in rows["auroc"][-1] and "McNemar" in rows["acc"][-1]
    auroc_a, auroc_b, diff = (float(v) for v in rows["auroc"][1:4])
    assert auroc_a == pytest.approx(runs["cnn"].data.metrics["test/auroc"], abs=1e-6)
    assert diff == pytest.approx(auroc_a - auroc_b, abs=1e-9)
    assert 0 <= float(rows["auroc"][6]) <= 1


@pytest.mark.slow  # three trainings: about 45 s; the statistics have fast unit tests
def test_runs_on_different_test_sets_are_refused(two_runs):
    root, runs, _ = two_runs
    a, b = runs["cnn"].info.run_id, runs["other-data"].info.run_id
    out = run_cli("compare", f"runs={a},{b}", f"paths.root_dir={root}")
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()[-1]
    assert "not tested on the same test set" in err and "processed data differs" in err


def test_a_class_missing_from_a_split_is_left_out_of_macro_metrics():
    torch.manual_seed(0)
    probs = torch.rand(60, 3).softmax(1)
    target = torch.randint(0, 2, (60,))  # class 2 absent
    m = ClassificationMetrics("multiclass", ["a", "b", "c"])
    m.update(probs, target)
    values = m.compute()
    from sklearn.metrics import roc_auc_score

    present = [roc_auc_score((target == k).numpy(), probs[:, k].numpy()) for k in (0, 1)]
    assert float(values["auroc"]) == pytest.approx(np.mean(present), abs=1e-5)
    assert math.isnan(float(values["f1_c"]))
    recall = [
        float(((probs.argmax(1) == k) & (target == k)).sum() / (target == k).sum()) for k in (0, 1)
    ]
    assert float(values["recall"]) == pytest.approx(np.mean(recall), abs=1e-6)


def test_cross_validation_parent_has_an_interval_over_folds(tmp_path):
    from medpipe.crossval import summarise

    rows = [{"fold": i, "test/auroc": v, "val/auroc": v} for i, v in enumerate([0.8, 0.9, 0.85])]
    s = summarise(rows)
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t(0.975, 2) * std / sqrt(k)
    assert s["test/auroc_ci_low"] == pytest.approx(0.85 - half)
    assert s["test/auroc_ci_high"] == pytest.approx(0.85 + half)
    assert "val/auroc_ci_low" not in s
    json.dumps(s)
