"""`python -m medpipe.compare` lists the runs of an experiment or of one sweep, sorted by a metric,
with the parameters that differ between them; bad input is one line naming the key, exit 2.

The runs are written with MlflowClient into a real sqlite store laid out as training lays it out
(params are flattened config keys, sweep jobs carry `mlflow.parentRunId`, runs carry their task
kind's main metrics in the tag `medpipe.main_metrics`). The defaults (metric columns, sort key and
direction) come from those tags and the `monitor`/`monitor_mode` params. Runs trained since
medpipe logs `best/val/<metric>` and `best_epoch` show those values in their val/ columns; older
runs show their last epoch's value, marked."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from medpipe.errors import ConfigError
from medpipe.evaluation.compare_runs import compare_runs, render

from conftest import run_cli

T0 = 1_790_000_000_000  # ms; runs are created one minute apart in the order below
CLASSIFICATION = "val/auroc,val/acc,val/f1,test/auroc,test/acc,test/f1"
REGRESSION = "val/mae,val/rmse,val/r2,test/mae,test/rmse,test/r2"

# name, model, lr, status, metrics, parent ("sweep" for the sweep's children)
RUNS = [
    (
        "cnn-a",
        "cnn",
        "0.001",
        "FINISHED",
        {"val/auroc": 0.80, "val/loss": 0.50, "val/f1": 0.70},
        None,
    ),
    (
        "cnn-b",
        "cnn",
        "0.0003",
        "FINISHED",
        {"val/auroc": 0.90, "val/loss": 0.40, "val/f1": 0.75},
        None,
    ),
    (
        "linear-a",
        "linear",
        "0.001",
        "FINISHED",
        {"val/auroc": 0.60, "val/loss": 0.70, "val/f1": 0.55},
        None,
    ),
    ("linear-b", "linear", "0.0003", "FAILED", {"train/loss": 0.9}, None),
    (
        "sweep-cnn",
        "cnn",
        "0.01",
        "FINISHED",
        {"val/auroc": 0.85, "val/loss": 0.45, "test/auroc": 0.83},
        "sweep",
    ),
    (
        "sweep-linear",
        "linear",
        "0.01",
        "FINISHED",
        {"val/auroc": 0.65, "val/loss": 0.66, "test/auroc": 0.61},
        "sweep",
    ),
]
# The runs' best epochs: their val/ values above are logged as best/val/<metric> (the best
# epoch's), and their last epoch's val/ values sort the other way round. linear-a is a run from
# before medpipe logged best/val/*: its val/ values are its last epoch's.
BEST_EPOCHS = {"cnn-a": 4, "cnn-b": 7, "sweep-cnn": 2, "sweep-linear": 9}


def _with_best_epoch(name: str, metrics: dict[str, float]) -> dict[str, float]:
    if name not in BEST_EPOCHS:
        return metrics
    out = {k: v for k, v in metrics.items() if not k.startswith("val/")}
    for key, value in metrics.items():
        if key.startswith("val/"):
            out[f"best/{key}"] = value
            out[key] = round(value + 0.3 if key.endswith("loss") else 1.5 - value, 4)
    return {**out, "best_epoch": BEST_EPOCHS[name]}


def _params(
    name: str, model: str, lr: str, monitor: str = "val/auroc", mode: str = "max"
) -> dict[str, str]:
    out = f"/runs/{name}"
    return {
        "seed": "42",
        "monitor": monitor,
        "monitor_mode": mode,
        "model.name": model,
        "model.net._target_": f"medpipe.models.nets.{model.upper()}",
        "optimizer.lr": lr,
        "optimizer._target_": "torch.optim.Adam",
        "trainer.max_epochs": "1",
        "paths.root_dir": "/project",
        "paths.output_dir": out,  # differs in every run, like the Hydra output folder
        "callbacks.model_checkpoint.dirpath": f"{out}/checkpoints",  # a per-run path
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    """A project root whose embedded store holds experiment 'cmp' (4 runs + a sweep of 2) and an
    empty experiment 'empty'. Returns (root, uri, run ids by name plus 'sweep')."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    root = tmp_path_factory.mktemp("compare")
    db = root / "logs" / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = client.create_experiment("cmp", artifact_location=(root / "artifacts").as_uri())
    client.create_experiment("empty", artifact_location=(root / "artifacts").as_uri())
    ids: dict[str, str] = {}
    parent = client.create_run(
        exp, run_name="sweep-1", start_time=T0 + 3 * 60_000, tags={"medpipe.sweep": "true"}
    )
    ids["sweep"] = parent.info.run_id
    for i, (name, model, lr, status, metrics, in_sweep) in enumerate(RUNS):
        tags = {
            "hydra.overrides": f"model={model} optimizer.lr={lr} trainer.max_epochs=1",
            "medpipe.main_metrics": CLASSIFICATION,
            "medpipe.task_kind": "classification",
        }
        if in_sweep:
            tags["mlflow.parentRunId"] = ids["sweep"]
        run = client.create_run(exp, run_name=name, start_time=T0 + i * 60_000, tags=tags)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, T0, 0) for k, v in _with_best_epoch(name, metrics).items()],
            params=[Param(k, v) for k, v in _params(name, model, lr).items()],
            tags=[RunTag("model.name", model)],
        )
        client.set_terminated(run.info.run_id, status)
        ids[name] = run.info.run_id
    client.set_terminated(ids["sweep"], "FINISHED")
    return root, uri, ids


