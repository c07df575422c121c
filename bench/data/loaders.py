"""In-memory data and its mini-batches: ``tensor_image_data``, ``TensorBatches``, class subsets."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from bench.data.registry import ImageData


def tensor_image_data(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      y_test: np.ndarray, *, classes: tuple[str, ...]) -> ImageData:
    """Wrap normalised arrays (N,H,W) or (N,C,H,W) as an in-memory ``ImageData``."""

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        return t.unsqueeze(1) if t.ndim == 3 else t

    xt, xv = as_tensor(x_train), as_tensor(x_test)
    return ImageData(
        train=TensorDataset(xt, torch.as_tensor(y_train, dtype=torch.int64)),
        test=TensorDataset(xv, torch.as_tensor(y_test, dtype=torch.int64)),
        train_targets=np.asarray(y_train, dtype=np.int64),
        test_targets=np.asarray(y_test, dtype=np.int64),
        classes=classes, in_channels=xt.shape[1], image_size=xt.shape[-1],
    )


class TensorBatches:
    """In-memory mini-batches by index slicing: no per-sample collate, optionally on device.

    Re-iterable; each pass reshuffles from its own generator so runs are reproducible.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 shuffle: bool, seed: int = 0, drop_last: bool = False) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def __len__(self) -> int:
        n = len(self.y) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = (torch.randperm(n, generator=self._generator) if self.shuffle
                 else torch.arange(n)).to(self.y.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def class_indices(targets: np.ndarray, classes: tuple[int, ...] | list[int], *,
                  include: bool) -> np.ndarray:
    """Indices of samples whose label is (``include=True``) or is not in ``classes``."""
    mask = np.isin(targets, np.asarray(classes, dtype=np.int64))
    return np.flatnonzero(mask if include else ~mask)


def subsample_per_class(data: ImageData, *, train_per_class: int | None,
                        test_per_class: int | None, seed: int) -> ImageData:
    """Keep at most ``*_per_class`` samples of each class per split, chosen by ``seed``.

    Stratified so every class keeps its share; in-memory datasets stay in memory. A split
    without a cap is passed on untouched (never read).
    """
    rng = np.random.default_rng(seed)

    def pick(targets: np.ndarray, per_class: int) -> np.ndarray:
        keep = [rng.permutation(np.flatnonzero(targets == c))[:per_class]
                for c in np.unique(targets)]
        return np.sort(np.concatenate(keep))

    if train_per_class is not None:
        train_idx = pick(data.train_targets, train_per_class)
        data = dataclasses.replace(data, train=_subset(data.train, train_idx),
                                   train_targets=data.train_targets[train_idx])
    if test_per_class is not None:
        test_idx = pick(data.test_targets, test_per_class)
        data = dataclasses.replace(data, test=_subset(data.test, test_idx),
                                   test_targets=data.test_targets[test_idx])
    return data


def _subset(dataset: Dataset, indices: np.ndarray) -> Dataset:
    if isinstance(dataset, TensorDataset):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, indices.tolist())


def validation_view(data: ImageData, *, fraction: float, seed: int) -> ImageData:
    """The data tuning sees: ``fraction`` of each class's training samples (at least one, and
    at least one left to train on), drawn by ``seed``, become the evaluation split; the rest
    is the training split. The test split is dropped unread, so nothing tuned on this view
    has seen it.

    Per class, like Deep Unlearn's validation split (xcadet/deepunlearn, munl/datasets), so
    every forget class has validation samples.
    """
    rng = np.random.default_rng([seed, 1])  # a stream apart from subsample_per_class's
    held: list[np.ndarray] = []
    for c in np.unique(data.train_targets):
        members = rng.permutation(np.flatnonzero(data.train_targets == c))
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(members[:count])
    val_idx = np.sort(np.concatenate(held))
    train_idx = np.setdiff1d(np.arange(len(data.train_targets)), val_idx)
    return dataclasses.replace(
        data, train=_subset(data.train, train_idx), test=_subset(data.train, val_idx),
        train_targets=data.train_targets[train_idx], test_targets=data.train_targets[val_idx])


def make_loader(dataset: Dataset, indices: np.ndarray, *, batch_size: int, shuffle: bool,
                seed: int = 0, device: torch.device | None = None,
                num_workers: int = 0):
    """Batches of ``dataset[indices]``; in-memory datasets become ``TensorBatches`` on ``device``."""
    if isinstance(dataset, TensorDataset):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        x, y = dataset.tensors[0][idx], dataset.tensors[1][idx]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return TensorBatches(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size,
                      shuffle=shuffle, generator=generator, num_workers=num_workers,
                      pin_memory=device is not None and device.type == "cuda")
