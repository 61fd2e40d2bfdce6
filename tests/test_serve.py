"""A trained run's logged model serves over REST as MLflow serves it (`mlflow models serve
--env-manager local`) and answers with the probabilities the run itself computed; `medpipe.compare
register=NAME` puts the best run's model in the Model Registry under an alias, and
`models:/NAME@champion` serves and loads the same model.

One tiny training with its model logged is shared by the module. The servers are real
subprocesses on a free loopback port, asked with real HTTP requests, and always stopped. The
default run starts one (models:/NAME@champion, ~7-10 s to answer /ping on 2 cores); serving
runs:/<id>/model directly starts another and is marked slow."""

from __future__ import annotations

import contextlib
import csv
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medpipe.errors import ConfigError

from conftest import TINY, invoke, run_cli, serving

EXPERIMENT = "serve"
MODEL = "medpipe-serve-test"
N_SAMPLES = 16


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI, for the fluent loaders (runs:/ and models:/ resolve through
    it); unset again afterwards."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def loaded(model_uri: str, tracking_uri: str, x: np.ndarray) -> np.ndarray:
    import mlflow
    import torch

    with tracking(tracking_uri):
        model = mlflow.pytorch.load_model(model_uri)
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run with its model logged, a better-ranked run without a model beside it, and
    the first test samples as stored (float32) with the probabilities the run kept for them."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("serve")
    started = time.monotonic()
    out = run_cli(
        "train",
        *[o for o in TINY if not o.startswith("log_model")],
        f"paths.root_dir={root}",
        f"experiment_name={EXPERIMENT}",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"tiny training with the model logged: {time.monotonic() - started:.1f} s")
    uri = f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([exp_id])

    # what the run kept: predictions/test.csv in its output folder, one row per test sample
    with (Path(run.data.params["paths.output_dir"]) / "predictions" / "test.csv").open() as f:
        kept = list(csv.DictReader(f))[:N_SAMPLES]
    (prob_column,) = [c for c in kept[0] if c.startswith("prob_")]  # binary: the positive class
    rows = np.array([int(r["row"]) for r in kept])
    (test_x,) = (root / "data" / "processed").glob("*/test_x.npy")
    x = np.load(test_x)[rows].astype(np.float32)  # stored scale: the model normalises itself
    kept_probs = np.array([float(r[prob_column]) for r in kept])

    # a run compare lists first (higher best val/auroc, same monitor) that logged no model
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    ahead = client.create_run(exp_id, run_name="no-model", tags=tags)
    for key in ("monitor", "monitor_mode"):
        client.log_param(ahead.info.run_id, key, run.data.params[key])
    client.log_metric(ahead.info.run_id, "best/val/auroc", 0.999)
    client.set_terminated(ahead.info.run_id, "FINISHED")
    return root, uri, run.info.run_id, x, kept_probs


