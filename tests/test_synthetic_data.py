"""Synthetic data from a trained GAN: as a data source (`data=gan_samples`: generated train and
val, the real test split), mixed into a real training split (`data.synthetic`), and a seeded
fraction of the real training split (`data.train_fraction`). Generated samples never enter
validation or test; the generator and the options are part of the processed data's fingerprint;
bad input is one line naming the key before training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medpipe.config import validate
from medpipe.data.prepare import mix_tags, prepare_from_config, stratified_rows
from medpipe.data.processed import read_meta, read_split
from medpipe.errors import MedpipeError

from conftest import PNEUMONIA_NPZ, compose_config, needs_shared_data, run_cli, write_medmnist_npz

# the real data the GAN learns: small synthetic lesions (64 test images, lesion masks)
LESIONS = ["data=synthetic_lesions", "data.n_train=128", "data.n_val=64", "data.n_test=64"]
QUIET = ["callbacks.progress_bar=none", "log_model=false"]
TINY_GAN = [
    "task_kind=gan",
    "model=gan",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
    "data.batch_size=64",
    "model.net.g_width=8",
    "model.net.d_width=8",
    "model.eval.feature_epochs=1",
    "model.eval.kid_subsets=2",
    "model.eval.kid_subset_size=32",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _split_files(folder: Path, split: str) -> dict[str, str]:
    """{file name: sha256} of every array file of one split."""
    return {p.name: _sha(p) for p in sorted(folder.glob(f"{split}_*.npy"))}


def prepare(root: Path, *overrides: str) -> Path:
    """`python -m medpipe.prepare` in-process: compose, check, prepare (paths under `root`)."""
    c = validate(compose_config(root, list(overrides), "prepare"), "prepare")
    return prepare_from_config(c)


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    """A tiny GAN trained through the command line on synthetic lesions, logged to MLflow."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("gan")
    out = run_cli(
        "train",
        *LESIONS,
        *TINY_GAN,
        *QUIET,
        f"paths.root_dir={root}",
        f"hydra.run.dir={root / 'gan'}",
        env=ONE_THREAD,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    uri = f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("medpipe").experiment_id])
    ckpt = root / "gan" / "checkpoints" / "best.ckpt"
    return {"root": root, "ckpt": ckpt, "run_id": run.info.run_id, "uri": uri}


