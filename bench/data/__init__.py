"""Datasets: the registry, in-memory loaders and one module per file format.

Importing this package registers every built-in dataset.
"""
from bench.data import cifar, digits, food, idx  # noqa: F401  (register on import)
from bench.data.loaders import (
    TensorBatches,
    class_indices,
    make_loader,
    subsample_per_class,
    tensor_image_data,
    validation_view,
)
from bench.data.registry import (
    DATASETS,
    DatasetInfo,
    ImageData,
    dataset_info,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageData",
    "TensorBatches",
    "class_indices",
    "dataset_info",
    "load_dataset",
    "make_loader",
    "subsample_per_class",
    "tensor_image_data",
    "validation_view",
]
