"""File-backed datasets: MNIST, Fashion-MNIST, CIFAR-100 and Food-101.

Each loader reads the dataset's official release format with its own small reader
(IDX, the CIFAR pickle, the Food-101 folder) so that data downloaded by torchvision,
unpacked by hand or installed by Debian all load the same way. ``download=True`` only
uses torchvision to fetch missing files into ``root``; reading never depends on it.
These datasets come with official train/test splits, so ``split_seed`` is ignored.
"""
from __future__ import annotations

import gzip
import json
import logging
import pickle
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data import ImageData, register_dataset, tensor_image_data
from bench.errors import BenchInputError

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

CIFAR_FILES = ("train", "test", "meta")
FOOD_META = ("meta/classes.txt", "meta/train.json", "meta/test.json")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- locating files

def _root_path(root: str | Path | None) -> Path | None:
    return None if root is None else Path(root).expanduser()


def _first_complete(dirs: Sequence[Path], has_all: Callable[[Path], bool]) -> Path | None:
    """First directory holding the whole dataset: a half-copied folder must not shadow a good one."""
    return next((d for d in dirs if has_all(d)), None)


def _not_found(name: str, *, wanted: str, tried: Sequence[Path]) -> BenchInputError:
    """One-line error listing every place looked at, so the user sees where to put the files."""
    where = ", ".join(str(d) for d in tried) if tried else "nowhere (no --data-root given)"
    return BenchInputError(
        f"dataset {name!r} not found: looked for {wanted} in {where}; "
        f"pass --data-root DIR holding it, or --download with --data-root DIR to fetch it"
    )


def _locate(name: str, *, dirs: Callable[[], list[Path]], has_all: Callable[[Path], bool],
            wanted: str, root: Path | None, download: bool,
            fetch: Callable[[Path], None]) -> Path:
    """Find the dataset folder, fetching into ``root`` first when allowed and needed."""
    found = _first_complete(dirs(), has_all)
    if found is None and download:
        if root is None:
            raise BenchInputError(f"--download of {name!r} needs --data-root DIR to download into")
        log.info("downloading %s into %s", name, root)
        try:
            fetch(root)
        except (OSError, RuntimeError) as exc:
            raise BenchInputError(f"downloading {name!r} into {root} failed: {exc}") from exc
        found = _first_complete(dirs(), has_all)
    if found is None:
        raise _not_found(name, wanted=wanted, tried=dirs())
    log.info("loading %s from %s", name, found)
    return found


# ---------------------------------------------------------------- IDX (MNIST family)

