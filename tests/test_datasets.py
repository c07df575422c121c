"""File-format loaders, exercised on tiny synthetic files written in each real release format."""
from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import dataset_info, idx, load_dataset
from bench.errors import BenchInputError

# ---------------------------------------------------------------- IDX helpers

def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX: magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, *, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four MNIST-style files (6 train, 4 test images) and return their contents."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 6, 5, 3], dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / stem).write_bytes(idx_bytes(array))
    return arrays


def expected_normalised(pixels: np.ndarray, train: np.ndarray) -> np.ndarray:
    scaled = train.astype(np.float64) / 255
    return (pixels / 255 - scaled.mean()) / scaled.std()


@pytest.fixture
def no_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide a system-wide Fashion-MNIST so tests see only their own files."""
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


@pytest.mark.usefixtures("no_debian")
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("name", "subdir", "classes"), [
    ("mnist", "MNIST/raw", idx.MNIST_CLASSES),
    ("mnist", "mnist", idx.MNIST_CLASSES),
    ("mnist", "", idx.MNIST_CLASSES),
    ("fashion-mnist", "FashionMNIST/raw", idx.FASHION_MNIST_CLASSES),
    ("fashion-mnist", "fashion-mnist", idx.FASHION_MNIST_CLASSES),
    ("fashion-mnist", "", idx.FASHION_MNIST_CLASSES),
])
def test_idx_round_trip(tmp_path: Path, name: str, subdir: str, classes: tuple[str, ...],
                        gz: bool) -> None:
    arrays = write_idx_set(tmp_path / subdir, gz=gz)
    data = load_dataset(name, root=tmp_path)
    train_px, test_px = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    x_tr, y_tr = data.train.tensors
    x_te, y_te = data.test.tensors
    assert x_tr.shape == (6, 1, 28, 28) and x_tr.dtype == torch.float32
    np.testing.assert_allclose(x_tr[:, 0].numpy(), expected_normalised(train_px, train_px),
                               atol=1e-5)
    np.testing.assert_allclose(x_te[:, 0].numpy(), expected_normalised(test_px, train_px),
                               atol=1e-5)
    assert y_tr.tolist() == data.train_targets.tolist() == [3, 1, 4, 1, 5, 9]
    assert y_te.tolist() == data.test_targets.tolist() == [2, 6, 5, 3]
    assert data.classes == classes and len(classes) == 10
    assert (data.in_channels, data.image_size) == (1, 28)


def test_fashion_class_names() -> None:
    assert idx.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert idx.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert dataset_info("fashion-mnist").num_classes == 10


def test_torchvision_layout_wins_over_plain_folder(tmp_path: Path) -> None:
    """torchvision's ``MNIST/raw`` is searched before ``<root>`` itself."""
    write_idx_set(tmp_path, gz=False, seed=1)
    preferred = write_idx_set(tmp_path / "MNIST" / "raw", gz=True, seed=2)
    data = load_dataset("mnist", root=tmp_path)
    train_px = preferred["train-images-idx3-ubyte"]
    np.testing.assert_allclose(data.train.tensors[0][:, 0].numpy(),
                               expected_normalised(train_px, train_px), atol=1e-5)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda raw: b"\x00\x00\x08\x04" + raw[4:], "magic number"),
    (lambda raw: raw[:-10], "data bytes"),
    (lambda raw: raw[:6], "shorter than its header"),
])
def test_malformed_idx_names_file(tmp_path: Path, gz: bool, corrupt, message: str) -> None:
    write_idx_set(tmp_path, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    raw = corrupt(bad.read_bytes())
    if gz:
        bad.unlink()
        bad = tmp_path / "t10k-images-idx3-ubyte.gz"
        raw = gzip.compress(raw)
    bad.write_bytes(raw)
    with pytest.raises(BenchInputError, match=message) as err:
        load_dataset("mnist", root=tmp_path)
    assert str(bad) in str(err.value)


def test_truncated_gzip_names_file(tmp_path: Path) -> None:
    write_idx_set(tmp_path, gz=True)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-8])
    with pytest.raises(BenchInputError, match=str(bad)):
        load_dataset("mnist", root=tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 2, 10, 3])))
    with pytest.raises(BenchInputError, match="label 10"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.usefixtures("no_debian")
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_idx_lists_paths_tried(tmp_path: Path, name: str) -> None:
    write_idx_set(tmp_path / "mnist", gz=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()  # incomplete copies don't count
    with pytest.raises(BenchInputError) as err:
        load_dataset(name, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "--data-root DIR" in message and "--download" in message
    sub = ("MNIST", "mnist") if name == "mnist" else ("FashionMNIST", "fashion-mnist")
    for path in (tmp_path / sub[0] / "raw", tmp_path / sub[1], tmp_path):
        assert str(path) in message
    if name == "fashion-mnist":
        assert str(idx.DEBIAN_FASHION_MNIST) in message


def test_missing_without_root_says_so() -> None:
    with pytest.raises(BenchInputError, match="no --data-root given"):
        load_dataset("mnist", root=None)


def test_download_needs_root() -> None:
    with pytest.raises(BenchInputError, match="needs --data-root"):
        load_dataset("cifar100", root=None, download=True)


def test_download_fetches_into_root_then_reads(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No network in tests: stand in for torchvision's downloader, which writes ``MNIST/raw``."""
    fetched: list[tuple[str, Path]] = []

    def fake_fetch(dataset_class: str):
        def fetch(root: Path) -> None:
            fetched.append((dataset_class, root))
            write_idx_set(root / "MNIST" / "raw", gz=True)
        return fetch

    monkeypatch.setattr(idx, "torchvision_fetch", fake_fetch)
    data = load_dataset("mnist", root=tmp_path, download=True)
    assert fetched == [("MNIST", tmp_path)] and len(data.train) == 6
    load_dataset("mnist", root=tmp_path, download=True)
    assert len(fetched) == 1  # present files are not fetched again


def test_download_failure_is_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(dataset_class: str):
        def fetch(root: Path) -> None:
            raise OSError("network unreachable")
        return fetch

    monkeypatch.setattr(idx, "torchvision_fetch", offline)
    with pytest.raises(BenchInputError, match="network unreachable"):
        load_dataset("mnist", root=tmp_path, download=True)


@pytest.mark.skipif(not (idx.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist() -> None:
    data = load_dataset("fashion-mnist", root=None)
    assert len(data.train) == len(data.train_targets) == 60000
    assert len(data.test) == len(data.test_targets) == 10000
    assert data.num_classes == 10
    assert np.bincount(data.train_targets).tolist() == [6000] * 10
    assert abs(float(data.train.tensors[0].mean())) < 1e-3


# ---------------------------------------------------------------- CIFAR-100

def pickle_bytes(obj: object, *, legacy_numpy: bool) -> bytes:
    """Pickle arrays; ``legacy_numpy`` mimics the real Python 2 files (numpy 1 module, byte strings)."""
    raw = pickle.dumps(obj, protocol=3)  # protocol 3 writes globals as text lines
    if legacy_numpy:
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        raw = raw.replace(b"X\x01\x00\x00\x00|", b"U\x01|")  # dtype byte order as a py2 str
    return raw


def write_cifar(folder: Path, *, legacy_numpy: bool = True) -> dict[str, np.ndarray]:
    """Write train (5 images) / test (3) / meta; returns the (N, 3, 32, 32) images and labels."""
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8),
              "test": rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)}
    images["train"][:, 0] //= 4  # channels with different statistics
    labels = {"train": [7, 0, 99, 7, 42], "test": [1, 99, 0]}
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        content = {b"filenames": [b"x.png"] * len(labels[split]), b"fine_labels": labels[split],
                   b"coarse_labels": [0] * len(labels[split]),
                   b"data": images[split].reshape(len(labels[split]), 3072)}
        (folder / split).write_bytes(pickle_bytes(content, legacy_numpy=legacy_numpy))
    meta = {b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle_bytes(meta, legacy_numpy=legacy_numpy))
    return {"train": images["train"], "test": images["test"],
            "train_labels": np.array(labels["train"]), "test_labels": np.array(labels["test"])}


@pytest.mark.parametrize("legacy_numpy", [True, False])
@pytest.mark.parametrize("direct", [False, True])
def test_cifar100_layout(tmp_path: Path, legacy_numpy: bool, direct: bool) -> None:
    written = write_cifar(tmp_path / "cifar-100-python", legacy_numpy=legacy_numpy)
    data = load_dataset("cifar100", root=tmp_path / "cifar-100-python" if direct else tmp_path)
    x_tr, x_te = data.train.tensors[0].numpy(), data.test.tensors[0].numpy()
    assert x_tr.shape == (5, 3, 32, 32) and x_te.shape == (3, 3, 32, 32)
    scaled = written["train"] / 255
    mean = scaled.mean(axis=(0, 2, 3), keepdims=True)
    std = scaled.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(x_tr, (scaled - mean) / std, atol=1e-5)
    np.testing.assert_allclose(x_te, (written["test"] / 255 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(x_tr.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x_tr.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert data.train_targets.tolist() == written["train_labels"].tolist()
    assert data.test.tensors[1].tolist() == written["test_labels"].tolist()
    assert data.classes == tuple(f"class_{i}" for i in range(100))
    assert (data.in_channels, data.image_size) == (3, 32)


class _RunsCommand:
    """What an attacker would plant: unpickling it calls ``os.system``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar_pickle_with_forbidden_global_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    write_cifar(folder)
    marker = tmp_path / "pwned"
    (folder / "train").write_bytes(
        pickle.dumps({b"data": _RunsCommand(f"touch {marker}"), b"fine_labels": []}))
    with pytest.raises(BenchInputError, match="forbidden global") as err:
        load_dataset("cifar100", root=tmp_path)
    assert str(folder / "train") in str(err.value)
    assert "system" in str(err.value)
    assert not marker.exists()


def test_cifar_malformed_content_names_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    write_cifar(folder)
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                                b"fine_labels": [0, 1]}, protocol=4))
    with pytest.raises(BenchInputError, match="N x 3072") as err:
        load_dataset("cifar100", root=tmp_path)
    assert str(folder / "test") in str(err.value)
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(BenchInputError, match="malformed CIFAR pickle"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar_missing_lists_paths_tried(tmp_path: Path) -> None:
    with pytest.raises(BenchInputError) as err:
        load_dataset("cifar100", root=tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(err.value)
    assert "--download" in str(err.value)


# ---------------------------------------------------------------- Food-101

FOOD_CLASSES = [f"dish_{i:03d}" for i in range(101)]


def write_food(folder: Path) -> None:
    """Three classes with images of assorted sizes (one grayscale); the others have none."""
    rng = np.random.default_rng(0)
    splits = {"train": {"dish_000": ["dish_000/11", "dish_000/12"], "dish_050": ["dish_050/7"]},
              "test": {"dish_100": ["dish_100/3"], "dish_000": ["dish_000/13"]}}
    (folder / "meta").mkdir(parents=True)
    (folder / "meta" / "classes.txt").write_text("\n".join(FOOD_CLASSES) + "\n")
    for split, listing in splits.items():
        (folder / "meta" / f"{split}.json").write_text(json.dumps(listing))
        for k, entry in enumerate(e for entries in listing.values() for e in entries):
            path = folder / "images" / f"{entry}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            h, w = (40 + 10 * k, 60)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if k == 1 else image).save(path)


@pytest.mark.parametrize("direct", [False, True])
def test_food101_folder(tmp_path: Path, direct: bool) -> None:
    write_food(tmp_path / "food-101")
    data = load_dataset("food101", root=tmp_path / "food-101" if direct else tmp_path)
    assert data.classes == tuple(FOOD_CLASSES) and data.num_classes == 101
    assert data.train_targets.tolist() == [0, 0, 50]
    assert data.test_targets.tolist() == [100, 0]
    assert len(data.train) == 3 and len(data.test) == 2
    for dataset, targets in ((data.train, data.train_targets), (data.test, data.test_targets)):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert image.shape == (3, 224, 224) and image.dtype == torch.float32
            assert label == targets[i]
    assert (data.in_channels, data.image_size) == (3, 224)


def test_food101_unknown_class_in_json(tmp_path: Path) -> None:
    write_food(tmp_path / "food-101")
    bad = tmp_path / "food-101" / "meta" / "test.json"
    bad.write_text(json.dumps({"pizza": ["pizza/1"]}))
    with pytest.raises(BenchInputError, match="'pizza'") as err:
        load_dataset("food101", root=tmp_path)
    assert str(bad) in str(err.value)


def test_food101_missing_lists_paths_tried(tmp_path: Path) -> None:
    write_food(tmp_path / "food-101")
    (tmp_path / "food-101" / "meta" / "test.json").unlink()
    with pytest.raises(BenchInputError) as err:
        load_dataset("food101", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "food-101") in message and "--data-root DIR" in message
    assert "\n" not in message
