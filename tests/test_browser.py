"""End to end through a tracking server and the MLflow UI: a 2x2 sweep logs to `mlflow server`,
the runs table in headless Chromium shows the four runs with their val/f1 and datasets, and the
address training prints for a run opens that run in the UI's training view (not the GenAI one),
from which the experiment's runs table lists it with its datasets.

Needs Debian's Chromium at /usr/bin/chromium (installed by .ci/run) and the playwright package
(a dev extra); Playwright drives that browser, it never downloads one. The screenshot is written to
tmp_path and, when $MEDPIPE_TEST_ARTIFACTS names a folder, copied there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, REPO

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"
)


def _sweep(url: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "MLFLOW_TRACKING_URI": url}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medpipe.train",
            "-m",
            "model=cnn,linear",
            "optimizer.lr=1e-3,3e-4",
            "trainer.max_epochs=1",
            "data.n_train=256",
            "data.n_val=128",
            "data.n_test=128",
            "callbacks.progress_bar=plain",
            f"paths.root_dir={root}",
            "experiment_name=browser",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _shown_value(text: str) -> float:
    m = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)
    assert m, f"no number in cell {text!r}"
    return float(m.group(0))


def _decimals(text: str) -> int:
    m = re.search(r"\.(\d+)", text)
    return len(m.group(1)) if m else 0


def _close_assistant(page) -> None:
    """The MLflow Assistant panel opens on a first visit and covers part of the page."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count() and close.first.is_visible():
        close.first.click()


def _runs_link(page, exp_id: str):
    """The sidebar's link to the experiment's runs table in the training view."""
    return page.locator(
        f'a[href^="#/experiments/{exp_id}/runs?"][href*="workflowType=machine_learning"]'
    )