def _names(comparison) -> list[str]:
    return [r.info.run_name for r in comparison.runs]


def test_classification_runs_default_to_their_main_metrics_sorted_by_their_monitor(store):
    _, uri, _ = store
    c = compare_runs(uri, "cmp", top=None)
    # sort=auto: the runs' monitor param (val/auroc), descending as their monitor_mode (max) says
    assert c.sort == "val/auroc" and c.order == "desc"
    assert _names(c) == ["cnn-b", "sweep-cnn", "cnn-a", "sweep-linear", "linear-a", "linear-b"]
    # metrics=None: the classification main metrics, in their order, those some run has
    assert c.metrics == ["val/auroc", "val/f1", "test/auroc"]


def test_lists_every_training_run_sorted_by_the_metric_descending(store):
    _, uri, _ = store
    c = compare_runs(uri, "cmp", sort="val/auroc")
    # The sweep's parent is a summary, not a training; runs without the metric come last.
    assert _names(c) == ["cnn-b", "sweep-cnn", "cnn-a", "sweep-linear", "linear-a", "linear-b"]
    assert c.total == 6 and c.order == "desc" and c.sweep is None


def test_loss_keys_sort_ascending_and_order_overrides(store):
    _, uri, _ = store
    assert _names(compare_runs(uri, "cmp", sort="val/loss"))[:3] == ["cnn-b", "sweep-cnn", "cnn-a"]
    assert _names(compare_runs(uri, "cmp", sort="val/auroc", order="asc"))[:2] == [
        "linear-a",
        "sweep-linear",
    ]


def test_top_cuts_the_list_and_params_are_those_that_differ_among_the_listed_runs(store):
    _, uri, _ = store
    c = compare_runs(uri, "cmp", sort="val/auroc", top=2)
    assert _names(c) == ["cnn-b", "sweep-cnn"] and c.total == 6
    # cnn-b and sweep-cnn share the model: only the learning rate differs between the two rows.
    assert c.params == ["optimizer.lr"]
    c = compare_runs(uri, "cmp", sort="val/auroc", top=3)
    # Keys set on the command line first; paths and per-run folders never count as differences.
    assert c.params == ["optimizer.lr"]
    everything = compare_runs(uri, "cmp", sort="val/auroc", top=None)
    # model.net._target_ differs too, but only as the model does: the model.name column says it.
    assert everything.params == ["optimizer.lr", "model.name"]
    assert everything.metrics == ["val/auroc", "val/f1", "test/auroc"]
    assert compare_runs(uri, "cmp", sort="val/loss").metrics[-1] == "val/loss"


