"""The LightningDataModule over a processed dataset, with two loading paths.

memory:  every split lives as one tensor on the training device; batches are slices of a seeded
         per-epoch permutation, with no per-sample Python and no host-device copies.
workers: a torch DataLoader over the memory-mapped arrays, for per-sample augmentation
         (albumentations) or data that does not fit on the device (medpipe.data.loader_choice
         decides which, for data.loader=auto).
Samples stay in their stored dtype (uint8 for images); the task module normalises them on device.
Padded sequences travel with their true lengths: batches are (x, y, lengths) instead of (x, y).
For cross-validation the module reads the samples of every split pooled and takes each split's
rows from an index (`folds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medpipe.data.processed import DatasetMeta, Split, pooled_split, read_meta, read_split


class ArrayDataset(Dataset):
    """Samples of one split, optionally transformed (training augmentation)."""

    def __init__(self, split: Split, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        self.x, self.y, self.lengths, self.transform = split.x, split.y, split.lengths, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        x = np.array(self.x[i])  # a copy: the memory-mapped source is read-only
        if self.transform is not None:
            x = np.ascontiguousarray(self.transform(x))
        item = (torch.from_numpy(x), torch.as_tensor(self.y[i]))
        if self.lengths is not None:
            item += (torch.as_tensor(int(self.lengths[i])),)
        return item


class DeviceBatches:
    """Batches sliced from tensors already on the device; reshuffled each epoch from the seed.

    Under DDP each rank takes every world_size-th index of the same permutation (padded so every
    rank gets the same number of batches), like DistributedSampler.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        lengths: torch.Tensor | None = None,
    ):
        self.x, self.y, self.lengths = x, y, lengths
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch_fn, self.rank, self.world_size, self.drop_last = (
            epoch_fn,
            rank,
            world_size,
            drop_last,
        )

    def _indices(self) -> torch.Tensor:
        n = len(self.x)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * int(self.epoch_fn()))
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        if self.world_size > 1:
            per_rank = math.ceil(n / self.world_size)
            idx = torch.cat([idx, idx[: per_rank * self.world_size - n]])[
                self.rank :: self.world_size
            ]
        return idx.to(self.x.device)

    def __len__(self) -> int:
        n = math.ceil(len(self.x) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        idx = self._indices()
        for b in range(len(self)):
            j = idx[b * self.batch_size : (b + 1) * self.batch_size]
            if self.lengths is None:
                yield self.x.index_select(0, j), self.y.index_select(0, j)
            else:
                yield (
                    self.x.index_select(0, j),
                    self.y.index_select(0, j),
                    self.lengths.index_select(0, j),
                )


class PoissonBatches(DeviceBatches):
    """privacy=dp: each of the epoch's ceil(N / batch_size) steps takes every training sample
    independently with probability `sample_rate` (Poisson sampling, what DP-SGD's privacy
    accounting assumes), so batch sizes vary around sample_rate * N and a batch can be empty.
    Seeded per epoch, like the shuffled batches (a resumed run draws the same batches)."""

    def __init__(self, *args, sample_rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        masks = poisson_masks(len(self.x), self.sample_rate, len(self), self.seed, self.epoch_fn())
        for mask in masks:
            j = mask.nonzero().squeeze(1).to(self.x.device)
            batch = (self.x.index_select(0, j), self.y.index_select(0, j))
            yield batch if self.lengths is None else (*batch, self.lengths.index_select(0, j))


def poisson_masks(n: int, rate: float, steps: int, seed: int, epoch: int) -> Iterator[torch.Tensor]:
    """`steps` Bernoulli(rate) masks over n samples, from a generator seeded by seed and epoch."""
    g = torch.Generator().manual_seed(seed + 1_000_003 * int(epoch) + 15_485_863)
    for _ in range(steps):
        yield torch.rand(n, generator=g) < rate


class PoissonSampler(torch.utils.data.Sampler):
    """PoissonBatches' sampling as a DataLoader batch sampler (the workers path)."""

    def __init__(self, n: int, rate: float, steps: int, seed: int, epoch_fn: Callable[[], int]):
        self.n, self.rate, self.steps, self.seed, self.epoch_fn = n, rate, steps, seed, epoch_fn

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for mask in poisson_masks(self.n, self.rate, self.steps, self.seed, self.epoch_fn()):
            yield mask.nonzero().squeeze(1).tolist()


class CollateWithEmpty:
    """default_collate, and for an empty Poisson batch tensors with no rows of the right shapes."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __call__(self, items: list) -> tuple[torch.Tensor, ...]:
        if items:
            return torch.utils.data.default_collate(items)
        return tuple(t.new_empty((0, *t.shape)) for t in self.dataset[0])


class MedDataModule(L.LightningDataModule):
    def __init__(
        self,
        folder: str | Path,
        batch_size: int = 128,
        loader: str = "memory",
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        train_transform: Callable[[np.ndarray], np.ndarray] | None = None,
        eval_batch_size: int | None = None,
        batch_augment: torch.nn.Module | None = None,
        folds: dict[str, np.ndarray] | None = None,
    ):
        super().__init__()
        self.folder = Path(folder)
        self.meta: DatasetMeta = read_meta(self.folder)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.loader = loader
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.train_transform = train_transform
        self.batch_augment = (
            batch_augment  # on-device augmentation of training batches (memory path)
        )
        self.folds = folds  # split -> row indices into the pooled splits (cross-validation)
        self._pooled: Split | None = None
        self.splits: dict[str, Split] = {}
        self._device_splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self.test_split = "test"  # what test_dataloader() serves: "val" to collect its outputs
        # privacy=dp: training batches are Poisson samples at this rate (medpipe.privacy.dp)
        self.poisson_rate: float | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.batch_augment is not None and self.trainer is not None:
            self.batch_augment.seed = (
                self.seed + 7919 * self.trainer.global_rank
            )  # own stream per rank
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": (self.test_split,),
            "predict": ("test",),
        }.get(stage or "", ("train", "val", "test"))
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        # on an accelerator the host keeps only the memory-mapped arrays, not a second copy
        mmap = self.loader == "workers" or device.type != "cpu"
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = self._read(split, mmap=mmap)
            if self.loader == "memory" and split not in self._device_splits:
                s = self.splits[split]
                arrays = [s.x, s.y] + ([s.lengths] if s.lengths is not None else [])
                self._device_splits[split] = tuple(
                    torch.from_numpy(np.array(a) if mmap else np.ascontiguousarray(a)).to(device)
                    for a in arrays
                )

    def _read(self, split: str, mmap: bool) -> Split:
        if self.folds is None:
            return read_split(self.folder, split, mmap=mmap)
        if self._pooled is None:  # read once, then every split takes its rows
            self._pooled = pooled_split(self.folder)
        return self._pooled.take(self.folds[split])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.batch_augment is not None and self.trainer is not None and self.trainer.training:
            return (self.batch_augment(batch[0]), *batch[1:])
        return batch

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, split: str, train: bool):
        batch = self.batch_size if train else self.eval_batch_size
        if train and self.poisson_rate is not None:
            return self._poisson_loader(split)
        if self.loader == "memory":
            x, y, *lengths = self._device_splits[split]
            rank, world = self._rank_world()
            return DeviceBatches(
                x,
                y,
                batch,
                lengths=lengths[0] if lengths else None,
                shuffle=train,
                seed=self.seed,
                epoch_fn=self._epoch,
                rank=rank,
                world_size=world,
            )
        ds = ArrayDataset(self.splits[split], self.train_transform if train else None)
        return DataLoader(
            ds,
            batch_size=batch,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def _poisson_loader(self, split: str):
        if self.loader == "memory":
            x, y, *lengths = self._device_splits[split]
            return PoissonBatches(
                x,
                y,
                self.batch_size,
                lengths=lengths[0] if lengths else None,
                shuffle=True,
                seed=self.seed,
                epoch_fn=self._epoch,
                sample_rate=self.poisson_rate,
            )
        ds = ArrayDataset(self.splits[split], self.train_transform)
        steps = math.ceil(len(ds) / self.batch_size)
        return DataLoader(
            ds,
            batch_sampler=PoissonSampler(len(ds), self.poisson_rate, steps, self.seed, self._epoch),
            collate_fn=CollateWithEmpty(ds),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader(self.test_split, train=False)

    def split_arrays(self, split: str) -> Split:
        """The raw arrays of a split (for reports and input examples)."""
        if split not in self.splits:
            self.splits[split] = self._read(split, mmap=True)
        return self.splits[split]
