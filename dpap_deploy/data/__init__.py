"""Data: sources registered by name, one :class:`Dataset` type, and the input encodings.

A run's ``--data SPEC`` names a **source** (``docs/data.md``):

* a bundled set: ``digits`` (scikit-learn's 8x8 digits, the default of the MLP families),
  ``wine``, ``breast-cancer``, ``iris`` (scikit-learn's other bundled tables), ``event-digits``
  (the digits recorded by a simulated DVS camera, cached on disk; the default of the conv families);
* a file: ``PATH.npz`` with ``x`` ``(N, F)`` static features, ``(N, T, F)`` spike trains or
  ``(N, T, C, H, W)`` event frames, and ``y`` ``(N,)`` labels;
* a folder: ``nmnist:ROOT`` (real N-MNIST), ``tonic:NAME:ROOT`` (an event data set tonic reads).

Every source returns a :class:`Dataset` of one of three kinds: ``static`` features in
``[0, 1]`` (scaled per feature from the training split), which an encoding (``rate``, ``current``;
:mod:`dpap_deploy.data.encoding`) turns into network input, or ``spikes`` / ``frames`` that are
used as they are, time first ``(T, B, ...)`` as in Norse. Nothing downloads.

Adding a source is one module with a function registered in :data:`SOURCES` (and one import
line in :func:`_load_builtin`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from dpap_deploy.errors import DataError
from dpap_deploy.registry import Registry

KINDS = ("static", "spikes", "frames")
#: ``x`` rank per kind: ``(N, F)``, ``(N, T, F)``, ``(N, T, C, H, W)``
RANKS = {2: "static", 3: "spikes", 5: "frames"}
SHAPES_TAKEN = "(N, F) static features, (N, T, F) spike trains or (N, T, C, H, W) event frames"


@dataclass(frozen=True)
class Dataset:
    """A classification set split into train and test.

    Attributes:
        name: the source's name (``digits``, the ``.npz`` file name, ...).
        x_train, x_test: ``static``: features in [0, 1], ``(N, F)`` float32; ``spikes``: ``(N, T, F)``
            0/1; ``frames``: ``(N, T, C, H, W)`` 0/1 (float32).
        y_train, y_test: integer labels in ``[0, n_classes)``, ``(N,)`` int64.
        n_classes: number of classes.
        kind: ``static``, ``spikes`` or ``frames``; inferred from ``x``'s rank when None.
        notes: what the source changed and said (e.g. event counts clipped to one per step).

    Raises:
        DataError: ``x`` of a rank no kind has.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    kind: Optional[str] = None
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        kind = self.kind or RANKS.get(np.ndim(self.x_train))
        if kind not in KINDS or np.ndim(self.x_train) != {v: k for k, v in RANKS.items()}[kind]:
            raise DataError(f"data {self.name!r}: x has shape {np.shape(self.x_train)}; expected {SHAPES_TAKEN}")
        object.__setattr__(self, "kind", kind)

    @property
    def sample_shape(self) -> tuple:
        """One sample's shape per time step: ``(F,)`` or ``(C, H, W)``."""
        return tuple(int(s) for s in self.x_train.shape[1 if self.kind == "static" else 2:])

    @property
    def n_features(self) -> int:
        """Input features per time step (``C*H*W`` for frames)."""
        return int(np.prod(self.sample_shape))

    @property
    def time_steps(self) -> Optional[int]:
        """``T`` of spike trains and frames; None for static features (the encoding sets it)."""
        return None if self.kind == "static" else int(self.x_train.shape[1])

    def limited(self, n_test: Optional[int]) -> "Dataset":
        """The same set with only the first ``n_test`` test samples (all with None)."""
        if n_test is None:
            return self
        from dataclasses import replace

        return replace(self, x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])


@dataclass(frozen=True)
class DataRequest:
    """What a run asks of a source.

    Attributes:
        time_steps: ``T`` the user asked for (``--time-steps``), or None: the data's own ``T``
            (spike trains, frames), the binning default of event sources, 32 for encoded static data.
        seed: seeds the train/test split (and a generator's randomness).
        test_fraction: share of samples held out for testing (sources without a split of their own).
    """

    time_steps: Optional[int] = None
    seed: int = 0
    test_fraction: float = 0.2


