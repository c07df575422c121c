"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.loaders import tensor_image_data
from bench.data.registry import ImageData, register_dataset


@register_dataset("digits", label="Digits", num_classes=10, in_channels=1, image_size=8,
                  train_size=1257, test_size=540)
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
