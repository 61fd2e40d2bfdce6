"""Hostile input: a checkpoint or a config is a file like any other, and reading one must not run
code from it. Checkpoints are read weights-only (tensors and plain containers; a pickle that would
call a function is refused in one line); a `_target_` (or `data.source`, `task_kind`) outside the
allowed packages is refused before anything is imported. Each attack here would create a marker
file if it ran; the marker must not exist afterwards."""

from __future__ import annotations

import ast
import os
import pathlib
import pickle
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, run_cli

EXT = REPO / "tests" / "extending"
REFUSED = "(not a plain medpipe checkpoint; weights_only loading"


class _Touch:
    """Unpickling this calls `pathlib.Path.touch(marker)`, or `os.system("touch marker")`."""

    def __init__(self, marker: Path, shell: bool = False):
        self.marker, self.shell = marker, shell

    def __reduce__(self):
        if self.shell:
            return (os.system, (f"touch {self.marker}",))
        return (pathlib.Path.touch, (self.marker,))


def crafted_checkpoint(folder: Path, marker: Path, shell: bool = True) -> Path:
    """A file laid out like a medpipe checkpoint whose unpickling would create `marker`."""
    path = folder / "evil.ckpt"
    torch.save({"state_dict": {}, "medpipe": {"config": {}, "meta": _Touch(marker, shell)}}, path)
    return path


def error_lines(out) -> list[str]:
    return out.stderr.strip().splitlines()


def assert_refused_in_one_line(out, path: Path, marker: Path) -> None:
    lines = error_lines(out)
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("medpipe: error: ") and f"{path}: refused: " in lines[0]
    assert REFUSED in lines[0]
    assert not marker.exists(), "the checkpoint's code ran"


# -- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ("evaluate",),
        pytest.param(("explain",), marks=pytest.mark.slow),
        pytest.param(("export",), marks=pytest.mark.slow),
        pytest.param(("predict", "inputs={tmp}"), marks=pytest.mark.slow),
    ],
    ids=lambda c: c[0],
)
def test_a_crafted_checkpoint_is_refused_by_every_command_and_runs_nothing(tmp_path, command):
    marker = tmp_path / "MARKER"
    evil = crafted_checkpoint(tmp_path, marker)
    name, *rest = command
    args = [a.format(tmp=tmp_path) for a in rest]
    out = run_cli(name, f"ckpt_path={evil}", f"paths.root_dir={tmp_path}", *args)
    assert_refused_in_one_line(out, evil, marker)
    assert "it names posix.system" in out.stderr  # what the file would have called


def test_every_reader_goes_through_the_weights_only_loader(tmp_path):
    """evaluate/explain/export (restore), predict, a GAN generator for synthetic data, the GAN's
    feature classifier and the sampling API: the same refusal, in-process (the commands above
    print it as their one line)."""
    from medpipe.data.generated import open_generator
    from medpipe.errors import DataError
    from medpipe.evaluating import restore
    from medpipe.evaluation.gan_quality import load_feature_classifier
    from medpipe.predicting import from_checkpoint
    from medpipe.tasks.gan import load_generator

    marker = tmp_path / "MARKER"
    evil = crafted_checkpoint(tmp_path, marker, shell=False)
    readers = {
        "restore": lambda: restore({"ckpt_path": str(evil)}),
        "predict": lambda: from_checkpoint(str(evil)),
        "generator": lambda: open_generator(str(evil), "data.synthetic.generator"),
        "sampling": lambda: load_generator(str(evil)),
        "features": lambda: load_feature_classifier(evil, None),
    }
    for name, read in readers.items():
        with pytest.raises(DataError, match=rf"{evil}: refused: .*weights_only loading"):
            read()
        assert not marker.exists(), name


