"""Dataset registry, the embedded digits dataset and batch loaders.

A dataset loader returns an ``ImageData``: train/test ``torch.utils.data.Dataset`` objects
yielding (normalised float image CxHxW, int label), with their label arrays so that
class subsets are taken without touching the images.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from bench.errors import BenchInputError


@dataclass(frozen=True, kw_only=True)
class ImageData:
    train: Dataset
    test: Dataset
    train_targets: np.ndarray
    test_targets: np.ndarray
    classes: tuple[str, ...]
    in_channels: int
    image_size: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


Loader = Callable[..., ImageData]


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    load: Loader
    # Sizes of the standard splits, for cost estimates without reading the files.
    train_size: int | None = None
    test_size: int | None = None


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, num_classes: int, in_channels: int, image_size: int,
                     train_size: int | None = None,
                     test_size: int | None = None) -> Callable[[Loader], Loader]:
    """Register ``load(*, root, download, split_seed) -> ImageData`` under ``name``."""

    def decorate(load: Loader) -> Loader:
        _DATASETS[name] = DatasetInfo(name=name, num_classes=num_classes,
                                      in_channels=in_channels, image_size=image_size,
                                      load=load, train_size=train_size, test_size=test_size)
        return load

    return decorate


def dataset_info(name: str) -> DatasetInfo:
    try:
        return _DATASETS[name]
    except KeyError:
        raise BenchInputError(
            f"unknown dataset {name!r}; available: {', '.join(list_datasets())}"
        ) from None


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(name: str, *, root: str | Path | None = None, download: bool = False,
                 split_seed: int = 0) -> ImageData:
    return dataset_info(name).load(root=root, download=download, split_seed=split_seed)


@register_dataset("digits", num_classes=10, in_channels=1, image_size=8, train_size=1257,
                  test_size=540)
def load_digits(*, root: str | Path | None = None, download: bool = False,
                split_seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images), stratified 70/30 split by ``split_seed``."""
    del root, download  # ships inside scikit-learn
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.3, stratify=labels, random_state=split_seed
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return tensor_image_data(
        (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te,
        classes=tuple(str(c) for c in range(10)),
    )


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

    Stratified so every class keeps its share; in-memory datasets stay in memory.
    """
    rng = np.random.default_rng(seed)

    def pick(targets: np.ndarray, per_class: int | None) -> np.ndarray:
        if per_class is None:
            return np.arange(len(targets))
        keep = [rng.permutation(np.flatnonzero(targets == c))[:per_class]
                for c in np.unique(targets)]
        return np.sort(np.concatenate(keep))

    def subset(dataset: Dataset, indices: np.ndarray) -> Dataset:
        if isinstance(dataset, TensorDataset):
            idx = torch.as_tensor(indices, dtype=torch.int64)
            return TensorDataset(*(t[idx] for t in dataset.tensors))
        return Subset(dataset, indices.tolist())

    train_idx = pick(data.train_targets, train_per_class)
    test_idx = pick(data.test_targets, test_per_class)
    return dataclasses.replace(
        data, train=subset(data.train, train_idx), test=subset(data.test, test_idx),
        train_targets=data.train_targets[train_idx], test_targets=data.test_targets[test_idx])


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


# The file-format loaders register themselves on import.
from bench import datasets as _file_datasets  # noqa: F401
