"""The dataset registry and what a dataset loader returns.

A dataset loader returns an ``ImageData``: train/test ``torch.utils.data.Dataset`` objects
yielding (normalised float image CxHxW, int label), with their label arrays so that
class subsets are taken without touching the images.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from bench.errors import BenchInputError
from methods.lookup import Registry


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


DATASETS: Registry[DatasetInfo] = Registry("dataset", error=BenchInputError)


def register_dataset(name: str, *, num_classes: int, in_channels: int, image_size: int,
                     label: str | None = None, train_size: int | None = None,
                     test_size: int | None = None) -> Callable[[Loader], Loader]:
    """Register ``load(*, root, download, split_seed) -> ImageData`` under ``name``."""

    def decorate(load: Loader) -> Loader:
        DATASETS.add(name, DatasetInfo(name=name, num_classes=num_classes,
                                       in_channels=in_channels, image_size=image_size,
                                       load=load, train_size=train_size, test_size=test_size),
                     label=label, origin=load)
        return load

    return decorate


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def load_dataset(name: str, *, root: str | Path | None = None, download: bool = False,
                 split_seed: int = 0) -> ImageData:
    return dataset_info(name).load(root=root, download=download, split_seed=split_seed)
