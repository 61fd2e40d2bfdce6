"""Long records read in windows (data.preprocess.window.mode=random): training reads a random
window per record, inference reads every window covering the record and combines their outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medpipe.data.signal import preprocess_records, window_starts
from medpipe.models.windows import (
    WindowReading,
    combine,
    inference_windows,
    random_windows,
    read_windows,
)


class Probe(nn.Module):
    """A net whose output depends on the values and the valid length of each window."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.lin = nn.Linear(2, k)

    def forward(self, x, lengths=None):
        t = x.shape[-1]
        lengths = torch.full((len(x),), t) if lengths is None else lengths
        valid = torch.arange(t)[None] < lengths[:, None]
        mean = (x[:, 0] * valid).sum(1) / lengths
        first = x[:, 0, 0]
        return self.lin(torch.stack([mean, first], 1))


@pytest.mark.parametrize("n", [1, 5, 10, 11, 23, 30, 37])
@pytest.mark.parametrize("length,stride", [(10, 10), (10, 4), (7, 3)])
def test_inference_windows_are_the_sliding_windows(n, length, stride):
    t = 40
    x = torch.randn(1, 2, t)
    w, wl, valid = inference_windows(x, torch.tensor([n]), length, stride)
    starts_expected = window_starts(n, length, stride)
    assert int(valid.sum()) == len(starts_expected)
    got = w.reshape(1, -1, 2, length)[0][valid[0]]
    for window, s in zip(got, starts_expected, strict=True):
        end = min(s + length, n)
        assert torch.equal(window[:, : end - s], x[0, :, s:end])
    assert (wl == min(n, length)).all()


def test_random_windows_stay_inside_the_record():
    torch.manual_seed(0)
    x = torch.arange(100.0).repeat(4, 1, 1)  # value = time index
    lengths = torch.tensor([100, 60, 25, 10])
    for _ in range(50):
        w, wl = random_windows(x, lengths, 25)
        assert w.shape == (4, 1, 25) and wl.tolist() == [25, 25, 25, 10]
        start = w[:, 0, 0].long()
        assert (start + wl <= lengths).all()  # the valid part never reaches the padding
        assert torch.equal(w[:, 0, 1:] - w[:, 0, :-1], torch.ones(4, 24))  # contiguous
    # every start of a long record is drawn over many steps
    starts = {int(random_windows(x[:1], lengths[:1], 25)[0][0, 0, 0]) for _ in range(2000)}
    assert starts == set(range(76))


@pytest.mark.parametrize("how", ["mean", "max"])
def test_window_aggregation_equals_averaging_by_hand(how):
    torch.manual_seed(1)
    net = Probe().eval()
    records = [torch.randn(1, n) for n in (95, 30, 8)]
    t = 95
    x = torch.zeros(3, 1, t)
    for i, r in enumerate(records):
        x[i, :, : r.shape[-1]] = r
    lengths = torch.tensor([r.shape[-1] for r in records])
    reading = WindowReading(length=30, stride=20, aggregate=how)
    with torch.no_grad():
        raw = read_windows(net, x, lengths, reading, "softmax", training=False)
        for i, r in enumerate(records):
            n = r.shape[-1]
            probs = []
            for s in window_starts(n, 30, 20):
                seg = r[:, s : s + 30]
                padded = torch.zeros(1, 1, 30)
                padded[0, :, : seg.shape[-1]] = seg
                probs.append(net(padded, torch.tensor([seg.shape[-1]])).softmax(-1)[0])
            by_hand = torch.stack(probs).mean(0) if how == "mean" else torch.stack(probs).amax(0)
            by_hand = by_hand / by_hand.sum()  # softmax of log-probabilities renormalises
            assert torch.allclose(raw[i].softmax(-1), by_hand, atol=1e-6)


def test_padding_does_not_change_a_record_prediction():
    torch.manual_seed(2)
    net = Probe().eval()
    record = torch.randn(1, 1, 77)
    reading = WindowReading(length=20, stride=10)
    with torch.no_grad():
        alone = read_windows(net, record, torch.tensor([77]), reading, "softmax", False)
        padded = torch.cat([record, 5 + torch.randn(1, 1, 60)], -1)  # junk beyond the end
        other = torch.randn(1, 1, 137)  # a longer record in the same batch
        batch = torch.cat([padded, other])
        both = read_windows(net, batch, torch.tensor([77, 137]), reading, "softmax", False)
    assert torch.allclose(alone[0], both[0], atol=1e-6)