@pytest.fixture(scope="module")
def other_ckpt(gan, tmp_path_factory):
    """Another generator: the same checkpoint with its generator's weights nudged."""
    import torch

    ckpt = torch.load(gan["ckpt"], map_location="cpu", weights_only=False)
    for key, value in ckpt["state_dict"].items():
        if key.startswith(("generator_ema.", "net.generator.")) and value.is_floating_point():
            value.add_(1e-3)
    path = tmp_path_factory.mktemp("other") / "other.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def tstr(gan):
    """A classifier trained on gan_samples through the command line (train on synthetic, test on
    real), its generator named as an MLflow run."""
    root = gan["root"]
    out = run_cli(
        "train",
        "data=gan_samples",
        f"data.generator=runs:/{gan['run_id']}",
        "data.n_train=64",
        "data.n_val=32",
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "experiment_name=tstr",
        "evaluation.bootstrap.n=0",
        "evaluation.explain.enabled=false",
        *QUIET,
        f"paths.root_dir={root}",
        f"hydra.run.dir={root / 'tstr'}",
        env=ONE_THREAD,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {"out": root / "tstr", "ckpt": root / "tstr" / "checkpoints" / "best.ckpt"}


# -- data=gan_samples --------------------------------------------------------------------------
def test_gan_samples_are_generated_train_and_val_and_the_real_test_split_byte_for_byte(gan):
    real = prepare(gan["root"], *LESIONS)
    folder = prepare(
        gan["root"],
        "data=gan_samples",
        f"data.generator={gan['ckpt']}",
        "data.n_train=40",
        "data.n_val=20",
        "data.class_mix=balanced",
    )
    meta = read_meta(folder)
    assert meta.sizes == {"train": 40, "val": 20, "test": 64}
    assert meta.class_counts["train"] == [20, 20] and meta.class_counts["val"] == [10, 10]
    assert meta.classes == ["no lesion", "lesion"] and meta.sample_shape == [1, 28, 28]
    assert _split_files(folder, "test") == _split_files(real, "test")  # x, y and lesion masks
    train = read_split(folder, "train")
    assert train.x.dtype == np.uint8 and train.mask is None  # generated: no lesion masks
    real_train = read_split(real, "train").x.reshape(128, -1)
    assert not (train.x.reshape(40, 1, -1) == real_train[None]).all(-1).any()  # no real image
    assert meta.source["generator_sha256"] == _sha(gan["ckpt"])
    assert meta.source["synthetic_samples"] == 40 and meta.source["real_train_samples"] == 0
    # real proportions by default: the real splits' class mix, sized like them
    default = read_meta(prepare(gan["root"], "data=gan_samples", f"data.generator={gan['ckpt']}"))
    real_meta = read_meta(real)
    assert default.class_counts["train"] == real_meta.class_counts["train"]
    assert default.class_counts["val"] == real_meta.class_counts["val"]


def test_the_real_test_split_is_rebuilt_from_the_checkpoint_where_it_is_not_prepared(gan, tmp_path):
    folder = prepare(tmp_path, "data=gan_samples", f"data.generator={gan['ckpt']}")
    real = prepare(gan["root"], *LESIONS)
    assert folder.parent == tmp_path / "data" / "processed"
    assert _split_files(folder, "test") == _split_files(real, "test")


def test_a_run_reference_gives_the_same_data_as_its_checkpoint_file_another_generator_not(
    gan, other_ckpt
):
    by_file = prepare(gan["root"], "data=gan_samples", f"data.generator={gan['ckpt']}")
    by_run = prepare(gan["root"], "data=gan_samples", f"data.generator=runs:/{gan['run_id']}")
    other = prepare(gan["root"], "data=gan_samples", f"data.generator={other_ckpt}")
    assert by_run == by_file
    assert other != by_file
    assert read_meta(other).fingerprint != read_meta(by_file).fingerprint
    again = prepare(gan["root"], "data=gan_samples", f"data.generator={gan['ckpt']}", "data.seed=1")
    assert again != by_file  # the sampling options too


# -- data.synthetic: generated samples added to the real training split --------------------------
def test_mixing_adds_per_class_samples_to_train_only_and_leaves_val_and_test_untouched(gan):
    real = prepare(gan["root"], *LESIONS)
    mix = [f"data.synthetic.generator={gan['ckpt']}", "data.synthetic.per_class=10"]
    folder = prepare(gan["root"], *LESIONS, *mix)
    assert folder != real
    for split in ("val", "test"):
        assert _split_files(folder, split) == _split_files(real, split)
    r, m = read_split(real, "train"), read_split(folder, "train")
    assert len(m) == 128 + 20
    assert np.array_equal(m.x[:128], r.x) and np.array_equal(m.y[:128], r.y)  # real rows first
    assert list(m.y[128:]) == [0] * 10 + [1] * 10
    meta = read_meta(folder)
    assert meta.class_counts["train"] == [c + 10 for c in read_meta(real).class_counts["train"]]
    assert meta.source["synthetic_counts"] == {"train": [10, 10]}
    assert mix_tags(meta) == {
        "data.real_train_samples": "128",
        "data.synthetic_samples": "20",
        "data.synthetic_generator_sha256": _sha(gan["ckpt"]),
    }


def test_balance_tops_the_minority_class_up_to_the_majority(gan):
    imbalanced = [*LESIONS, "data.prevalence=0.2"]
    real = read_meta(prepare(gan["root"], *imbalanced)).class_counts["train"]
    assert real[0] > 1.5 * real[1]
    mix = [f"data.synthetic.generator={gan['ckpt']}", "data.synthetic.balance=true"]
    meta = read_meta(prepare(gan["root"], *imbalanced, *mix))
    assert meta.class_counts["train"] == [real[0], real[0]]
    assert meta.source["synthetic_counts"] == {"train": [0, real[0] - real[1]]}


def test_a_fraction_then_generated_samples(gan):
    real = read_split(prepare(gan["root"], *LESIONS), "train")
    both = [
        "data.train_fraction=0.25",
        f"data.synthetic.generator={gan['ckpt']}",
        "data.synthetic.per_class=5",
    ]
    folder = prepare(gan["root"], *LESIONS, *both)
    rows = stratified_rows(real.y, "binary", 0.25, 0)
    train = read_split(folder, "train")
    assert np.array_equal(train.x[: len(rows)], real.x[rows])
    assert len(train) == len(rows) + 10
    assert read_meta(folder).source["real_train_samples"] == len(rows)
    assert mix_tags(read_meta(folder))["data.train_fraction"] == "0.25"


# -- data.train_fraction --------------------------------------------------------------------------
def test_train_fraction_keeps_a_seeded_stratified_subset_of_real_rows(tmp_path):
    real = prepare(tmp_path / "a", *LESIONS)
    quarter = prepare(tmp_path / "a", *LESIONS, "data.train_fraction=0.25")
    same = prepare(tmp_path / "b", *LESIONS, "data.train_fraction=0.25")
    other_seed = prepare(
        tmp_path / "a", *LESIONS, "data.train_fraction=0.25", "data.train_fraction_seed=1"
    )
    half = prepare(tmp_path / "a", *LESIONS, "data.train_fraction=0.5")
    r, q = read_split(real, "train"), read_split(quarter, "train")
    counts = np.bincount(r.y)
    assert list(np.bincount(q.y)) == [int(0.25 * n + 0.5) for n in counts]  # stratified
    # every kept row is a real row, in the real order
    matches = (q.x.reshape(len(q), 1, -1) == r.x.reshape(1, len(r), -1)).all(-1)
    kept = matches.argmax(1)
    assert matches.any(1).all() and np.all(np.diff(kept) > 0)
    assert np.array_equal(q.y, r.y[kept]) and np.array_equal(q.mask, r.mask[kept])
    assert _split_files(same, "train") == _split_files(quarter, "train")  # same seed, same rows
    assert _split_files(other_seed, "train") != _split_files(quarter, "train")
    for split in ("val", "test"):
        assert _split_files(quarter, split) == _split_files(real, split)
    assert len({real.name, quarter.name, other_seed.name, half.name}) == 4  # fingerprints
    meta = read_meta(quarter)
    assert meta.source["train_fraction"] == 0.25 and meta.source["real_train_available"] == 128
    assert prepare(tmp_path / "a", *LESIONS, "data.train_fraction=1") == real  # 1: every row


# -- bad input: one line naming the key, exit status 2, before training, nothing written ----------
def _bad(case: str, gan: Path, clf: Path, tmp: Path) -> tuple[list[str], str]:
    """(prepare arguments, the start of the one error line) of each bad input."""
    mix = f"data.synthetic.generator={gan}"
    if case == "per_class_zero":
        return [*LESIONS, mix, "data.synthetic.per_class=0"], (
            "data.synthetic.per_class: Input should be greater than 0"
        )
    if case == "balance_and_per_class":
        args = [*LESIONS, mix, "data.synthetic.per_class=3", "data.synthetic.balance=true"]
        return args, "data.synthetic.balance: give either per_class=N or balance=true, not both"
    if case == "missing_file":
        args = [*LESIONS, "data.synthetic.generator=nowhere.ckpt", "data.synthetic.balance=true"]
        return args, "data.synthetic.generator: file not found: "
    if case == "classifier_mixed":
        args = [*LESIONS, f"data.synthetic.generator={clf}", "data.synthetic.per_class=3"]
        return args, f"data.synthetic.generator: {clf}: not a GAN checkpoint (task kind auto"
    if case == "classifier_as_source":
        return ["data=gan_samples", f"data.generator={clf}"], (
            f"data.generator: {clf}: not a GAN checkpoint"
        )
    if case == "other_size":
        return [*LESIONS, "data.image_size=32", mix, "data.synthetic.balance=true"], (
            f"data.synthetic.generator: {gan} makes samples of shape (1, 28, 28), data "
            "'synthetic_lesions' has (1, 32, 32)"
        )
    assert case == "other_classes"
    npz = write_medmnist_npz(tmp / "three.npz", n=24, n_classes=3)
    args = [
        "data=medmnist",
        "data.flag=three",
        f"data.path={npz}",
        mix,
        "data.synthetic.per_class=3",
    ]
    return args, (
        f"data.synthetic.generator: {gan} makes classes ['no lesion', 'lesion'], data 'three' "
        "has ['0', '1', '2']"
    )


def _no_processed_data(root: Path) -> bool:
    processed = root / "data" / "processed"
    return not processed.exists() or not any(processed.iterdir())


# on the command line: each stage's errors (the config check, preparation) once, end to end
@pytest.mark.parametrize(
    "case", ["per_class_zero", "balance_and_per_class", "missing_file", "other_size"]
)
def test_bad_input_is_one_line_naming_the_key_exit_2_and_no_processed_data(case, gan, tmp_path):
    args, line = _bad(case, gan["ckpt"], Path("unused"), tmp_path)
    out = run_cli("prepare", *args, f"paths.root_dir={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medpipe: error: {line}"), out.stderr
    assert _no_processed_data(tmp_path)


# in-process (torch is loaded once): the same error, which the entry point prints as one line
@pytest.mark.slow  # trains a classifier as well (the fixture `tstr`)
@pytest.mark.parametrize("case", ["classifier_mixed", "classifier_as_source", "other_classes"])
def test_a_generator_that_does_not_fit_is_one_line_naming_the_key(case, gan, tstr, tmp_path):
    args, line = _bad(case, gan["ckpt"], tstr["ckpt"], tmp_path)
    with pytest.raises(MedpipeError) as err:
        prepare(tmp_path, *args)
    (message,) = err.value.lines()
    assert message.startswith(line) and "\n" not in message, message
    assert _no_processed_data(tmp_path)


# -- training on it ---------------------------------------------------------------------------
@pytest.mark.slow  # trains a classifier on generated images (the fixture `tstr`)
def test_a_classifier_trains_on_gan_samples_and_its_run_records_the_synthetic_counts(gan, tstr):
    from mlflow import MlflowClient

    client = MlflowClient(gan["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("tstr").experiment_id])
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["data.synthetic_samples"] == "64" and tags["data.real_train_samples"] == "0"
    assert tags["data.synthetic_generator_sha256"] == _sha(gan["ckpt"])
    assert params["data.generator"] == f"runs:/{gan['run_id']}"
    metrics = json.loads((tstr["out"] / "metrics.json").read_text())
    assert np.isfinite(metrics["test/auroc"])
    # the test predictions are the real test split's 64 images
    (split,) = [d for d in run.inputs.dataset_inputs if d.tags[0].value == "test"]
    assert json.loads(split.dataset.profile)["num_rows"] == 64


def test_the_experiments_compose_and_validate(gan, tmp_path):
    ckpt = str(gan["ckpt"])
    tstr = validate(
        compose_config(tmp_path, ["experiment=pneumonia_tstr", f"data.generator={ckpt}"])
    )
    fast = validate(compose_config(tmp_path, ["experiment=pneumonia_fast"]))
    assert tstr["data"]["source"] == "gan_samples" and tstr["data"]["generator"] == ckpt
    for key in ("model", "optimizer", "scheduler", "augmentation", "trainer"):
        # pneumonia_fast's recipe, at the 12 epochs and lr its README figures were measured with
        pinned = {"optimizer": {"lr": 2e-3}, "trainer": {"max_epochs": 12}}.get(key, {})
        assert tstr[key] == {**fast[key], **pinned}, key
    low = validate(compose_config(tmp_path, ["experiment=pneumonia_lowdata"]))
    assert low["data"]["train_fraction"] == 0.05 and low["data"]["flag"] == "pneumoniamnist"
    twin = validate(
        compose_config(
            tmp_path,
            [
                "experiment=pneumonia_lowdata",
                f"data.synthetic.generator={ckpt}",
                "data.synthetic.per_class=500",
            ],
        )
    )
    assert twin["data"]["synthetic"]["per_class"] == 500
    assert {k: v for k, v in twin.items() if k != "data"} == {
        k: v for k, v in low.items() if k != "data"
    }


@pytest.mark.slow
@needs_shared_data
def test_pneumonia_low_data_twins_and_tstr_run_end_to_end(tmp_path):
    """A tiny PneumoniaMNIST GAN, then the low-data twins and train-on-synthetic, one epoch each;
    every processed folder holds the real 624-image test split."""
    npz, root = f"data.path={PNEUMONIA_NPZ}", f"paths.root_dir={tmp_path}"
    quick = ["trainer.max_epochs=1", "evaluation.bootstrap.n=0", root, *QUIET]
    out = run_cli(
        "train", "experiment=pneumonia_gan", npz, *quick, "trainer.limit_train_batches=10",
        "model.eval.feature_epochs=1", "model.eval.kid_subsets=2", f"hydra.run.dir={tmp_path}/gan",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = tmp_path / "gan" / "checkpoints" / "best.ckpt"
    runs = {
        "low": ["experiment=pneumonia_lowdata", npz],
        "twin": [
            "experiment=pneumonia_lowdata",
            npz,
            f"data.synthetic.generator={ckpt}",
            "data.synthetic.per_class=100",
        ],
        "tstr": ["experiment=pneumonia_tstr", f"data.generator={ckpt}", "data.n_train=1000"],
    }
    for name, args in runs.items():
        out = run_cli("train", *args, *quick, f"hydra.run.dir={tmp_path}/{name}")
        assert out.returncode == 0, (name, out.stderr[-3000:])
        assert np.isfinite(json.loads((tmp_path / name / "metrics.json").read_text())["test/auroc"])
    metas = [read_meta(f) for f in (tmp_path / "data" / "processed").iterdir()]
    low = next(m for m in metas if "train_fraction" in m.source and "synthetic" not in m.source)
    twin = next(m for m in metas if "synthetic" in m.source)
    tstr = next(m for m in metas if m.name == "gan_samples")
    assert low.sizes["train"] == sum(int(0.05 * n + 0.5) for n in (1214, 3494))
    assert twin.sizes["train"] == low.sizes["train"] + 200
    assert tstr.sizes["train"] == 1000 and tstr.source["real_train_samples"] == 0
    assert all(m.sizes["test"] == 624 for m in metas)
