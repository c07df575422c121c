"""MNIST and Fashion-MNIST from their IDX files (gzipped or not, plain or in torchvision's
folders; Fashion-MNIST also from Debian's ``dataset-fashion-mnist``)."""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.data.files import byte_stats, locate, normalise, root_path, torchvision_fetch
from bench.data.loaders import tensor_image_data
from bench.data.registry import ImageData, register_dataset
from bench.errors import BenchInputError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension



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
    assert image_path is not None and label_path is not None  # guaranteed by locate
    images = read_idx(image_path, magic=IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (image_size, image_size):
        raise BenchInputError(f"malformed IDX file {image_path}: images are "
                              f"{images.shape[1]}x{images.shape[2]}, expected {image_size}x{image_size}")
    if len(images) == 0:
        raise BenchInputError(f"IDX file {image_path} holds no images")
    if len(images) != len(labels):
        raise BenchInputError(f"IDX files disagree: {image_path} has {len(images)} images, "
                              f"{label_path} has {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise BenchInputError(f"malformed IDX file {label_path}: label {labels.max()} "
                              f"outside 0..{num_classes - 1}")
    return images, labels.astype(np.int64)



def _load_idx_dataset(name: str, *, folder_names: tuple[str, str], extra_dirs: Sequence[Path],
                      classes: tuple[str, ...], root: str | Path | None, download: bool,
                      fetch: Callable[[Path], None]) -> ImageData:
    """Shared MNIST/Fashion-MNIST loader: ``folder_names`` = (torchvision's, plain)."""
    base = root_path(root)

    def dirs() -> list[Path]:
        own = [] if base is None else [base / folder_names[0] / "raw", base / folder_names[1], base]
        return own + list(extra_dirs)

    folder = locate(name, dirs=dirs,
                     has_all=lambda d: all(_idx_file(d, stem) for stem in IDX_FILES),
                     wanted=f"{', '.join(IDX_FILES)} (optionally .gz)",
                     root=base, download=download, fetch=fetch)
    x_tr, y_tr = _read_idx_split(folder, prefix="train", num_classes=len(classes), image_size=28)
    x_te, y_te = _read_idx_split(folder, prefix="t10k", num_classes=len(classes), image_size=28)
    mean, std = (np.asarray(v) for v in byte_stats(x_tr))
    return tensor_image_data(normalise(x_tr, mean, std), y_tr,
                             normalise(x_te, mean, std), y_te, classes=classes)



@register_dataset("mnist", label="MNIST", num_classes=10, in_channels=1, image_size=28,
                  train_size=60000, test_size=10000)
def load_mnist(*, root: str | Path | None = None, download: bool = False,
               split_seed: int = 0) -> ImageData:
    """MNIST digits, 60,000 train / 10,000 test, from IDX files."""
    del split_seed  # official split
    return _load_idx_dataset("mnist", folder_names=("MNIST", "mnist"), extra_dirs=(),
                             classes=MNIST_CLASSES, root=root, download=download,
                             fetch=torchvision_fetch("MNIST"))


@register_dataset("fashion-mnist", label="Fashion-MNIST", num_classes=10, in_channels=1,
                  image_size=28, train_size=60000, test_size=10000)
def load_fashion_mnist(*, root: str | Path | None = None, download: bool = False,
                       split_seed: int = 0) -> ImageData:
    """Fashion-MNIST, 60,000 train / 10,000 test; also found where Debian's package puts it."""
    del split_seed  # official split
    return _load_idx_dataset("fashion-mnist", folder_names=("FashionMNIST", "fashion-mnist"),
                             extra_dirs=(DEBIAN_FASHION_MNIST,), classes=FASHION_MNIST_CLASSES,
                             root=root, download=download,
                             fetch=torchvision_fetch("FashionMNIST"))

