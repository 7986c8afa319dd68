"""A user's data set in one ``.npz`` file (``--data PATH.npz``): ``x`` and ``y`` (``docs/data.md``).

``x`` decides the kind by its rank:

* ``(N, F)`` static features of any range: scaled per feature to [0, 1] from the training split,
  then encoded (``--encoding rate|current``);
* ``(N, T, F)`` spike trains and ``(N, T, C, H, W)`` event frames: event counts per time step,
  used as they are (``T``, ``C``, ``H``, ``W`` from the data); counts above one per step are
  clipped to one spike, and the run says so. MLP families flatten each frame; conv families take
  frames only.

``y`` holds integer labels ``0..K-1`` with every class present, at least two classes, at least
two samples each (the split is stratified and fixed by the seed).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from dpap_deploy.data import RANKS, SHAPES_TAKEN, SOURCES, Dataset, DataRequest, binary_events, scale_features, split
from dpap_deploy.errors import DataError


def _read(path: str) -> Tuple[np.ndarray, np.ndarray]:
    if os.path.isdir(path):
        raise DataError(f"data file {path!r} is a folder; expected an .npz file with 'x' and 'y'")
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"x", "y"} - keys:
                raise DataError(f"data file {path!r} has keys {sorted(keys)}; it needs 'x' (N, ...) and 'y' (N,)")
            return np.asarray(f["x"]), np.asarray(f["y"])
    except DataError:
        raise
    except Exception as exc:  # zipfile/pickle/format errors from numpy
        raise DataError(f"data file {path!r} is not a readable .npz ({type(exc).__name__}: {exc})") from None


def _check_x(path: str, x: np.ndarray, n_y: int) -> np.ndarray:
    if x.ndim not in RANKS:
        raise DataError(f"data file {path!r}: 'x' has shape {x.shape}, which no model family takes; expected "
                        f"{SHAPES_TAKEN}")
    if len(x) != n_y:
        raise DataError(f"data file {path!r}: 'x' has {len(x)} samples but 'y' has {n_y}")
    if len(x) == 0:
        raise DataError(f"data file {path!r}: 'x' has shape {x.shape}: no samples; expected (N, features...) with N >= 2")
    if int(np.prod(x.shape[1:])) == 0:
        raise DataError(f"data file {path!r}: 'x' has shape {x.shape}: no features per sample; expected at least 1")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"data file {path!r}: 'x' has dtype {x.dtype}; expected real numbers")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(f"data file {path!r}: 'x' contains NaN or infinite values")
    return x


def _check_y(path: str, y: np.ndarray) -> Tuple[np.ndarray, int]:
    if y.ndim != 1:
        raise DataError(f"data file {path!r}: 'y' has shape {y.shape}; expected (N,)")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"data file {path!r}: 'y' must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"data file {path!r}: label {int(y.min())} is out of range; labels must be 0..K-1")
    labels = np.unique(y)  # not np.bincount: a stray label 10**12 must not allocate 10**12 counters
    if len(labels) and int(labels[-1]) >= len(labels):
        first_gap = int(np.flatnonzero(labels != np.arange(len(labels)))[0])
        raise DataError(f"data file {path!r}: label {int(labels[-1])} is out of range: labels must be 0..K-1 with "
                        f"every class present, but only {len(labels)} distinct labels occur (class {first_gap} has "
                        "no samples)")
    if len(labels) == 1:
        raise DataError(f"data file {path!r}: every sample has label {int(labels[0])}; a classifier needs at least "
                        "two classes")
    counts = np.bincount(y, minlength=len(labels))
    if len(counts) and np.any(counts < 2):
        bad = int(np.argmin(counts))
        raise DataError(f"data file {path!r}: class {bad} has {int(counts[bad])} samples; each label "
                        f"0..{len(labels) - 1} needs at least 2 to split train/test")
    return y, len(labels)


def load_npz(path: str, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A user's data set (see the module docstring).

    Raises:
        DataError: the file is missing or unreadable, a key is missing, lengths differ, there are
            no samples or no features, ``x`` has a rank no model family takes, values are complex,
            NaN/inf, or (events) negative or fractional, labels are not integers ``0..K-1`` with
            every class present, there is one class only, or too few samples per class to split.
    """
    x, y = _read(path)
    x = _check_x(path, x, len(y) if y.ndim == 1 else -1)
    y, n_classes = _check_y(path, y)
    kind = RANKS[x.ndim]
    notes: Tuple[str, ...] = ()
    if kind != "static":
        x, notes = binary_events(x, f"data file {os.path.basename(path)!r}")
    x_tr, x_te, y_tr, y_te = split(x, y, test_fraction, seed, f"data file {path!r}")
    if kind == "static":
        x_tr, x_te = scale_features(x_tr, x_te)
    return Dataset(os.path.basename(path), x_tr, y_tr, x_te, y_te, n_classes, kind, notes)


@SOURCES.register("npz", help="PATH.npz with x (N, F) | (N, T, F) | (N, T, C, H, W) and y (N,)")
def npz(arg: Optional[str], req: DataRequest) -> Dataset:
    if not arg:
        raise DataError("--data npz:PATH needs the path of an .npz file")
    return load_npz(os.path.expanduser(arg), req.test_fraction, req.seed)
