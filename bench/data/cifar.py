"""CIFAR-100 from its python pickle release, read through an allow-listed unpickler."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.files import byte_stats, locate, normalise, root_path, torchvision_fetch
from bench.data.loaders import tensor_image_data
from bench.data.registry import ImageData, register_dataset
from bench.errors import BenchInputError

CIFAR_FILES = ("train", "test", "meta")


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


@register_dataset("cifar100", label="CIFAR-100", num_classes=100, in_channels=3,
                  image_size=32, train_size=50000, test_size=10000)
def load_cifar100(*, root: str | Path | None = None, download: bool = False,
                  split_seed: int = 0) -> ImageData:
    """CIFAR-100 (fine labels), 50,000 train / 10,000 test, per-channel train normalisation."""
    del split_seed  # official split
    base = root_path(root)
    folder = locate("cifar100",
                     dirs=lambda: [] if base is None else [base / "cifar-100-python", base],
                     has_all=lambda d: all((d / f).is_file() for f in CIFAR_FILES),
                     wanted="cifar-100-python/{train,test,meta}", root=base,
                     download=download, fetch=torchvision_fetch("CIFAR100"))
    x_tr, y_tr = _cifar_split(folder / "train", num_classes=100)
    x_te, y_te = _cifar_split(folder / "test", num_classes=100)
    classes = _cifar_classes(folder / "meta", num_classes=100)
    stats = np.array([byte_stats(x_tr[:, c]) for c in range(3)])  # rows: (mean, std)
    mean, std = stats[:, 0].reshape(1, 3, 1, 1), stats[:, 1].reshape(1, 3, 1, 1)
    return tensor_image_data(normalise(x_tr, mean, std), y_tr,
                             normalise(x_te, mean, std), y_te, classes=classes)


