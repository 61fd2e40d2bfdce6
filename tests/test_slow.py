"""Longer trainings (marked slow; CI runs them after the fast suite)."""

from __future__ import annotations

import json

import pytest

from medpipe.pipeline import train

pytestmark = pytest.mark.slow


def test_the_seeds_cnn_clearly_beats_a_linear_model_on_synthetic_lesions(make_cfg, tmp_path):
    """The default dataset is a real task: shape matters, brightness and position do not."""
    results = {}
    for model in ("cnn", "linear"):
        cfg = make_cfg(
            f"model={model}", "logger=none", "callbacks.progress_bar=none", "log_model=false"
        )
        train(cfg)
        results[model] = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert results["linear"]["test/auroc"] < 0.6
    assert results["cnn"]["test/auroc"] > 0.85
    assert results["cnn"]["test/acc"] - results["linear"]["test/acc"] > 0.2


def test_the_crnn_reads_the_order_of_frames_and_the_single_frame_cnn_cannot(make_cfg, tmp_path):
    """The synthetic cine task's label lives only in the change across frames."""
    results = {}
    for experiment in ("cine_crnn", "cine_cnn"):
        cfg = make_cfg(
            f"experiment={experiment}",
            "data.n_train=1000",
            "data.n_val=200",
            "data.n_test=300",
            "trainer.max_epochs=5",
            "logger=none",
            "callbacks.progress_bar=none",
        )
        train(cfg)
        results[experiment] = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert results["cine_crnn"]["test/auroc"] > 0.95
    assert results["cine_cnn"]["test/auroc"] < 0.65
    assert results["cine_crnn"]["test/acc"] - results["cine_cnn"]["test/acc"] > 0.3


def test_the_rnn_learns_the_heart_rate_of_synthetic_ecg(make_cfg, tmp_path):
    cfg = make_cfg(
        "experiment=ecg_hr_rnn",
        "data.n_train=400",
        "trainer.max_epochs=12",
        "logger=none",
        "callbacks.progress_bar=none",
        "log_model=false",
    )
    train(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test/mae"] < 4.0  # bpm over 50-120 bpm (the full recipe reaches < 1)
    assert metrics["test/r2"] > 0.9