def _check_training_view(page, exp_id: str) -> None:
    """The sidebar shows the experiment's Machine learning ("Model training") pages, not the
    GenAI ones (overview, traces, sessions) MLflow 3.17 opens by default."""
    assert _runs_link(page, exp_id).count() >= 1, "no training-view Runs link in the sidebar"
    for genai in ("overview/usage", "chat-sessions", "evaluation-runs"):
        assert page.locator(f'a[href^="#/experiments/{exp_id}/{genai}"]').count() == 0, genai


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_sweep_runs_and_their_val_f1_show_in_the_mlflow_ui(mlflow_server, tmp_path):
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    out = _sweep(mlflow_server, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("browser")
    assert exp is not None
    # Sweep jobs are the runs with validation metrics (a sweep parent run, if any, has none).
    runs = [r for r in client.search_runs([exp.experiment_id]) if "val/f1" in r.data.metrics]
    combos = sorted(
        (r.data.params["model.name"], float(r.data.params["optimizer.lr"])) for r in runs
    )
    assert combos == [("cnn", 3e-4), ("cnn", 1e-3), ("linear", 3e-4), ("linear", 1e-3)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    expected = {r.info.run_id: (r.info.run_name, r.data.metrics["val/f1"]) for r in runs}
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    for r in runs:  # each job's data, by split
        names = sorted(d.dataset.name for d in r.inputs.dataset_inputs)
        assert names == [f"synthetic_lesions/{s}" for s in ("test", "train", "val")]

    # Each job printed its run's address in the UI of the server it logged to.
    printed = dict(re.findall(r"^MLflow run (\w+): (\S+)$", out.stdout, re.M))
    assert set(printed) == set(expected), out.stdout[-3000:]
    for run_id, url in printed.items():
        assert url == (
            f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning"
        )

    # The runs table (training view), filtered to runs with val/f1 (so sweep children are listed
    # flat) and sorted by it; the val/f1 column is added through the column selector, as a user
    # would.
    query = "workflowType=machine_learning&searchFilter=" + quote("metrics.`val/f1` >= 0")
    query += "&orderByKey=" + quote("metrics.`val/f1`") + "&orderByAsc=false"
    page_url = f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs?{query}"
    shot = tmp_path / "mlflow_ui.png"
    run_shot = tmp_path / "mlflow_run.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 900})
            page.set_default_timeout(30_000)
            # The address training printed, in a browser that never chose a view (MLflow 3.17
            # then opens experiments in the GenAI one): the run's page, in the training view.
            run_id = sorted(printed)[0]
            name = expected[run_id][0]
            page.goto(printed[run_id])
            page.get_by_role("heading", name=name, exact=True).wait_for()
            _close_assistant(page)
            assert page.get_by_text(run_id, exact=True).count() >= 1  # "Run ID" of the page
            _check_training_view(page, exp.experiment_id)
            # its Datasets section: "<data>/<split> (<digest>)"
            dataset = re.compile(r"^synthetic_lesions/(train|val|test) \([0-9a-f]{36}\)$")
            page.get_by_text(dataset).first.wait_for()
            page.screenshot(path=str(run_shot), full_page=True)

            # Its sidebar's Runs link: the experiment's runs table (not GenAI traces), where the
            # job is nested under its sweep's parent run, with its datasets.
            _runs_link(page, exp.experiment_id).first.click()
            page.get_by_text(re.compile(r"^\d+ matching runs?$")).wait_for()
            assert f"/experiments/{exp.experiment_id}/runs?" in page.url, page.url
            assert "workflowType=machine_learning" in page.url, page.url
            _check_training_view(page, exp.experiment_id)
            parent = client.get_run(run_id).data.tags["mlflow.parentRunId"]
            name_col = '[col-id="attributes.`Run Name`"]'
            page.locator(f'[role="row"][row-id="{parent}"] {name_col} button').first.click()
            row = page.locator(f'[role="row"][row-id="{run_id}"]')
            row.locator(name_col).get_by_text(name).wait_for()
            data = row.locator('[col-id="attributes.`Dataset`"]').inner_text()
            assert "synthetic_lesions/" in data, data

            page.goto(page_url)
            page.get_by_text("4 matching runs").wait_for()
            _close_assistant(page)
            _check_training_view(page, exp.experiment_id)
            page.get_by_role("button", name="Columns", exact=True).click()
            page.get_by_placeholder("Search columns").fill("val/f1")
            title = page.locator('[class*="tree-title"]').filter(has_text=re.compile(r"^val/f1$"))
            node = page.locator('[class*="tree-treenode"]').filter(has=title)
            node.locator('[class*="tree-checkbox"]').first.click()
            page.keyboard.press("Escape")
            f1_cells = page.locator('[role="gridcell"][col-id="metrics.`val/f1`"]')
            page.wait_for_function(
                "n => document.querySelectorAll("
                '\'[role="gridcell"][col-id="metrics.`val/f1`"]\').length >= n',
                arg=4,
            )
            page.screenshot(path=str(shot), full_page=True)

            shown_ids = set(
                page.locator('[role="row"][row-id]').evaluate_all(
                    "rows => rows.map(r => r.getAttribute('row-id'))"
                )
            )
            assert shown_ids == set(expected), "the table lists exactly the four sweep runs"
            assert f1_cells.count() == 4
            body = page.inner_text("body")
            for run_id, (name, f1) in expected.items():
                row = page.locator(f'[role="row"][row-id="{run_id}"]')
                name_cell = row.locator('[col-id="attributes.`Run Name`"]').inner_text()
                assert name in name_cell.split(), (name, name_cell)  # after the colour label
                assert name in body
                cell = row.locator('[col-id="metrics.`val/f1`"]').inner_text().strip()
                # The UI may print the full float or a rounded one: equal up to what it shows.
                shown = _shown_value(cell)
                tolerance = 0.5 * 10 ** -_decimals(cell) if "." in cell else 0
                assert abs(shown - f1) <= tolerance + 1e-9, (name, cell, f1)
                # the Dataset column lists the job's data (the UI shows the first input and +2)
                data = row.locator('[col-id="attributes.`Dataset`"]').inner_text()
                assert "synthetic_lesions/" in data, (name, data)
        finally:
            browser.close()

    assert shot.stat().st_size > 10_000 and run_shot.stat().st_size > 10_000
    if folder := os.environ.get("MEDPIPE_TEST_ARTIFACTS"):
        dest = REPO / folder
        dest.mkdir(parents=True, exist_ok=True)
        for f in (shot, run_shot):
            shutil.copy(f, dest / f.name)
