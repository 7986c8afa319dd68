"""Data sets bundled with scikit-learn (real measurements, no download): static features.

* ``digits``: 1797 handwritten digits, 8x8 pixels of 0..16 (UCI "Optical Recognition of
  Handwritten Digits"), scaled by their known range 16 to [0, 1]; 10 classes.
* ``wine``: 178 wines, 13 chemical measurements of very different ranges (proline up to 1680,
  hue below 2), 3 cultivars (UCI "Wine").
* ``breast-cancer``: 569 tumours, 30 features of cell nuclei, 2 classes (UCI "Breast Cancer
  Wisconsin (Diagnostic)").
* ``iris``: 150 flowers, 4 measurements, 3 species (Fisher 1936).

Tables other than digits are scaled per feature from the training split
(:func:`dpap_deploy.data.scale_features`). The split is stratified and fixed by the seed.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from dpap_deploy.data import SOURCES, Dataset, DataRequest, scale_features, split
from dpap_deploy.errors import DataError


def _no_argument(name: str, arg: Optional[str]) -> None:
    if arg:
        raise DataError(f"--data {name} takes no argument, got {name}:{arg}")


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
    x_tr, x_te, y_tr, y_te = split(x, y, test_fraction, seed, "digits")
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10, "static")


@SOURCES.register("digits", help="scikit-learn's 8x8 handwritten digits (1797 samples, 64 features, 10 classes)")
def digits(arg: Optional[str], req: DataRequest) -> Dataset:
    _no_argument("digits", arg)
    return load_digits(req.test_fraction, req.seed)


def load_table(name: str, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """One of scikit-learn's bundled tables (``wine``, ``breast-cancer``, ``iris``), features scaled
    per feature from the training split."""
    import sklearn.datasets as skd

    loader = {"wine": skd.load_wine, "breast-cancer": skd.load_breast_cancer, "iris": skd.load_iris}[name]
    bunch = loader()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = split(x, y, test_fraction, seed, name)
    x_tr, x_te = scale_features(x_tr, x_te)
    return Dataset(name, x_tr, y_tr, x_te, y_te, int(y.max()) + 1, "static")


def _table(name: str, help: str) -> None:
    def source(arg: Optional[str], req: DataRequest) -> Dataset:
        _no_argument(name, arg)
        return load_table(name, req.test_fraction, req.seed)

    SOURCES.register(name, source, help=help)


_table("wine", "scikit-learn's wine recognition table (178 samples, 13 features of mixed ranges, 3 classes)")
_table("breast-cancer", "scikit-learn's breast cancer Wisconsin table (569 samples, 30 features, 2 classes)")
_table("iris", "scikit-learn's iris table (150 samples, 4 features, 3 classes)")