@pytest.mark.slow  # a training run and a REST server; the default suite stays under 10 minutes
def test_compare_registers_the_best_model_and_its_alias_serves_it(trained, tmp_path):
    """The default run's one server: models:/NAME@champion, registered by compare, answers a
    REST request with the probabilities of the run's model (loaded by its run and by the alias)
    and with those the run kept for the same samples."""
    from mlflow import MlflowClient

    root, uri, run_id, x, kept_probs = trained
    out = run_cli(
        "compare", f"experiment={EXPERIMENT}", f"paths.root_dir={root}", f"register={MODEL}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # one line: name, version, alias, run id, sort value, the address to use
    (line,) = out.stdout.splitlines()
    m = re.fullmatch(
        rf"registered '{MODEL}' version (\d+), alias champion: run {run_id} \(.+\), "
        rf"val/auroc (\d\.\d{{4}}); use models:/{MODEL}@champion",
        line,
    )
    assert m, line
    # the better-ranked run without a model was passed over, with a note
    assert "passed over #1 no-model" in out.stderr and "no logged model" in out.stderr

    client = MlflowClient(uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == m.group(1) and version.run_id == run_id
    auroc = client.get_run(run_id).data.metrics["best/val/auroc"]
    assert version.tags["medpipe.run_id"] == run_id
    assert version.tags["medpipe.experiment"] == EXPERIMENT
    assert version.tags["medpipe.sort"] == "val/auroc"
    assert float(version.tags["medpipe.sort_value"]) == pytest.approx(auroc)
    assert float(m.group(2)) == pytest.approx(auroc, abs=1e-4)

    model_uri = f"models:/{MODEL}@champion"
    with serving(model_uri, uri, tmp_path) as (url, seconds):
        served = invoke(url, x)
        with pytest.raises(urllib.error.HTTPError) as refused:  # not the signature's shape
            invoke(url, x[:, 0])
        assert refused.value.code == 400 and "(-1, 1, 28, 28)" in refused.value.read().decode()
    print(f"mlflow models serve -m {model_uri}: answered /ping after {seconds:.1f} s")
    assert served.shape == (N_SAMPLES, 2)
    np.testing.assert_allclose(served.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served, loaded(model_uri, uri, x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(served, loaded(f"runs:/{run_id}/model", uri, x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(served[:, 1], kept_probs, atol=1e-5, rtol=0)


def test_registering_the_same_run_again_reuses_its_version(trained):
    from medpipe.evaluation.compare_runs import compare_runs
    from medpipe.tracking.registry import register_best

    root, uri, run_id, _, _ = trained
    first = register_best(compare_runs(uri, EXPERIMENT, top=None), f"{MODEL}-again")
    again = register_best(compare_runs(uri, EXPERIMENT, top=None), f"{MODEL}-again", alias=None)
    assert (first.run_id, first.reused, again.reused) == (run_id, False, True)
    assert again.version == first.version
    assert again.line().startswith(f"already registered as '{MODEL}-again' version 1, no alias")
    assert (
        again.uri == f"models:/{MODEL}-again/1" and first.uri == f"models:/{MODEL}-again@champion"
    )


@pytest.mark.slow
def test_the_run_model_served_over_rest_answers_as_the_run_did(trained, tmp_path):
    """`mlflow models serve -m runs:/<id>/model` (a server of its own: slow)."""
    root, uri, run_id, x, kept_probs = trained
    model_uri = f"runs:/{run_id}/model"
    with serving(model_uri, uri, tmp_path) as (url, seconds):
        served = invoke(url, x)
    print(f"mlflow models serve -m {model_uri}: answered /ping after {seconds:.1f} s")
    np.testing.assert_allclose(served, loaded(model_uri, uri, x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(served[:, 1], kept_probs, atol=1e-5, rtol=0)


def test_register_refuses_an_experiment_without_a_model(trained, tmp_path):
    from mlflow import MlflowClient

    from medpipe.evaluation.compare_runs import compare_runs
    from medpipe.tracking.registry import register_best

    uri = trained[1]  # the module's store (a new sqlite store costs seconds of migrations)
    client = MlflowClient(uri)
    exp_id = client.create_experiment("nomodel", (tmp_path / "artifacts").as_uri())
    for auroc in (0.7, 0.8):
        run = client.create_run(exp_id)
        client.log_metric(run.info.run_id, "val/auroc", auroc)
        client.set_terminated(run.info.run_id, "FINISHED")
    notes: list[str] = []
    with pytest.raises(ConfigError) as err:
        register_best(compare_runs(uri, "nomodel", top=None), MODEL, note=notes.append)
    (line,) = err.value.lines()
    assert line.startswith("register: no run of experiment 'nomodel' (2 listed) has a logged model")
    assert len(notes) == 2 and all("no logged model" in n for n in notes)
    assert not client.search_model_versions(f"run_id = '{run.info.run_id}'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["register=team/pneumonia"], "register: 'team/pneumonia' is not a valid registered model"),
        (["register=pneumonia", "alias=latest"], "alias: 'latest' is reserved by MLflow"),
        (["register=pneumonia", "alias=two words"], "alias: 'two words' is not a valid alias"),
        (["register=pneumonia", "tracking_uri=file:///tmp/mlruns"], "is a plain file store"),
        (["register=pneumonia", "runs=abc,def"], "register: registers the best run of a listing"),
    ],
)
def test_register_names_what_is_wrong_in_one_line(tmp_path, args, message):
    out = run_cli("compare", "experiment=x", f"paths.root_dir={tmp_path}", *args)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("medpipe: error: ") and message in line, out.stderr
    assert not (tmp_path / "logs" / "mlflow" / "mlflow.db").exists()  # refused before reading
