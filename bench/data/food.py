"""Food-101 from its ``images/`` and ``meta/`` folders, read lazily from disk."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.files import locate, root_path, torchvision_fetch
from bench.data.registry import ImageData, register_dataset
from bench.errors import BenchInputError

FOOD_META = ("meta/classes.txt", "meta/train.json", "meta/test.json")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFiles(Dataset):
    """Images opened from disk on access: Food-101 (~5 GB) does not fit in memory as tensors."""

    def __init__(self, paths: list[Path], targets: np.ndarray,
                 transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths = paths
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            rgb = image.convert("RGB")
        return self.transform(rgb), int(self.targets[index])


def _food_transform() -> Callable[[Any], torch.Tensor]:
    """Same deterministic resize/crop for both splits: unlearning metrics compare like with like."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _food_classes(path: Path) -> tuple[str, ...]:
    try:
        classes = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchInputError(f"cannot read {path}: {exc}") from exc
    if len(classes) != 101 or len(set(classes)) != 101:
        raise BenchInputError(f"malformed {path}: expected 101 distinct class names, "
                              f"found {len(classes)}")
    return classes


def _food_split(folder: Path, *, split: str,
                label_of: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    """Image paths and labels from ``meta/<split>.json`` ({class: ["class/id", ...]})."""
    path = folder / "meta" / f"{split}.json"
    try:
        listing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchInputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(listing, dict):
        raise BenchInputError(f"malformed {path}: expected an object of class -> image ids")
    paths, labels = [], []
    for name, entries in listing.items():
        if name not in label_of or not isinstance(entries, list):
            raise BenchInputError(f"malformed {path}: {name!r} is not a class of "
                                  f"meta/classes.txt with a list of image ids")
        paths += [folder / "images" / f"{entry}.jpg" for entry in entries]
        labels += [label_of[name]] * len(entries)
    return paths, np.asarray(labels, dtype=np.int64)


@register_dataset("food101", label="Food-101", num_classes=101, in_channels=3,
                  image_size=224, train_size=75750, test_size=25250)
def load_food101(*, root: str | Path | None = None, download: bool = False,
                 split_seed: int = 0) -> ImageData:
    """Food-101, 75,750 train / 25,250 test JPEGs, read lazily and centre-cropped to 224."""
    del split_seed  # official split
    base = root_path(root)
    folder = locate("food101",
                     dirs=lambda: [] if base is None else [base / "food-101", base],
                     has_all=lambda d: (d / "images").is_dir()
                     and all((d / f).is_file() for f in FOOD_META),
                     wanted=f"food-101/images and food-101/{{{','.join(FOOD_META)}}}",
                     root=base, download=download, fetch=torchvision_fetch("Food101"))
    classes = _food_classes(folder / "meta" / "classes.txt")
    label_of = {name: i for i, name in enumerate(classes)}
    train_paths, y_tr = _food_split(folder, split="train", label_of=label_of)
    test_paths, y_te = _food_split(folder, split="test", label_of=label_of)
    transform = _food_transform()
    return ImageData(train=ImageFiles(train_paths, y_tr, transform),
                     test=ImageFiles(test_paths, y_te, transform),
                     train_targets=y_tr, test_targets=y_te, classes=classes,
                     in_channels=3, image_size=224)
