"""Stratified k-fold cross-validation: fold construction, and `cv.folds=3` through the CLI with a
parent MLflow run that holds the mean and standard deviation of every fold's test metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.folds import make_folds
from medpipe.errors import ConfigError
from medpipe.tracking.mlflow_run import fold_digest

from conftest import evaluate_cli, run_cli


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_folds_are_disjoint_cover_everything_and_stratified(task):
    rng = np.random.default_rng(0)
    y = (
        rng.choice(4, size=303, p=[0.5, 0.2, 0.2, 0.1])
        if task != "regression"
        else rng.normal(75, 15, 303)
    )
    folds = make_folds(y, task, 5, 0.1, seed=3)
    assert len(folds) == 5
    tests = np.concatenate([f["test"] for f in folds])
    assert sorted(tests.tolist()) == list(range(303))  # every sample tested exactly once
    for f in folds:
        parts = [set(f[s].tolist()) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sum(len(p) for p in parts) == 303
    if task == "multiclass":
        overall = np.bincount(y, minlength=4) / len(y)
        for f in folds:
            share = np.bincount(y[f["test"]], minlength=4) / len(f["test"])
            assert np.abs(share - overall).max() < 0.03  # stratified: the class balance holds
    else:
        means = [y[f["test"]].mean() for f in folds]
        assert np.ptp(means) < 4.0  # quantile strata keep the folds' targets alike
    again = make_folds(y, task, 5, 0.1, seed=3)
    assert all((a["test"] == b["test"]).all() for a, b in zip(folds, again, strict=True))


def test_the_windows_of_a_record_stay_in_one_part_of_every_fold():
    rng = np.random.default_rng(1)
    records = np.repeat([f"A{i:03d}" for i in range(60)], rng.integers(1, 5, 60))
    label_of = {r: int(rng.integers(0, 3)) for r in np.unique(records)}
    y = np.array([label_of[r] for r in records])
    folds = make_folds(y, "multiclass", 5, 0.1, seed=0, groups=records)
    tested = np.concatenate([f["test"] for f in folds])
    assert sorted(tested.tolist()) == list(range(len(y)))
    for f in folds:
        owners = [set(records[f[s]].tolist()) for s in ("train", "val", "test")]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    # one sample per record: the same folds as without groups
    single = np.array([f"r{i}" for i in range(len(y))])
    plain, grouped = (
        make_folds(y, "multiclass", 5, 0.1, 0),
        make_folds(y, "multiclass", 5, 0.1, 0, single),
    )
    assert all((a["test"] == b["test"]).all() for a, b in zip(plain, grouped, strict=True))


def test_too_few_samples_of_a_class_is_a_clear_error():
    y = np.array([0] * 20 + [1] * 3)
    with pytest.raises(ConfigError, match=r"cv.folds: 5 stratified folds .* class 1 has 3"):
        make_folds(y, "binary", 5, 0.1, seed=0)


def test_cv_config_errors_are_one_line_each(tmp_path):
    out = run_cli(
        "train", "cv.folds=1", f"paths.root_dir={tmp_path}", "test_after_fit=false", timeout=120
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert any("cv.folds: 1 fold is no cross-validation" in line for line in lines), out.stderr
    out = run_cli("train", "cv.folds=3", "test_after_fit=false", f"paths.root_dir={tmp_path}")
    assert out.returncode == 2 and "test_after_fit: cross-validation tests every fold" in out.stderr
    assert not (tmp_path / "logs" / "mlflow").exists()  # nothing tracked for a bad config


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_three_fold_cross_validation_end_to_end(tmp_path):
    out = run_cli(
        "train",
        "cv.folds=3",
        "data.n_train=120",
        "data.n_val=60",
        "data.n_test=60",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "log_model=false",
        "callbacks.progress_bar=plain",
        f"paths.root_dir={tmp_path}",
        "experiment_name=cv",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "cross-validation over 3 folds" in out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cv")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("medpipe.cv") == "true"]
    assert len(parents) == 1 and len(runs) == 4
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["cv.fold"] for r in children) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for key in ("test/auroc", "test/acc", "test/f1"):
        values = np.array([r.data.metrics[key] for r in children])
        assert parent.data.metrics[key] == pytest.approx(values.mean(), abs=1e-9)
        assert parent.data.metrics[f"{key}_std"] == pytest.approx(values.std(ddof=1), abs=1e-9)
        low, high = parent.data.metrics[f"{key}_ci_low"], parent.data.metrics[f"{key}_ci_high"]
        assert low < values.mean() < high  # the t-interval of the mean over the 3 folds
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"cv_summary.md", "cv_summary.csv", "folds.json", "metrics.json"} <= artifacts

    out_dir = Path(out.stdout.split("outputs: ")[-1].split()[0])
    folds = json.loads((out_dir / "folds.json").read_text())
    tested = sorted(i for f in folds for i in f["test"])
    assert tested == list(range(240))  # the pooled train+val+test samples, each tested once
    kept_rows = [
        int(line.split(",")[0])
        for i in range(3)
        for line in (out_dir / f"fold{i}" / "predictions" / "test.csv").read_text().splitlines()[1:]
    ]
    assert sorted(kept_rows) == tested

    # datasets in MLflow: the parent used the pooled data, each fold its own rows of it
    processed = parent.data.tags["data.processed_sha256"]
    (pooled,) = parent.inputs.dataset_inputs
    assert {t.key: t.value for t in pooled.tags} == {"mlflow.data.context": "pooled"}
    assert (pooled.dataset.name, pooled.dataset.digest) == ("synthetic_lesions", processed[:36])
    assert json.loads(pooled.dataset.profile)["num_rows"] == 240
    digests = set()
    for run in children:
        fold = folds[int(run.data.tags["cv.fold"])]
        inputs = {t.value: i.dataset for i in run.inputs.dataset_inputs for t in i.tags}
        for split, context in (("train", "train"), ("val", "validation"), ("test", "test")):
            ds = inputs[context]
            assert ds.name == f"synthetic_lesions/{split}"
            assert json.loads(ds.profile)["num_rows"] == len(fold[split])
            assert ds.digest == fold_digest(processed, split, np.array(fold[split]))
            digests.add(ds.digest)
    assert len(digests) == 9 and processed[:36] not in digests  # every fold's splits differ
    rows = list(csv.DictReader((out_dir / "cv_summary.csv").open()))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "mean", "std"]
    for i in range(3):
        assert (out_dir / f"fold{i}" / "checkpoints" / "best.ckpt").is_file()
    # a fold's checkpoint remembers its fold: evaluate tests it on that fold's rows again
    fold1 = next(r for r in children if r.data.tags["cv.fold"] == "1")
    again = evaluate_cli(out_dir / "fold1" / "checkpoints" / "best.ckpt", tmp_path)
    for key in ("test/auroc", "test/acc", "test/loss"):
        assert again[key] == pytest.approx(fold1.data.metrics[key], abs=1e-5)

    # compare cv=true lists the cross-validation (its parent), each mean with its std
    listed = run_cli(
        "compare", "experiment=cv", "cv=true", "format=csv", f"paths.root_dir={tmp_path}"
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = list(csv.DictReader(listed.stdout.splitlines()))
    assert [r["run_id"] for r in rows] == [parent.info.run_id]
    assert float(rows[0]["test/auroc_std"]) == pytest.approx(
        parent.data.metrics["test/auroc_std"], rel=1e-6
    )
