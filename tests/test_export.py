"""`python -m medpipe.export`: a checkpoint's model as ONNX or a torch.export program that takes
any batch size (and the lengths of padded records), checked against PyTorch on the test split
before it is kept, with metadata beside it; every failure is one line and leaves no file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medpipe.config import validate
from medpipe.data.processed import read_split
from medpipe.errors import ConfigError, DataError

from conftest import TINY, compose_config, run_cli


def export_cli(ckpt: Path, root: Path, *args: str):
    return run_cli("export", f"ckpt_path={ckpt}", f"paths.root_dir={root}", *args)


def error_lines(out) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.strip()]


def model_files(root: Path) -> list[Path]:
    return [p for s in ("*.onnx", "*.pt2", "*.json", "*.tmp*") for p in root.rglob(s)]


def eager_model(root: Path, ckpt: Path):
    """The checkpoint's inference model in PyTorch and its test split, as the export reads them."""
    from medpipe.evaluating import restore

    c = {
        "ckpt_path": str(ckpt),
        "paths": {"processed_dir": str(root / "data/processed"), "raw_dir": str(root / "data/raw")},
        "data": {},
    }
    _, folder, _, task = restore(c)
    return task.inference_model().eval(), read_split(folder, "test")


def runner(path: Path):
    """The exported file as a function (x, lengths) -> numpy: ONNX Runtime or torch.export."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x, lengths: session.run(None, {"x": x, "lengths": lengths})[0]
    program = torch.export.load(path).module()

    def run(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return program(torch.from_numpy(x), lengths=torch.from_numpy(lengths)).numpy()

    return run


def eager(model, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        kw = {} if lengths is None else {"lengths": torch.from_numpy(lengths)}
        return model(torch.from_numpy(x), **kw).numpy()


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    """The default model (the seeds' CNN on synthetic lesions), trained for one tiny epoch."""
    root = tmp_path_factory.mktemp("export")
    out = run_cli(
        "train", *TINY, "logger=none", f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root, root / "run" / "checkpoints" / "best.ckpt"


# -- ONNX and torch.export -------------------------------------------------------------------------
def test_onnx_export_is_checked_on_the_test_split_and_takes_any_batch_size(lesions, tmp_path):
    import onnxruntime as ort

    root, ckpt = lesions
    path = tmp_path / "model.onnx"
    out = export_cli(ckpt, root, "format=onnx", f"out={path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith(f"exported: {path} (format onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]

    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["format"] == "onnx" and meta["opset"] >= 18
    assert meta["n_checked"] == 128 and meta["max_abs_diff"] <= 1e-5  # the whole test split
    assert meta["inputs"] == [
        {
            "name": "x",
            "shape": ["batch", 1, 28, 28],
            "dtype": "float32",
            "description": "image intensities (batch, C=1, H=28, W=28), stored scale 0-255 "
            "(the uint8 values as float32)",
        }
    ]
    assert meta["output"]["name"] == "probabilities" and meta["output"]["shape"] == ["batch", 2]
    assert meta["classes"] == ["no lesion", "lesion"] and meta["task"] == "binary"
    assert (meta["kind"], meta["stored_shape"], meta["scale"]) == ("image", [1, 28, 28], 255.0)
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)["medpipe"]
    assert meta["operating_point"] == stored["operating_point"]
    assert meta["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["versions"]["onnxruntime"] == ort.__version__
    assert meta["versions"]["torch"] == torch.__version__

    # batches of sizes the export never saw, against the PyTorch model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    model, test = eager_model(root, ckpt)
    x = np.array(test.x[:5], dtype=np.float32)
    for batch in (x, x[:1]):
        (probs,) = session.run(None, {"x": batch})
        assert probs.shape == (len(batch), 2)
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
        assert np.abs(probs - eager(model, batch)).max() <= 1e-5


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_torch_export_program_loads_and_takes_any_batch_size(lesions, tmp_path):
    root, ckpt = lesions
    out = export_cli(ckpt, root, "format=torch_export", f"output_dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    path = tmp_path / "model.pt2"  # the default name in output_dir
    meta = json.loads((tmp_path / "model.pt2.json").read_text())
    assert meta["format"] == "torch_export" and meta["opset"] is None
    assert meta["max_abs_diff"] <= 1e-5 and meta["n_checked"] == 128
    assert meta["dynamic_axes"] == {"x": {"0": "batch"}}

    program = torch.export.load(path).module()
    model, test = eager_model(root, ckpt)
    x = np.array(test.x[:7], dtype=np.float32)
    with torch.no_grad():
        probs = program(torch.from_numpy(x)).numpy()
    assert probs.shape == (7, 2) and np.abs(probs - eager(model, x)).max() <= 1e-5


def test_a_difference_over_the_tolerance_is_an_error_and_leaves_no_file(lesions, tmp_path):
    from medpipe.exporting import export

    root, ckpt = lesions
    # ONNX Runtime's convolutions round differently from PyTorch's (about 1e-7 here)
    cfg = compose_config(
        root, [f"ckpt_path={ckpt}", f"out={tmp_path / 'm.onnx'}", "tolerance=1e-12"], "export"
    )
    with pytest.raises(DataError) as err:
        export(validate(cfg, "export"))
    (line,) = err.value.lines()
    assert line.startswith("format=onnx: the exported model differs from the PyTorch model by up")
    assert "(tolerance 1e-12); nothing written; try format=torch_export" in line
    assert list(tmp_path.iterdir()) == []


# -- errors ----------------------------------------------------------------------------------------
def test_a_file_that_is_not_a_medpipe_checkpoint_is_one_line(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"a": 1}, foreign)
    out = export_cli(foreign, tmp_path, f"out={tmp_path / 'model.onnx'}")
    assert out.returncode == 2
    assert error_lines(out) == [
        f"medpipe: error: {foreign}: not a medpipe checkpoint (no 'medpipe' config inside)"
    ]
    assert model_files(tmp_path) == []


def test_torchscript_is_not_offered_and_names_torch_export(tmp_path):
    ckpt = tmp_path / "any.ckpt"
    torch.save({"a": 1}, ckpt)
    out = export_cli(ckpt, tmp_path, "format=torchscript")
    assert out.returncode == 2
    assert error_lines(out) == [
        "medpipe: error: format: torchscript is not offered: TorchScript is deprecated in current "
        "PyTorch; use format=torch_export (a torch.export program, .pt2) or format=onnx"
    ]
    assert model_files(tmp_path) == []


def test_an_unknown_format_and_a_missing_checkpoint_are_named(tmp_path):
    cfg = compose_config(
        tmp_path, [f"ckpt_path={tmp_path / 'none.ckpt'}", "format=onxx", "tolerance=-1"], "export"
    )
    with pytest.raises(ConfigError) as err:
        validate(cfg, "export")
    lines = err.value.lines()
    assert (
        "format: unknown export format 'onxx' (did you mean 'onnx'?); choose one of onnx, "
        "torch_export" in lines
    )
    assert f"ckpt_path: file not found: {tmp_path / 'none.ckpt'}" in lines
    assert any(line.startswith("tolerance:") for line in lines)


# -- padded signals and the GAN (slow: each trains and exports a recurrent net or a GAN) ----------
@pytest.mark.slow
def test_a_padded_signal_model_takes_lengths_and_a_time_axis_only_where_verified(tmp_path):
    """An LSTM reading 5 samples per step (heart rate from 10 s of synthetic ECG): both formats
    take `lengths`; where the metadata says the time axis is open, shorter records run and agree
    with PyTorch, else the stored length is fixed in the file."""

    out = run_cli(
        "train",
        "experiment=ecg_hr_rnn",
        *TINY,
        "data.n_train=64",
        "data.n_val=32",
        "data.n_test=48",
        "model.net.hidden_size=8",
        "model.net.num_layers=1",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    model, test = eager_model(tmp_path, ckpt)
    x = np.array(test.x[:3], dtype=np.float32)  # 1000 samples each
    lengths = np.array([1000, 800, 600], np.int64)
    for fmt, name in (("onnx", "hr.onnx"), ("torch_export", "hr.pt2")):
        out = export_cli(ckpt, tmp_path, f"format={fmt}", f"out={tmp_path / name}")
        assert out.returncode == 0, out.stderr[-3000:]
        meta = json.loads((tmp_path / f"{name}.json").read_text())
        assert meta["max_abs_diff"] <= 1e-3 and meta["check"]["max_diff"] <= 1e-5
        assert meta["n_checked"] == 48 and meta["task"] == "regression"
        assert meta["inputs"][1] == {
            "name": "lengths",
            "shape": ["batch"],
            "dtype": "int64",
            "description": "each record's true length (samples along T); the padding after it "
            "is masked",
        }
        assert meta["output"]["name"] == "values" and meta["output"]["shape"] == ["batch"]
        time_open = meta["inputs"][0]["shape"] == ["batch", 1, "time"]
        assert time_open or meta["inputs"][0]["shape"] == ["batch", 1, 1000]
        assert meta["check"]["time_lengths"] == ([1000, 750] if time_open else [1000])
        run = runner(tmp_path / name)
        cuts = [x, x[..., :900]] if time_open else [x]
        for xb in cuts:
            lb = np.minimum(lengths, xb.shape[-1])
            got = run(xb, lb)
            assert got.shape == (3,)
            assert np.abs(got - eager(model, xb, lb)).max() <= 1e-3  # bpm, float32 near 100


@pytest.mark.slow
def test_a_gan_checkpoint_is_refused_in_one_line(tmp_path):
    out = run_cli(
        "train",
        "task_kind=gan",
        "model=gan",
        *TINY,
        "data.batch_size=32",
        "model.net.g_width=8",
        "model.net.d_width=8",
        "model.eval.feature_epochs=1",
        "model.eval.kid_subsets=2",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    out = export_cli(ckpt, tmp_path, f"out={tmp_path / 'gan.onnx'}")
    assert out.returncode == 2
    (line,) = error_lines(out)
    assert line.startswith(f"medpipe: error: ckpt_path: {ckpt}: task kind gan is not exported")
    assert not (tmp_path / "gan.onnx").exists() and not (tmp_path / "gan.onnx.json").exists()


def test_a_net_the_exporter_cannot_trace_is_one_line_naming_the_other_format(tmp_path, capsys):
    from torch import nn

    from medpipe.data.processed import Split
    from medpipe.exporting import Inputs, export_checked

    class DataDependent(nn.Module):
        """Python control flow on a value: torch.export cannot trace it."""

        def forward(self, x):
            return x.flatten(1)[:, :2].softmax(1) if x.sum() > 0 else torch.zeros(len(x), 2)

    split = Split(np.ones((4, 1, 3, 3), np.uint8), np.zeros(4, np.int64))
    for fmt, other, name in (("onnx", "torch_export", "m.onnx"), ("torch_export", "onnx", "m.pt2")):
        with pytest.raises(DataError) as err:
            export_checked(
                fmt, DataDependent(), split, Inputs(False, None, None), "probabilities",
                tmp_path / name, 256, 1e-5, "toy (DataDependent)",
            )  # fmt: skip
        (line,) = err.value.lines()
        assert line.startswith(
            f"format={fmt}: the exporter cannot handle the net toy (DataDependent) (torch.export: "
        ), line
        assert line.endswith(f"; try format={other}")
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""  # not the partial graph torch.export prints


def test_a_missing_checkpoint_is_one_line(tmp_path):
    out = export_cli(tmp_path / "none.ckpt", tmp_path)
    assert out.returncode == 2
    assert error_lines(out) == [f"medpipe: error: ckpt_path: file not found: {tmp_path}/none.ckpt"]
    assert model_files(tmp_path) == []
