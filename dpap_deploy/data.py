"""Data: scikit-learn's bundled digits or a user's ``.npz``, and spike encoding.

Shapes follow Norse: spike trains are time first, ``(T, B, F)`` with ``T`` time
steps, ``B`` samples and ``F`` input channels (64 for the 8x8 digits).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from dpap_deploy.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """A classification set split into train and test.

    Attributes:
        name: ``"digits"`` or the ``.npz`` file name.
        x_train, x_test: intensities in [0, 1], shape ``(N, F)`` float32 (images flattened).
        y_train, y_test: integer labels in ``[0, n_classes)``, shape ``(N,)`` int64.
        n_classes: number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        """Input channels ``F`` per time step."""
        return int(self.x_train.shape[1])


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 real samples, no download).

    Pixels (0..16) are scaled to [0, 1]. The split is stratified and fixed by ``seed``.

    Returns:
        Dataset with ``F = 64`` and 10 classes (1437 train / 360 test at the default 0.2).
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split(x, y, test_fraction, seed)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def load_npz(path: str, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A user's data set: an ``.npz`` with ``x`` of shape ``(N, ...)`` and ``y`` of shape ``(N,)``.

    ``x`` is flattened per sample to ``(N, F)`` and scaled to [0, 1] by its
    maximum (it must be non-negative: values are spike probabilities per time step).
    ``y`` must hold integer class labels ``0..K-1``.

    Raises:
        DataError: the file is missing or unreadable, a key is missing, lengths differ,
            there are no samples or no features, values are complex, NaN/inf or negative,
            labels are not integers ``0..K-1`` with every class present, or there are too
            few samples per class to split.
    """
    if os.path.isdir(path):
        raise DataError(f"data file {path!r} is a folder; expected an .npz file with 'x' and 'y'")
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = {"x", "y"} - keys
            if missing:
                raise DataError(
                    f"data file {path!r} has keys {sorted(keys)}; it needs 'x' (N, ...) and 'y' (N,)"
                )
            x = np.asarray(f["x"])
            y = np.asarray(f["y"])
    except DataError:
        raise
    except Exception as exc:  # zipfile/pickle/format errors from numpy
        raise DataError(f"data file {path!r} is not a readable .npz ({type(exc).__name__}: {exc})") from None
    if x.ndim < 2:
        raise DataError(f"data file {path!r}: 'x' has shape {x.shape}; expected (N, features...)")
    if y.ndim != 1:
        raise DataError(f"data file {path!r}: 'y' has shape {y.shape}; expected (N,)")
    if len(x) != len(y):
        raise DataError(f"data file {path!r}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    if len(x) == 0:
        raise DataError(f"data file {path!r}: 'x' has shape {x.shape}: no samples; expected (N, features...) with N >= 2")
    if int(np.prod(x.shape[1:])) == 0:
        raise DataError(f"data file {path!r}: 'x' has shape {x.shape}: no features per sample; expected at least 1")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"data file {path!r}: 'x' has dtype {x.dtype}; expected real numbers")
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(f"data file {path!r}: 'x' contains NaN or infinite values")
    if x.min() < 0:
        raise DataError(f"data file {path!r}: 'x' has negative values (min {x.min():g}); expected intensities >= 0")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"data file {path!r}: 'y' must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"data file {path!r}: label {int(y.min())} is out of range; labels must be 0..K-1")
    labels = np.unique(y)  # not np.bincount: a stray label 10**12 must not allocate 10**12 counters
    if int(labels[-1]) >= len(labels):
        first_gap = int(np.flatnonzero(labels != np.arange(len(labels)))[0])
        raise DataError(
            f"data file {path!r}: label {int(labels[-1])} is out of range: labels must be 0..K-1 with every class "
            f"present, but only {len(labels)} distinct labels occur (class {first_gap} has no samples)"
        )
    n_classes = len(labels)
    counts = np.bincount(y, minlength=n_classes)
    if np.any(counts < 2):
        bad = int(np.argmin(counts))
        raise DataError(
            f"data file {path!r}: class {bad} has {int(counts[bad])} samples; each label 0..{n_classes - 1} "
            "needs at least 2 to split train/test"
        )
    peak = x.max()
    x = (x / peak if peak > 0 else x).astype(np.float32)
    try:
        x_tr, x_te, y_tr, y_te = _split(x, y, test_fraction, seed)
    except ValueError as exc:
        raise DataError(f"data file {path!r}: cannot split into train/test ({exc})") from None
    return Dataset(os.path.basename(path), x_tr, y_tr, x_te, y_te, n_classes)


def rate_encode(x: np.ndarray, time_steps: int, seed: int) -> np.ndarray:
    """Bernoulli rate coding: at each time step channel ``f`` spikes with probability ``x[:, f]``.

    Args:
        x: intensities in [0, 1], shape ``(B, F)``.
        time_steps: ``T`` >= 1.
        seed: seed of the random generator (the same seed gives the same spikes).

    Returns:
        spikes of shape ``(T, B, F)``, float32 of 0/1.

    Raises:
        DataError: ``time_steps`` < 1.
    """
    if time_steps < 1:
        raise DataError(f"time steps must be >= 1, got {time_steps}")
    rng = np.random.default_rng(seed)
    u = rng.random((time_steps,) + x.shape, dtype=np.float32)
    return (u < x[None]).astype(np.float32)