def test_combine_ignores_invalid_windows():
    values = torch.tensor([[1.0], [3.0], [100.0], [2.0], [-50.0], [7.0]])
    valid = torch.tensor([[True, True, False], [True, False, True]])
    assert combine(values, valid, "mean").flatten().tolist() == [2.0, 4.5]
    assert combine(values, valid, "max").flatten().tolist() == [3.0, 7.0]


def test_random_mode_stores_whole_records():
    records = [np.random.default_rng(0).normal(size=(1, n)) for n in (50, 500, 120)]
    pre = {"window": {"mode": "random", "length": 200}}
    x, lengths, index = preprocess_records(records, 100.0, pre)
    assert x.shape == (3, 1, 500) and lengths.tolist() == [50, 500, 120]
    assert index.tolist() == [0, 1, 2]
    x, lengths, _ = preprocess_records(records[:1], 100.0, pre)
    assert x.shape == (1, 1, 200)  # at least one window long


# -- through train, evaluate and predict ---------------------------------------------------------
@pytest.mark.slow  # three commands (about 40 s on 2 cores)
def test_a_record_is_predicted_from_all_its_windows_in_evaluate_and_predict(tmp_path):
    """Records of 5-40 s read in 10-s windows: the run's kept test predictions hold one row per
    record, `evaluate` gives the same metrics, and `predict` on the records' .mat files gives the
    same probabilities, from every window covering the record."""
    import csv
    import json

    from test_ecg_data import write_physionet

    from conftest import evaluate_cli, find_checkpoint, run_cli

    folder = write_physionet(tmp_path / "pn", n=20)
    root = tmp_path / "root"
    out = run_cli(
        "train",
        "experiment=ecg_af_crnn",
        f"data.path={folder}",
        "data.preprocess.window.mode=random",
        "data.preprocess.window.length=1000",
        "data.preprocess.window.stride=500",
        "data.split=[0.5,0.2,0.3]",
        "model.net.channels=[8,8]",
        "model.net.rnn.hidden_size=8",
        "trainer.max_epochs=2",
        "logger=none",
        "evaluation.explain.enabled=false",
        "callbacks.progress_bar=none",
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with open(root / "run" / "predictions" / "test.csv", newline="") as f:
        kept = list(csv.DictReader(f))
    ids = [r["record_id"] for r in kept]
    assert len(ids) == len(set(ids)) == 6  # one row per test record, not per window

    ckpt = find_checkpoint(root / "run")
    trained = json.loads((root / "run" / "metrics.json").read_text())
    evaluated = evaluate_cli(ckpt, root)
    assert evaluated["test/f1_score"] == pytest.approx(trained["test/f1_score"], abs=1e-9)

    files = [str(folder / f"{i}.mat") for i in ids]
    res = run_cli(
        "predict",
        f"ckpt_path={ckpt}",
        f"inputs={folder}/A*.mat",
        f"output={tmp_path / 'p.csv'}",
        f"paths.root_dir={root}",
    )
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    with open(tmp_path / "p.csv", newline="") as f:
        predicted = {Path(r["input"]).stem: r for r in csv.DictReader(f)}
    assert len(predicted) == 20 and all(Path(p).is_file() for p in files)
    seconds = {5: 500, 12: 1200, 35: 3500, 40: 4000}  # samples at 100 Hz
    for row in kept:
        got = predicted[row["record_id"]]
        for key in ("prob_n", "prob_a", "prob_o", "prob_noisy"):
            assert float(got[key]) == pytest.approx(float(row[key]), abs=1e-5)
        n = seconds[[5, 12, 35, 40][int(row["record_id"][1:]) % 4 - 1]]
        assert int(got["windows"]) == len(window_starts(n, 1000, 500))


def test_aggregate_changes_the_fingerprint_only_where_it_is_read(tmp_path):
    """`window.aggregate` is read by the task in random mode only: elsewhere the processed
    folder (its fingerprint) stays what it was before the key existed."""
    from medpipe.data.sources import make_source
    from test_ecg_data import physionet_cfg, write_physionet

    folder = write_physionet(tmp_path / "pn", n=8)

    def describe(**window):
        cfg = physionet_cfg(folder)
        cfg["preprocess"]["window"] = window
        return make_source(cfg, "").describe()

    fixed = {"mode": "fixed", "length": 3000}
    assert describe(**fixed) == describe(**fixed, aggregate="mean")
    random = {"mode": "random", "length": 1000}
    assert describe(**random, aggregate="mean") != describe(**random, aggregate="max")