@pytest.mark.slow
def test_a_crafted_gan_generator_is_refused_before_data_is_generated(tmp_path):
    marker = tmp_path / "MARKER"
    evil = crafted_checkpoint(tmp_path, marker, shell=False)
    out = run_cli(
        "train",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        *TINY,
        f"data.synthetic.generator={evil}",
        "data.synthetic.per_class=4",
    )
    assert_refused_in_one_line(out, evil, marker)
    assert error_lines(out)[0].startswith(f"medpipe: error: data.synthetic.generator: {evil}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_plain_pickle_of_any_protocol_is_refused(tmp_path, protocol):
    from medpipe.checkpoints import load_checkpoint
    from medpipe.errors import DataError

    marker = tmp_path / "MARKER"
    path = tmp_path / f"p{protocol}.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "medpipe": _Touch(marker)}, protocol))
    with pytest.raises(DataError, match=r"refused: .*weights_only loading"):
        load_checkpoint(path)
    assert not marker.exists()


def crafted_config() -> dict:
    return {
        "allowed_targets": ["os"],  # a checkpoint cannot widen the list
        "model": {"net": {"_target_": "os.system", "command": "touch MARKER"}},
        "optimizer": {"_target_": "subprocess.Popen", "lr": 0.1},
        "callbacks": {"x": {"_target_": "builtins.eval"}},
        "augmentation": {"train": [{"_target_": "posix.system", "command": "touch MARKER"}]},
        "data": {"source": "os.system"},
        "task_kind": "pty.spawn",
    }


def test_a_config_inside_a_checkpoint_is_refused_key_by_key(tmp_path):
    from medpipe.checkpoints import load_checkpoint
    from medpipe.errors import ConfigError

    path = tmp_path / "config.ckpt"
    torch.save({"state_dict": {}, "medpipe": {"config": crafted_config(), "meta": {}}}, path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    keys = [line.split(": ")[2] for line in err.value.lines()]  # "<path>: its saved config: key"
    assert keys == [
        "model.net._target_",
        "optimizer._target_",
        "callbacks.x._target_",
        "augmentation.train[0]._target_",
        "data.source",
        "task_kind",
    ]
    assert all(" refused: outside the allowed packages" in line for line in err.value.lines())


@pytest.mark.slow
def test_a_config_inside_a_checkpoint_is_held_to_the_allow_list(tmp_path):
    """weights-only loading stops code in the pickle; the saved config could still name
    os.system for medpipe to build: each such key is one line, and nothing is built."""
    ckpt = {
        "state_dict": {},
        "medpipe": {
            "meta": {},
            "config": {
                "allowed_targets": ["os"],  # a checkpoint cannot widen the list
                "model": {"net": {"_target_": "os.system", "command": "touch MARKER"}},
                "optimizer": {"_target_": "subprocess.Popen", "lr": 0.1},
                "callbacks": {"x": {"_target_": "builtins.eval"}},
            },
        },
    }
    path = tmp_path / "config.ckpt"
    torch.save(ckpt, path)
    out = run_cli("evaluate", f"ckpt_path={path}", f"paths.root_dir={tmp_path}")
    assert out.returncode == 2
    lines = error_lines(out)
    assert [line.split(" refused:")[0].split("config: ")[-1] for line in lines] == [
        "model.net._target_: 'os.system'",
        "optimizer._target_: 'subprocess.Popen'",
        "callbacks.x._target_: 'builtins.eval'",
    ]
    assert all(line.startswith(f"medpipe: error: {path}: its saved config: ") for line in lines)
    assert "pass that if you trust it" not in out.stderr  # os can never be allowed
    assert not (REPO / "MARKER").exists() and not (tmp_path / "MARKER").exists()


def test_a_saved_allow_list_is_named_but_not_used(tmp_path):
    from medpipe.checkpoints import load_checkpoint
    from medpipe.errors import ConfigError

    config = {"allowed_targets": ["my_nets"], "model": {"net": {"_target_": "my_nets.TinyCNN"}}}
    path = tmp_path / "mine.ckpt"
    torch.save({"state_dict": {}, "medpipe": {"config": config, "meta": {}}}, path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    assert "'my_nets.TinyCNN' refused" in str(err.value)
    assert "trained with allowed_targets=[my_nets]: pass that if you trust it" in str(err.value)


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    root = tmp_path_factory.mktemp("genuine")
    out = run_cli(
        "train",
        *TINY,
        "logger=none",
        "callbacks=early_stopping",
        "callbacks.model_checkpoint.save_last=true",
        "scheduler=multistep",  # its state holds a Counter
        "evaluation.bootstrap.n=0",
        "data.n_train=128",
        "data.n_val=64",
        "data.n_test=64",
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root, root / "run" / "checkpoints"


def test_what_medpipe_saves_loads_weights_only(genuine):
    """Model, loops, callbacks (ModelCheckpoint, EarlyStopping), optimizer and scheduler states,
    the config, metadata and operating point: all plain, so no type needs allow-listing."""
    from medpipe.checkpoints import SAFE_GLOBALS, load_checkpoint

    _, folder = genuine
    for path in (folder / "best.ckpt", folder / "last.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        ckpt = load_checkpoint(path)
        assert {"state_dict", "callbacks", "optimizer_states", "lr_schedulers"} <= set(ckpt)
        assert ckpt["medpipe"]["operating_point"]
    assert SAFE_GLOBALS == []


@pytest.mark.slow
def test_a_genuine_checkpoint_still_evaluates(genuine):
    root, folder = genuine
    out = run_cli(
        "evaluate",
        f"ckpt_path={folder / 'best.ckpt'}",
        f"paths.root_dir={root}",
        f"output_dir={root / 'eval'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (root / "eval" / "metrics.json").is_file()


def test_every_checkpoint_read_in_medpipe_is_weights_only():
    """torch.load and Lightning's `trainer.fit/test/validate/predict(ckpt_path=...)` (which hands
    its `weights_only` to torch.load; None would defer to torch's default and to
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) always say weights_only=True."""
    offenders = []
    for path in sorted((REPO / "src" / "medpipe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            kw = {k.arg: k.value for k in node.keywords}
            loads = name == "load" and ast.unparse(node.func.value) == "torch"
            lightning = name in ("fit", "test", "validate", "predict") and "ckpt_path" in kw
            if not (loads or lightning):
                continue
            value = kw.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


# -- _target_ --------------------------------------------------------------------------------------
def test_targets_outside_the_allowed_packages_are_refused_one_line_each_and_never_run(tmp_path):
    marker = tmp_path / "MARKER"
    out = run_cli(
        "train",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        "model.net._target_=os.system",
        f"+model.net.command='touch {marker}'",
        "+callbacks.x._target_=builtins.eval",
        "optimizer._target_=subprocess.Popen",
        f"+augmentation.train=[{{_target_: posix.system, command: 'touch {marker}'}}]",
        "+trainer.plugins={_target_: torch.hub.load, repo_or_dir: evil/repo}",
    )
    assert out.returncode == 2
    lines = error_lines(out)
    keys = {line.split(": ")[2] for line in lines}  # "medpipe: error: <key>: ..."
    assert keys == {
        "model.net._target_",
        "callbacks.x._target_",
        "optimizer._target_",
        "augmentation.train[0]._target_",
        "trainer.plugins._target_",
    }
    assert len(lines) == len(keys)  # one line per offending key
    outside = [line for line in lines if "torch.hub" not in line]
    for line in outside:
        assert "refused: outside the allowed packages (medpipe, torch, lightning" in line
        assert "allowed_targets=[my_package]" in line  # how to extend it
    assert "'torch.hub.load' refused: it loads or runs code" in out.stderr
    assert not marker.exists()
    assert not (tmp_path / "logs" / "mlflow").exists() and not (tmp_path / "data").exists()


def test_import_paths_in_data_source_and_task_kind_are_refused_too(make_cfg):
    from medpipe.config import validate
    from medpipe.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("data.source=os.system", "task_kind=pty.spawn"))
    lines = err.value.lines()
    assert [line for line in lines if line.startswith(("data.source", "task_kind"))] == [
        line for line in lines if "refused" in line
    ]
    assert len([line for line in lines if line.startswith("data.source")]) == 1
    assert any(line.startswith("data.source: 'os.system' refused: outside") for line in lines)
    assert any(line.startswith("task_kind: 'pty.spawn' refused: outside") for line in lines)


def test_a_refused_target_is_never_imported(tmp_path, monkeypatch):
    """Even asked directly (registry.locate, as the net, source and task-kind registries do), a
    module outside the list is not imported: its top-level code would run."""
    from medpipe.registry import locate
    from medpipe.targets import RefusedTarget, set_allowed

    marker = tmp_path / "MARKER"
    (tmp_path / "evil_module.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Net: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RefusedTarget, match="outside the allowed packages"):
        locate("evil_module.Net")
    assert not marker.exists() and "evil_module" not in sys.modules
    set_allowed(["evil_module"])
    try:
        assert locate("evil_module.Net").__name__ == "Net"  # allowed: imported
        assert marker.exists()
    finally:
        set_allowed([])
        sys.modules.pop("evil_module", None)


def test_the_standard_library_and_code_loaders_cannot_be_allowed(make_cfg):
    from medpipe.config import validate
    from medpipe.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("allowed_targets=[os,subprocess,torch.hub,'a b']"))
    assert err.value.lines() == [
        "allowed_targets[0]: 'os' is part of Python's standard library; only your own packages "
        "can be allowed",
        "allowed_targets[1]: 'subprocess' is part of Python's standard library; only your own "
        "packages can be allowed",
        "allowed_targets[2]: 'torch.hub' holds code loaders medpipe never runs",
        "allowed_targets[3]: 'a b' is not a module path (e.g. my_nets, lab.models)",
    ]


def test_your_own_module_is_refused_until_its_package_is_allowed(make_cfg):
    from medpipe.config import validate
    from medpipe.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(make_cfg("model.net._target_=my_nets.TinyCNN"))
    assert err.value.lines() == [
        "model.net._target_: 'my_nets.TinyCNN' refused: outside the allowed packages (medpipe, "
        "torch, lightning, pytorch_lightning, torchmetrics, monai, albumentations); to use a "
        "module of your own, add its package with allowed_targets=[my_package] (README: "
        "Hostile input)"
    ]
    try:  # allowed: validation passes (my_nets is imported only when the net is checked)
        c = validate(make_cfg("model.net._target_=my_nets.TinyCNN", "allowed_targets=[my_nets]"))
        assert c["allowed_targets"] == ["my_nets"]
    finally:
        from medpipe.targets import set_allowed

        set_allowed([])


@pytest.mark.slow
def test_your_own_net_trains_with_allowed_targets(tmp_path):
    """README "Extending medpipe": a net in your module (tests/extending/my_nets.py), its package
    added to allowed_targets, trains through the command line."""
    args = [
        f"hydra.searchpath=[file://{EXT / 'conf'}]",
        "model=tiny_cnn",
        "logger=none",
        "trainer.fast_dev_run=1",
        "data.n_train=64",
        "data.n_val=32",
        "data.n_test=32",
        "callbacks.progress_bar=none",
        "evaluation.explain.enabled=false",
        f"paths.root_dir={tmp_path}",
    ]
    env = {"PYTHONPATH": str(EXT)}
    out = run_cli("train", *args, env=env)
    assert out.returncode == 2 and "'my_nets.TinyCNN' refused" in out.stderr
    out = run_cli("train", *args, "allowed_targets=[my_nets]", env=env)
    assert out.returncode == 0, out.stderr[-3000:]


def test_a_config_that_skipped_validation_is_refused_where_it_is_built(tmp_path):
    """The guard before building (checks.check_run, the augmentation builders) holds for a config
    that came in any other way (a resumed run's, a caller's own dict)."""
    from medpipe.checks import check_run
    from medpipe.data.transforms import build_monai, instantiate_albumentations
    from medpipe.errors import ConfigError

    marker = tmp_path / "MARKER"
    op = {"_target_": "posix.system", "command": f"touch {marker}"}
    for build in (instantiate_albumentations, lambda ops: build_monai(ops, seed=0)):
        with pytest.raises(ConfigError, match=r"^augmentation.train\[0\]._target_: 'posix"):
            build([op])
    with pytest.raises(ConfigError, match=r"^callbacks.x._target_: 'builtins.eval' refused"):
        check_run({"callbacks": {"x": {"_target_": "builtins.eval"}}}, None)
    assert not marker.exists()


def test_a_path_through_an_allowed_module_to_what_it_imported_is_refused(tmp_path):
    """`lightning.pytorch.callbacks.model_checkpoint.os.system` names lightning but reaches the
    `os` that module imported: refused where the config is built (validation reads names only,
    before torch is imported)."""
    from medpipe.checks import check_run
    from medpipe.data.transforms import instantiate_albumentations
    from medpipe.errors import ConfigError
    from medpipe.targets import ensure_allowed

    marker = tmp_path / "MARKER"
    sneaky = "lightning.pytorch.callbacks.model_checkpoint.os.system"
    c = {"trainer": {"plugins": {"_target_": sneaky, "command": f"touch {marker}"}}}
    with pytest.raises(ConfigError) as err:
        ensure_allowed(c)
    assert err.value.lines() == [
        f"trainer.plugins._target_: '{sneaky}' refused: it leads to os, outside the allowed "
        "packages (medpipe, torch, lightning, pytorch_lightning, torchmetrics, monai, "
        "albumentations) or one of their code loaders"
    ]
    with pytest.raises(ConfigError, match="leads to torch.serialization"):
        check_run({"callbacks": {"x": {"_target_": "torch.nn.modules.module.torch.load"}}}, None)
    with pytest.raises(ConfigError, match="leads to numpy"):
        instantiate_albumentations(
            [{"_target_": "albumentations.core.transforms_interface.np.load"}]
        )
    assert not marker.exists()


@pytest.mark.slow
def test_a_path_that_leads_out_is_refused_by_the_train_command(tmp_path):
    marker = tmp_path / "MARKER"
    sneaky = "lightning.pytorch.callbacks.model_checkpoint.os.system"
    out = run_cli(
        "train",
        "logger=none",
        *TINY,
        f"paths.root_dir={tmp_path}",
        f"+trainer.plugins={{_target_: {sneaky}, command: 'touch {marker}'}}",
    )
    assert out.returncode == 2
    assert error_lines(out) == [
        f"medpipe: error: trainer.plugins._target_: '{sneaky}' refused: it leads to os, outside "
        "the allowed packages (medpipe, torch, lightning, pytorch_lightning, torchmetrics, monai, "
        "albumentations) or one of their code loaders"
    ]
    assert not marker.exists()