def test_sweep_lists_only_its_children_by_id_prefix_or_latest(store):
    _, uri, ids = store
    latest = compare_runs(uri, "cmp", sweep="latest")
    assert _names(latest) == ["sweep-cnn", "sweep-linear"] and latest.sweep == ids["sweep"]
    by_prefix = compare_runs(uri, "cmp", sweep=ids["sweep"][:8], sort="test/auroc", order="asc")
    assert _names(by_prefix) == ["sweep-linear", "sweep-cnn"]
    assert by_prefix.params == ["model.name"]
    explicit = compare_runs(uri, "cmp", sweep="latest", params=["model.net._target_", "seed"])
    assert explicit.params == ["model.net._target_", "seed"]


def test_markdown_and_csv(store):
    _, uri, ids = store
    md = render(compare_runs(uri, "cmp", sort="val/auroc", top=2), "md").splitlines()
    assert md[0].startswith("experiment 'cmp' (all runs, sqlite:") and "top 2 of 6" in md[0]
    assert md[2] == (
        "| # | run | run_id | status | optimizer.lr | best epoch | val/auroc | val/f1 | test/auroc |"
    )
    assert md[3] == "|---:|---|---|---|---:|---:|---:|---:|---:|"
    assert md[4] == (
        f"| 1 | cnn-b | {ids['cnn-b'][:8]} | FINISHED | 0.0003 | 7 | 0.9000 | 0.7500 | - |"
    )
    # a paragraph after the table says what the val/ columns hold
    assert md[6:] == [
        "",
        "val/\\*: each run's best epoch (column 'best epoch', on its monitor), whose checkpoint "
        "gave test/\\*",
    ]

    rows = list(csv.DictReader(io.StringIO(render(compare_runs(uri, "cmp"), "csv"))))
    assert [r["run"] for r in rows][:2] == ["cnn-b", "sweep-cnn"]
    assert rows[0]["run_id"] == ids["cnn-b"], "csv carries the full run id"
    assert float(rows[0]["val/auroc"]) == 0.9 and rows[0]["test/auroc"] == ""
    assert rows[0]["best_epoch"] == "7" and rows[0]["val_last_epoch"] == ""
    assert rows[-1]["status"] == "FAILED" and rows[-1]["val/auroc"] == ""
    # linear-a, from before best/val/*: its last epoch's values, and the csv says which they are
    linear_a = next(r for r in rows if r["run"] == "linear-a")
    assert linear_a["best_epoch"] == "" and float(linear_a["val/auroc"]) == 0.6
    assert linear_a["val_last_epoch"] == "val/auroc val/f1"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"experiment": "nope"}, "experiment_name: no MLflow experiment 'nope' at sqlite:"),
        ({"sort": "val/nope"}, "sort: unknown key 'val/nope'"),
        ({"experiment": "empty"}, "experiment_name: experiment 'empty' has no runs"),
        ({"sweep": "ffff"}, "sweep: no run with id 'ffff' in experiment 'cmp'"),
        ({"top": 0}, "top: a positive number of rows, or null for all (got 0)"),
        ({"order": "up"}, "order: 'up' is not one of auto, desc, asc"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(store, kwargs, expected):
    _, uri, _ = store
    kwargs = {"experiment": "cmp", **kwargs}
    with pytest.raises(ConfigError) as err:
        compare_runs(uri, **kwargs)
    assert len(err.value.lines()) == 1 and err.value.lines()[0].startswith(expected)


def test_errors_say_what_is_allowed(store):
    _, uri, ids = store
    with pytest.raises(ConfigError, match="experiments there: Default, cmp, empty"):
        compare_runs(uri, "nope")
    with pytest.raises(ConfigError, match=r"metrics of these runs: .*val/auroc.*val/loss"):
        compare_runs(uri, "cmp", sort="val/nope")
    with pytest.raises(
        ConfigError, match=f"sweep parent runs there: {ids['sweep'][:8]} \\(sweep-1\\)"
    ):
        compare_runs(uri, "cmp", sweep="ffff")


def test_cli_prints_an_aligned_table(store):
    root, _, ids = store
    out = run_cli("compare", "experiment=cmp", f"paths.root_dir={root}", "top=3")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("experiment 'cmp' (all runs, sqlite:") and "top 3 of 6" in lines[0]
    header, rule, *rows, note = lines[1:]
    assert header.split() == [
        "#",
        "run",
        "run_id",
        "status",
        "optimizer.lr",
        "best",
        "epoch",
        "val/auroc",
        "val/f1",
        "test/auroc",
    ]
    assert [r.split()[1] for r in rows] == ["cnn-b", "sweep-cnn", "cnn-a"]
    assert rows[0].split()[2] == ids["cnn-b"][:8]
    # Numbers are right-aligned under their header; val/ are the best epoch's values.
    end = header.index("val/auroc") + len("val/auroc")
    assert [r[end - 6 : end] for r in rows] == ["0.9000", "0.8500", "0.8000"]
    end = header.index("best epoch") + len("best epoch")
    assert [r[end - 1 : end] for r in rows] == ["7", "2", "4"]
    assert note.startswith("val/*: each run's best epoch (column 'best epoch'")
    assert not (root / "logs" / "runs" / "compare" / ".hydra").exists()


def test_cli_csv_of_the_latest_sweep(store):
    root, _, ids = store
    out = run_cli(
        "compare", "experiment=cmp", f"paths.root_dir={root}", "sweep=latest", "format=csv"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["run"], r["run_id"]) for r in rows] == [
        ("sweep-cnn", ids["sweep-cnn"]),
        ("sweep-linear", ids["sweep-linear"]),
    ]


