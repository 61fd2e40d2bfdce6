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
