"""The peer: the default-sized PneumoniaMNIST job written as a user of lightning-hydra-template
would write it, without medpipe's training path: a LightningDataModule over TensorDatasets, a
LightningModule with torchmetrics accuracy and AUROC (MeanMetric losses), ModelCheckpoint on
`val/auroc`, Lightning's MLFlowLogger (sqlite store in --out), `trainer.test` on the best checkpoint.

The work is the same as `python -m medpipe.train experiment=pneumonia_cnn trainer.max_epochs=10`:
the seeds' CNN (a copy of `medpipe.models.nets.SimpleCNN` with conf/model/cnn.yaml's options;
the benchmark checks that the parameter shapes are identical), Adam lr 1e-3 (weight decay 0), x0.1 at epochs 5 and 8
(conf/scheduler/multistep.yaml's 50% and 75% of 10 epochs, rounded as medpipe rounds them), batch
128, no augmentation, intensities / 255 then z-scored with the training split's mean and std,
seed 42, cross-entropy over 2 logits. The template's trainer defaults: `deterministic: false`,
Lightning's progress bar and model summary, 2 sanity validation steps.

    python benchmarks/peer_template.py --npz ../shared/data/medmnist/pneumoniamnist/pneumoniamnist_reconstructed.npz --out /tmp/peer

Prints Lightning's test table and, last, one line `PEER_TEST_METRICS {json}` (test/auroc,
test/acc at 0.5, test/loss) for benchmarks/bench_peer.py. Threads: torch's default, i.e.
$OMP_NUM_THREADS when set. With $BENCH_PROBE_FILE set, the benchmarks' timestamp probe
(benchmarks.probes.Probe) is added, the same callback as in the medpipe runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import AUROC, Accuracy, MeanMetric


class SimpleCNN(nn.Module):
    """The seeds' CNN, copied from medpipe.models.nets.cnn.SimpleCNN (conf/model/cnn.yaml's
    options): conv 3x3 'same' - ReLU - maxpool 2 per entry of `channels`, flatten, dense 512 -
    ReLU - dropout 0.5, linear. Copied rather than imported: importing medpipe.models.nets loads
    every net module (MONAI among them, ~1.7 s), which a template user would not pay; bench_peer.py
    checks that the parameter shapes are the same as medpipe's."""

    def __init__(self, in_channels=1, num_outputs=2, spatial_shape=(28, 28),
                 channels=(32, 64, 128), kernel_size=3, hidden=512, dropout=0.5):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, in_channels, *spatial_shape)).numel()
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_flat, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PneumoniaDataModule(L.LightningDataModule):
    def __init__(self, npz: str, batch_size: int = 128, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_train = self.data_val = self.data_test = None

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        d = np.load(self.hparams.npz)
        train = d["train_images"].astype(np.float32) / 255.0
        mean, std = float(train.mean()), float(train.std())

        def split(name: str) -> TensorDataset:
            x = (d[f"{name}_images"].astype(np.float32) / 255.0 - mean) / std
            y = d[f"{name}_labels"].reshape(-1).astype(np.int64)
            return TensorDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))

        self.data_train, self.data_val, self.data_test = split("train"), split("val"), split("test")

    def _loader(self, ds: TensorDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            pin_memory=False,
            shuffle=shuffle,
        )

    def train_dataloader(self):
        return self._loader(self.data_train, True)

    def val_dataloader(self):
        return self._loader(self.data_val, False)

    def test_dataloader(self):
        return self._loader(self.data_test, False)


class PneumoniaLitModule(L.LightningModule):
    def __init__(self, net: torch.nn.Module, lr: float, milestones: list[int], gamma: float):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.criterion = torch.nn.CrossEntropyLoss()
        self.train_acc = Accuracy(task="binary")
        self.val_acc, self.test_acc = Accuracy(task="binary"), Accuracy(task="binary")
        self.val_auroc, self.test_auroc = AUROC(task="binary"), AUROC(task="binary")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def model_step(self, batch):
        x, y = batch
        logits = self.forward(x)
        loss = self.criterion(logits, y)
        return loss, torch.softmax(logits, dim=1)[:, 1], y

    def training_step(self, batch, batch_idx):
        loss, probs, y = self.model_step(batch)
        self.train_loss(loss)
        self.train_acc(probs, y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, probs, y = self.model_step(batch)
        self.val_loss(loss)
        self.val_acc(probs, y)
        self.val_auroc(probs, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/auroc", self.val_auroc, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx):
        loss, probs, y = self.model_step(batch)
        self.test_loss(loss)
        self.test_acc(probs, y)
        self.test_auroc(probs, y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        self.log("test/auroc", self.test_auroc, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=self.hparams.milestones, gamma=self.hparams.gamma
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "frequency": 1},
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", required=True)
    ap.add_argument("--out", required=True, help="checkpoints and the MLflow sqlite store")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    L.seed_everything(args.seed, workers=True)
    datamodule = PneumoniaDataModule(args.npz, batch_size=args.batch_size)
    net = SimpleCNN(
        in_channels=1,
        num_outputs=2,
        spatial_shape=(28, 28),
        channels=[32, 64, 128],
        kernel_size=3,
        hidden=512,
        dropout=0.5,
    )
    # MultiStepLR at 50% and 75% of the epochs (5 and 8 of 10, as medpipe rounds them)
    milestones = sorted({max(1, round(m * args.epochs)) for m in (0.5, 0.75)})
    model = PneumoniaLitModule(net, lr=args.lr, milestones=milestones, gamma=0.1)

    logger = MLFlowLogger(
        experiment_name="pneumonia",
        run_name="cnn-pneumoniamnist",
        tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}",
        artifact_location=str((out / "mlartifacts").resolve()),
        log_model=False,
    )
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=str(out / "checkpoints"),
            filename="epoch_{epoch:03d}",
            monitor="val/auroc",
            mode="max",
            save_last=True,
            auto_insert_metric_name=False,
        )
    ]
    if os.environ.get("BENCH_PROBE_FILE"):  # the benchmark's timestamps (the same as medpipe's)
        from benchmarks.probes import Probe

        callbacks.append(Probe())
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        min_epochs=1,
        deterministic=False,
        check_val_every_n_epoch=1,
        default_root_dir=str(out),
        callbacks=callbacks,
        logger=logger,
    )
    # lightning-hydra-template's log_hyperparameters: the settings and the parameter counts
    logger.log_hyperparams(
        {
            **vars(args),
            "model/params/total": sum(p.numel() for p in model.parameters()),
            "model/params/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
    )
    trainer.fit(model=model, datamodule=datamodule)
    ckpt_path = trainer.checkpoint_callback.best_model_path
    (result,) = trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in result.items()}
    metrics["best_checkpoint"] = ckpt_path
    metrics["param_shapes"] = {k: list(v.shape) for k, v in net.state_dict().items()}
    print("PEER_TEST_METRICS " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