def test_cli_errors_exit_2_with_one_line(store):
    root, _, _ = store
    out = run_cli("compare", "experiment=cmp", f"paths.root_dir={root}", "sort=val/nope")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "medpipe: error: sort: unknown key 'val/nope' (no listed run has that metric or parameter); "
        "metrics of these runs: val/auroc, val/f1, val/loss, test/auroc; or a parameter such as "
        "optimizer.lr"
    ]
    out = run_cli("compare", "experiment=cmp", f"paths.root_dir={root / 'elsewhere'}")
    assert out.returncode == 2 and out.stderr.startswith(
        "medpipe: error: tracking: no MLflow store"
    )
    assert len(out.stderr.strip().splitlines()) == 1


# -- defaults from the runs' own tags and params ---------------------------------------------------
def _run(client, exp: str, name: str, minute: int, tags: dict, params: dict, metrics: dict) -> str:
    from mlflow.entities import Metric, Param

    run = client.create_run(exp, run_name=name, start_time=T0 + minute * 60_000, tags=tags)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, T0, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _regression_metrics(mae: float) -> dict[str, float]:
    return {
        "val/mae": mae,
        "val/rmse": 1.5 * mae,
        "val/r2": 1 - mae,
        "val/loss": mae * mae,
        "test/mae": mae + 0.05,
        "test/rmse": 1.5 * mae + 0.05,
        "test/r2": 0.95 - mae,
        "best/val/mae": mae,
    }


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> tuple[Path, str]:
    """A store with experiments 'reg' (regression runs, monitor val/mae, min), 'old' (runs from
    before the main-metrics tag), 'mixed' (a classification and a newer regression run) and 'cv'
    (a tagged and an untagged cross-validation parent, with their folds) and 'unscored' (a run
    without metrics)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("kinds")
    db = root / "logs" / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)

    def experiment(name: str) -> str:
        return client.create_experiment(name, artifact_location=(root / "artifacts").as_uri())

    reg_tags = {"medpipe.main_metrics": REGRESSION, "medpipe.task_kind": "regression"}
    cls_tags = {"medpipe.main_metrics": CLASSIFICATION, "medpipe.task_kind": "classification"}
    exp = experiment("reg")
    for i, (name, lr, mae) in enumerate((("r-a", "0.001", 0.5), ("r-b", "3e-4", 0.3))):
        params = _params(name, "cnn", lr, monitor="val/mae", mode="min")
        _run(client, exp, name, i, reg_tags, params, _regression_metrics(mae))
    params = _params("r-c", "cnn", "0.01", monitor="val/mae", mode="min")
    _run(client, exp, "r-c", 2, reg_tags, params, _regression_metrics(0.8))

    exp = experiment("old")
    for i, (name, auroc) in enumerate((("o-a", 0.7), ("o-b", 0.9), ("o-c", 0.8))):
        metrics = {
            "val/auroc": auroc,
            "val/loss": 1 - auroc,
            "test/auroc": auroc - 0.05,
            "test/loss": 1.1 - auroc,
            "train/loss": 0.5,
            "best/val/auroc": auroc,
        }
        _run(client, exp, name, i, {}, _params(name, "cnn", f"{i + 1}e-3"), metrics)

    exp = experiment("mixed")
    metrics = {"val/auroc": 0.8, "val/acc": 0.7, "test/auroc": 0.75}
    _run(client, exp, "classifier", 0, cls_tags, _params("classifier", "cnn", "0.001"), metrics)
    params = _params("regressor", "cnn", "0.001", monitor="val/mae", mode="min")
    _run(client, exp, "regressor", 1, reg_tags, params, _regression_metrics(0.4))

    exp = experiment("unscored")  # a run that failed before logging any metric
    _run(client, exp, "crashed", 0, cls_tags, _params("crashed", "cnn", "0.001"), {})

    exp = experiment("epochs")  # val/ of the best epoch (best/val/*) vs the last epoch's
    for i, (name, best, last, metrics) in enumerate(EPOCH_RUNS):
        logged = {**{f"val/{k}": v for k, v in last.items()}, **metrics}
        logged |= {f"best/val/{k}": v for k, v in best.items()}
        _run(client, exp, name, i, cls_tags, _params(name, "cnn", "0.001"), logged)

    exp = experiment("cv")
    for i, (name, auroc, tags) in enumerate((("cv-new", 0.8, cls_tags), ("cv-old", 0.9, {}))):
        metrics = {"best/val/auroc": auroc, "best/val/auroc_std": 0.01}
        for key, value in (("val/auroc", auroc), ("test/auroc", auroc - 0.1), ("test/acc", 0.7)):
            metrics.update({key: value, f"{key}_std": 0.02})
        parent = _run(
            client,
            exp,
            name,
            2 * i,
            {**tags, "medpipe.cv": "true", "cv.folds": "2"},
            _params(name, "cnn", "0.001"),
            metrics,
        )
        for fold in range(2):
            fold_tags = {**tags, "mlflow.parentRunId": parent, "cv.fold": str(fold)}
            fold_metrics = {"val/auroc": auroc, "test/auroc": auroc - 0.1, "test/acc": 0.7}
            params = _params(f"{name}-fold{fold}", "cnn", "0.001")
            _run(client, exp, f"{name}-fold{fold}", 2 * i + 1, fold_tags, params, fold_metrics)
    return root, uri


# name, best epoch's val/ (best/val/*), last epoch's val/, other metrics
EPOCH_RUNS = [
    (
        "new-a",
        {"auroc": 0.90, "acc": 0.80},
        {"auroc": 0.70, "acc": 0.75},
        {"best_epoch": 3, "test/auroc": 0.88, "test/acc": 0.79},
    ),
    (
        "new-b",
        {"auroc": 0.85, "acc": 0.78},
        {"auroc": 0.80, "acc": 0.79},
        {"best_epoch": 5, "test/auroc": 0.84, "test/acc": 0.77},
    ),
    # trained before medpipe logged best/val/* and best_epoch: best/<monitor> only
    ("old-c", {"auroc": 0.95}, {"auroc": 0.60, "acc": 0.70}, {"test/auroc": 0.91}),
    ("older-d", {}, {"auroc": 0.65, "acc": 0.72}, {"test/auroc": 0.62}),  # no best/ at all
]


def test_val_columns_show_the_best_epoch_and_mark_last_epoch_values(kinds):
    _, uri = kinds
    c = compare_runs(uri, "epochs")
    # sorted by val/auroc of the best epoch (the last epoch's would give new-b, new-a first)
    assert c.sort == "val/auroc" and _names(c) == ["old-c", "new-a", "new-b", "older-d"]
    assert c.metrics == ["val/auroc", "val/acc", "test/auroc", "test/acc"]
    rows = c.rows()
    assert list(rows[0])[4:6] == ["best_epoch", "val/auroc"]
    assert [r["best_epoch"] for r in rows] == [None, 3, 5, None]
    assert [r["val/auroc"] for r in rows] == [0.95, 0.90, 0.85, 0.65]
    assert [r["val/acc"] for r in rows] == [0.70, 0.80, 0.78, 0.72]
    assert [c.last_epoch_cells(run) for run in c.runs] == [
        ["val/acc"],
        [],
        [],
        ["val/auroc", "val/acc"],
    ]
    assert _names(compare_runs(uri, "epochs", sort="val/acc")) == [
        "new-a",
        "new-b",
        "older-d",
        "old-c",
    ]

    table = render(c, "table").splitlines()
    header, rows_text, notes = table[1], table[3:7], table[7:]
    assert header.split()[4:8] == ["best", "epoch", "val/auroc", "val/acc"]
    cells = [line.split()[4:] for line in rows_text]
    assert cells == [
        ["-", "0.9500", "0.7000*", "0.9100", "-"],
        ["3", "0.9000", "0.8000", "0.8800", "0.7900"],
        ["5", "0.8500", "0.7800", "0.8400", "0.7700"],
        ["-", "0.6500*", "0.7200*", "0.6200", "-"],
    ]
    # marked and unmarked values keep their decimals aligned
    assert len({line.index(".", header.index("val/acc")) for line in rows_text}) == 1
    assert notes == [
        "val/*: each run's best epoch (column 'best epoch', on its monitor), whose checkpoint "
        "gave test/*",
        "* the last epoch's value: the run logged no best/val/* (trained before medpipe logged "
        "them)",
    ]

    md = render(c, "md").splitlines()
    assert md[2].startswith("| # | run | run_id | status | best epoch | val/auroc | val/acc |")
    assert md[4].endswith("| - | 0.9500 | 0.7000\\* | 0.9100 | - |")
    assert md[-1].startswith("\\* the last epoch's value")

    csv_rows = list(csv.DictReader(io.StringIO(render(c, "csv"))))
    assert [r["best_epoch"] for r in csv_rows] == ["", "3", "5", ""]
    assert [r["val_last_epoch"] for r in csv_rows] == ["val/acc", "", "", "val/auroc val/acc"]
    assert [float(r["val/auroc"]) for r in csv_rows] == [0.95, 0.90, 0.85, 0.65]


def test_cli_table_with_best_epochs(kinds):
    root, _ = kinds
    out = run_cli("compare", "experiment=epochs", f"paths.root_dir={root}", "top=2")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].endswith("top 2 of 4, sorted by val/auroc desc")
    assert [line.split()[1] for line in lines[3:5]] == ["old-c", "new-a"]
    assert lines[5].startswith("val/*: each run's best epoch")
    assert lines[6].startswith("* the last epoch's value")


def test_regression_runs_default_to_their_main_metrics_sorted_ascending_by_their_monitor(kinds):
    _, uri = kinds
    c = compare_runs(uri, "reg")
    assert c.metrics == ["val/mae", "val/rmse", "val/r2", "test/mae", "test/rmse", "test/r2"]
    # monitor val/mae with monitor_mode min: lowest error first
    assert c.sort == "val/mae" and c.order == "asc"
    assert _names(c) == ["r-b", "r-a", "r-c"]
    assert c.caption().endswith("sorted by val/mae asc")
    # a named sort key keeps the old rule: descending unless it ends in /loss
    named = compare_runs(uri, "reg", sort="val/mae")
    assert named.order == "desc" and _names(named) == ["r-c", "r-a", "r-b"]
    assert compare_runs(uri, "reg", sort="val/loss").order == "asc"
    # order=desc overrides the monitor's mode; metrics=[...] names the columns (plus the sort key)
    assert _names(compare_runs(uri, "reg", order="desc"))[0] == "r-c"
    named = compare_runs(uri, "reg", metrics=["test/r2", "val/nope"])
    assert named.metrics == ["test/r2", "val/mae"]


def test_old_runs_without_the_tag_show_the_val_and_test_metrics_they_have(kinds):
    _, uri = kinds
    c = compare_runs(uri, "old")
    assert c.metrics == ["val/auroc", "val/loss", "test/auroc", "test/loss"]
    assert c.sort == "val/auroc" and c.order == "desc"  # their monitor params
    assert _names(c) == ["o-b", "o-c", "o-a"]


def test_runs_with_different_monitors_sort_by_their_first_main_metric(kinds):
    _, uri = kinds
    c = compare_runs(uri, "mixed")
    # union of both tags in order of first appearance, the newest run first
    assert c.metrics == [
        "val/mae",
        "val/rmse",
        "val/r2",
        "test/mae",
        "test/rmse",
        "test/r2",
        "val/auroc",
        "val/acc",
        "test/auroc",
    ]
    # val/mae is the regressor's monitor, minimised: ascending; the classifier has no val/mae
    assert c.sort == "val/mae" and c.order == "asc"
    assert _names(c) == ["regressor", "classifier"]


def test_cv_compares_the_parents_with_each_main_metric_followed_by_its_std(kinds):
    _, uri = kinds
    c = compare_runs(uri, "cv", cv=True)
    assert _names(c) == ["cv-old", "cv-new"] and c.sort == "val/auroc" and c.order == "desc"
    assert c.metrics == [
        "val/auroc",
        "val/auroc_std",
        "test/auroc",
        "test/auroc_std",
        "test/acc",
        "test/acc_std",
    ]
    # a parent's val/ are fold means of best-epoch values already: shown as logged, unmarked
    assert not c.best_epoch_column and "best_epoch" not in c.rows()[0]
    table = render(c, "table").splitlines()
    assert table[-1] == (
        "val/*: the mean over the folds of each fold's best-epoch value (_std: their standard "
        "deviation)"
    )
    assert "*" not in "".join(table[3:-1])
    assert "val_last_epoch" not in render(c, "csv").splitlines()[0]
    folds = compare_runs(uri, "cv", top=None)  # without cv: the folds (parents are left out)
    assert sorted(_names(folds)) == ["cv-new-fold0", "cv-new-fold1", "cv-old-fold0", "cv-old-fold1"]


def test_auto_sort_without_any_metric_says_so_and_a_parameter_still_sorts(kinds):
    _, uri = kinds
    with pytest.raises(ConfigError) as err:
        compare_runs(uri, "unscored")
    assert err.value.lines() == [
        "sort: auto: the listed runs logged no metric to sort by (monitor val/auroc); name a "
        "parameter, e.g. sort=optimizer.lr"
    ]
    c = compare_runs(uri, "unscored", sort="optimizer.lr")
    assert _names(c) == ["crashed"] and c.metrics == [] and c.params == ["optimizer.lr"]


def test_cli_defaults_for_regression_runs(kinds):
    root, _ = kinds
    out = run_cli("compare", "experiment=reg", f"paths.root_dir={root}", "format=csv")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0])[4:] == [
        "optimizer.lr",
        "val/mae",
        "val/rmse",
        "val/r2",
        "test/mae",
        "test/rmse",
        "test/r2",
        "val_last_epoch",
    ]
    assert [r["run"] for r in rows] == ["r-b", "r-a", "r-c"]
    # runs from before best/val/* (best/<monitor> only): their other val/ are the last epoch's
    assert rows[0]["val_last_epoch"] == "val/rmse val/r2"
    out = run_cli("compare", "experiment=reg", f"paths.root_dir={root}", "top=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[0].endswith("top 1 of 3, sorted by val/mae asc")