def _idx_file(folder: Path, stem: str) -> Path | None:
    """The plain file if present (cheaper to read), else its ``.gz``."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise BenchInputError(f"cannot read {path}: {exc}") from exc


def read_idx(path: Path, *, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file, checking the header against the payload size."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BenchInputError(f"malformed IDX file {path}: {len(data)} bytes, shorter than its header")
    found_magic = int.from_bytes(data[:4], "big")
    if found_magic != magic:
        raise BenchInputError(
            f"malformed IDX file {path}: magic number 0x{found_magic:08x}, expected 0x{magic:08x}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise BenchInputError(
            f"malformed IDX file {path}: header dims {dims} need {expected} data bytes, "
            f"found {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_split(folder: Path, *, prefix: str,
                    num_classes: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split, with their counts and value ranges cross-checked."""
    image_path = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    label_path = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    assert image_path is not None and label_path is not None  # guaranteed by _locate
    images = read_idx(image_path, magic=IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (image_size, image_size):
        raise BenchInputError(f"malformed IDX file {image_path}: images are "
                              f"{images.shape[1]}x{images.shape[2]}, expected {image_size}x{image_size}")
    if len(images) != len(labels):
        raise BenchInputError(f"IDX files disagree: {image_path} has {len(images)} images, "
                              f"{label_path} has {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise BenchInputError(f"malformed IDX file {label_path}: label {labels.max()} "
                              f"outside 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def _byte_stats(pixels: np.ndarray) -> tuple[float, float]:
    """Exact mean/std of uint8 pixels scaled to [0, 1], from a histogram (no float copy)."""
    counts = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = float(counts @ values / counts.sum())
    std = float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
    return mean, max(std, 1e-8)


def _normalise(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(pixels / 255 - mean) / std`` as float32, built in place to keep one copy in memory."""
    x = pixels.astype(np.float32)
    x -= (mean * 255.0).astype(np.float32)
    x /= (std * 255.0).astype(np.float32)
    return x


def _load_idx_dataset(name: str, *, folder_names: tuple[str, str], extra_dirs: Sequence[Path],
                      classes: tuple[str, ...], root: str | Path | None, download: bool,
                      fetch: Callable[[Path], None]) -> ImageData:
    """Shared MNIST/Fashion-MNIST loader: ``folder_names`` = (torchvision's, plain)."""
    base = _root_path(root)

    def dirs() -> list[Path]:
        own = [] if base is None else [base / folder_names[0] / "raw", base / folder_names[1], base]
        return own + list(extra_dirs)

    folder = _locate(name, dirs=dirs,
                     has_all=lambda d: all(_idx_file(d, stem) for stem in IDX_FILES),
                     wanted=f"{', '.join(IDX_FILES)} (optionally .gz)",
                     root=base, download=download, fetch=fetch)
    x_tr, y_tr = _read_idx_split(folder, prefix="train", num_classes=len(classes), image_size=28)
    x_te, y_te = _read_idx_split(folder, prefix="t10k", num_classes=len(classes), image_size=28)
    mean, std = (np.asarray(v) for v in _byte_stats(x_tr))
    return tensor_image_data(_normalise(x_tr, mean, std), y_tr,
                             _normalise(x_te, mean, std), y_te, classes=classes)


def _torchvision_fetch(dataset_class: str) -> Callable[[Path], None]:
    """Downloader using torchvision's dataset class of that name (imported only when used)."""

    def fetch(root: Path) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, dataset_class)(str(root), download=True)

    return fetch


@register_dataset("mnist", num_classes=10, in_channels=1, image_size=28, train_size=60000,
                  test_size=10000)
def load_mnist(*, root: str | Path | None = None, download: bool = False,
               split_seed: int = 0) -> ImageData:
    """MNIST digits, 60,000 train / 10,000 test, from IDX files."""
    del split_seed  # official split
    return _load_idx_dataset("mnist", folder_names=("MNIST", "mnist"), extra_dirs=(),
                             classes=MNIST_CLASSES, root=root, download=download,
                             fetch=_torchvision_fetch("MNIST"))


@register_dataset("fashion-mnist", num_classes=10, in_channels=1, image_size=28,
                  train_size=60000, test_size=10000)
def load_fashion_mnist(*, root: str | Path | None = None, download: bool = False,
                       split_seed: int = 0) -> ImageData:
    """Fashion-MNIST, 60,000 train / 10,000 test; also found where Debian's package puts it."""
    del split_seed  # official split
    return _load_idx_dataset("fashion-mnist", folder_names=("FashionMNIST", "fashion-mnist"),
                             extra_dirs=(DEBIAN_FASHION_MNIST,), classes=FASHION_MNIST_CLASSES,
                             root=root, download=download,
                             fetch=_torchvision_fetch("FashionMNIST"))


# ---------------------------------------------------------------- CIFAR-100 pickles

# numpy's array reconstructor, from whichever module this numpy version keeps it in.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # pickles from numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays but can call nothing else.

    The CIFAR release is a pickle; a plain ``pickle.load`` would run any code a tampered
    file names, so every global outside the numpy array allow-list is refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def read_cifar_pickle(path: Path) -> dict:
    """Load one CIFAR pickle (a dict with bytes keys) without allowing code execution."""
    try:
        with path.open("rb") as f:
            content = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as exc:
        raise BenchInputError(f"malformed CIFAR pickle {path}: {exc}") from exc
    if not isinstance(content, dict):
        raise BenchInputError(f"malformed CIFAR pickle {path}: expected a dict, "
                              f"found {type(content).__name__}")
    return content


def _cifar_split(path: Path, *, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and int64 fine labels of one CIFAR-100 split file."""
    content = read_cifar_pickle(path)
    data, labels = content.get(b"data"), content.get(b"fine_labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise BenchInputError(f"malformed CIFAR pickle {path}: b'data' must be a uint8 "
                              f"N x 3072 array")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise BenchInputError(f"malformed CIFAR pickle {path}: b'fine_labels' must list "
                              f"one label per image ({len(data)})")
    targets = np.asarray(labels, dtype=np.int64)
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise BenchInputError(f"malformed CIFAR pickle {path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), targets


def _cifar_classes(path: Path, *, num_classes: int) -> tuple[str, ...]:
    names = read_cifar_pickle(path).get(b"fine_label_names")
    if not isinstance(names, list) or len(names) != num_classes \
            or not all(isinstance(n, bytes) for n in names):
        raise BenchInputError(f"malformed CIFAR pickle {path}: b'fine_label_names' must list "
                              f"{num_classes} names")
    return tuple(n.decode("utf-8") for n in names)


@register_dataset("cifar100", num_classes=100, in_channels=3, image_size=32, train_size=50000,
                  test_size=10000)
def load_cifar100(*, root: str | Path | None = None, download: bool = False,
                  split_seed: int = 0) -> ImageData:
    """CIFAR-100 (fine labels), 50,000 train / 10,000 test, per-channel train normalisation."""
    del split_seed  # official split
    base = _root_path(root)
    folder = _locate("cifar100",
                     dirs=lambda: [] if base is None else [base / "cifar-100-python", base],
                     has_all=lambda d: all((d / f).is_file() for f in CIFAR_FILES),
                     wanted="cifar-100-python/{train,test,meta}", root=base,
                     download=download, fetch=_torchvision_fetch("CIFAR100"))
    x_tr, y_tr = _cifar_split(folder / "train", num_classes=100)
    x_te, y_te = _cifar_split(folder / "test", num_classes=100)
    classes = _cifar_classes(folder / "meta", num_classes=100)
    stats = np.array([_byte_stats(x_tr[:, c]) for c in range(3)])  # rows: (mean, std)
    mean, std = stats[:, 0].reshape(1, 3, 1, 1), stats[:, 1].reshape(1, 3, 1, 1)
    return tensor_image_data(_normalise(x_tr, mean, std), y_tr,
                             _normalise(x_te, mean, std), y_te, classes=classes)


# ---------------------------------------------------------------- Food-101 folder

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


@register_dataset("food101", num_classes=101, in_channels=3, image_size=224, train_size=75750,
                  test_size=25250)
def load_food101(*, root: str | Path | None = None, download: bool = False,
                 split_seed: int = 0) -> ImageData:
    """Food-101, 75,750 train / 25,250 test JPEGs, read lazily and centre-cropped to 224."""
    del split_seed  # official split
    base = _root_path(root)
    folder = _locate("food101",
                     dirs=lambda: [] if base is None else [base / "food-101", base],
                     has_all=lambda d: (d / "images").is_dir()
                     and all((d / f).is_file() for f in FOOD_META),
                     wanted=f"food-101/images and food-101/{{{','.join(FOOD_META)}}}",
                     root=base, download=download, fetch=_torchvision_fetch("Food101"))
    classes = _food_classes(folder / "meta" / "classes.txt")
    label_of = {name: i for i, name in enumerate(classes)}
    train_paths, y_tr = _food_split(folder, split="train", label_of=label_of)
    test_paths, y_te = _food_split(folder, split="test", label_of=label_of)
    transform = _food_transform()
    return ImageData(train=ImageFiles(train_paths, y_tr, transform),
                     test=ImageFiles(test_paths, y_te, transform),
                     train_targets=y_tr, test_targets=y_te, classes=classes,
                     in_channels=3, image_size=224)