Source = Callable[[Optional[str], DataRequest], Dataset]


def _load_builtin() -> None:
    from dpap_deploy.data import bundled, event_digits, nmnist, npz, tonic_source  # noqa: F401 (they register)


#: every data source by name (``--data NAME`` or ``NAME:ARG``; a path ending in ``.npz`` is ``npz``)
SOURCES: Registry[Source] = Registry("data source", loader=_load_builtin, error=DataError)


def resolve(spec: str) -> Tuple[str, Optional[str]]:
    """``(source name, argument)`` of a ``--data`` value: ``NAME``, ``NAME:ARG`` or a file path.

    Raises:
        DataError: neither a known source nor a file path (lists the sources).
    """
    name, sep, arg = spec.partition(":")
    if sep and name in SOURCES:
        return name, arg
    if spec in SOURCES:
        return spec, None
    if spec.lower().endswith(".npz") or os.path.exists(spec):
        return "npz", spec
    raise DataError(f"--data {spec!r} is neither a file nor a known data source; known data sources: "
                    f"{', '.join(SOURCES.names())} (NAME, NAME:ARG, or a path to an .npz file)")


def load_data(spec: str, request: DataRequest = DataRequest()) -> Dataset:
    """The data set a ``--data`` value names (see the module docstring).

    Raises:
        DataError: an unknown source, or anything the source refuses (one class, a shape no
            model family takes, unreadable files ...), with the file or source named.
    """
    name, arg = resolve(spec)
    ds = SOURCES.get(name)(arg, request)
    return check_classes(ds, name if arg is None else f"{name}:{arg}")


def check_classes(ds: Dataset, what: str) -> Dataset:
    """Refuse a set that cannot teach a classifier: fewer than two classes, or a class absent
    from the training split.

    Raises:
        DataError: naming ``what`` and the classes found.
    """
    classes = np.unique(ds.y_train)
    if ds.n_classes < 2 or len(classes) < 2:
        raise DataError(f"data {what!r} has {len(classes)} class(es) ({classes.tolist()[:5]}); a classifier needs "
                        "at least two")
    missing = sorted(set(range(ds.n_classes)) - set(classes.tolist()))
    if missing:
        raise DataError(f"data {what!r}: classes {missing[:5]} have no training samples")
    return ds


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, what: str = "data"):
    """Stratified train/test split fixed by ``seed`` (scikit-learn's ``train_test_split``).

    Raises:
        DataError: too few samples per class to split (names ``what``).
    """
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError as exc:
        raise DataError(f"{what}: cannot split into train/test ({exc})") from None


def scale_features(x_train: np.ndarray, x_test: np.ndarray):
    """Static features scaled per feature to [0, 1] by the training split's minimum and maximum
    (a constant feature becomes 0); test values outside the training range are clipped.

    Returns:
        ``(x_train, x_test)`` float32.
    """
    lo, hi = x_train.min(axis=0), x_train.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scale = lambda x: np.clip((x - lo) / span, 0.0, 1.0).astype(np.float32)  # noqa: E731
    return scale(x_train), scale(x_test)


def binary_events(x: np.ndarray, what: str) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Spike trains or frames as 0/1 float32: counts above one per step are clipped to one, and said.

    Raises:
        DataError: negative or non-integer values (names ``what`` and the offending value).
    """
    if x.size and x.min() < 0:
        raise DataError(f"{what}: event counts must be >= 0, got {x.min():g}")
    if x.size and not np.array_equal(x, np.round(x)):
        bad = x.reshape(-1)[np.flatnonzero(x.reshape(-1) != np.round(x.reshape(-1)))[0]]
        raise DataError(f"{what}: event counts must be whole numbers, got {bad:g}")
    over = int((x > 1).sum())
    notes = ()
    if over:
        notes = (f"{what}: {over} of {x.size} (pixel, step) entries held more than one event (up to {x.max():g}); "
                 "clipped to one spike per step",)
    return np.minimum(x, 1).astype(np.float32), notes


# the functions earlier versions exported from this module
from dpap_deploy.data.encoding import rate_encode  # noqa: E402,F401
from dpap_deploy.data.bundled import load_digits  # noqa: E402,F401
from dpap_deploy.data.npz import load_npz  # noqa: E402,F401
