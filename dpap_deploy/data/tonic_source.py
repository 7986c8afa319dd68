"""Event data sets read by tonic (``--data tonic:NAME:ROOT``) and tonic's ``ToFrame`` binning.

tonic (``tonic.datasets``, ``tonic.transforms.ToFrame``; tonic 1.7) reads the recordings of
event-camera data sets and bins events into frames. This module uses it in two ways:

* :func:`tonic_frames` bins one recording with ``ToFrame(sensor_size=(W, H, P), n_time_bins=T)``;
  :mod:`dpap_deploy.data.nmnist` (``--data nmnist:ROOT``) uses it on the ``.bin`` files it reads;
* the ``tonic`` source builds ``tonic.datasets.NAME`` on files already under ``ROOT`` and bins each
  recording the same way.

**What tonic's ToFrame gives** (``tonic/functional/to_frame.py``, ``tonic/slicers.py``):
``(T, P, H, W)`` event counts (int16) with channel ``p``: for the two-polarity cameras here
channel 0 holds OFF events (``p = 0``) and channel 1 ON events (``p = 1``); rows are ``y``, columns
``x`` (pixels). The ``T`` bins are ``w = (t_last - t_first) // T`` microseconds wide (integer
division of the recording's own duration) starting at its first event; events at or after
``t_first + T*w`` (always the last one) are left out, and a recording shorter than ``T``
microseconds gives empty frames. Every run's :attr:`Dataset.notes` says how many events were left
out, and counts above one per step are clipped to one spike (:func:`dpap_deploy.data.binary_events`).

**Nothing downloads.** tonic's data sets call ``self.download()`` (or unpack an archive, or exit)
when their ``_check_exists()`` finds the files incomplete. The class used here is a subclass of
the same name (tonic derives the folder ``ROOT/NAME`` from the class name) whose
``_check_exists()`` raises :class:`~dpap_deploy.errors.DataError` naming the folder tonic expects
and what is missing, before tonic can fetch anything, and whose ``download()`` raises too.

tonic itself is imported only when one of these functions runs (``import tonic`` also imports
torch: about 3 s alone, 0.3 s once torch is loaded).
"""
from __future__ import annotations

import inspect
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dpap_deploy.data import SOURCES, Dataset, DataRequest, binary_events, split
from dpap_deploy.errors import DataError

#: ``T`` time steps per recording when the run does not ask for one
DEFAULT_TIME_STEPS = 20
#: the spec option that limits recordings per class and split (``...?per_class=N``)
PER_CLASS = "per_class"
TONIC_PIN = "tonic>=1.7.0,<1.8"

#: tonic's event-camera classification sets whose recordings bin into ``(T, 2, H, W)`` frames, with
#: what tonic 1.7's ``_check_exists()`` wants under ``ROOT/NAME``: whether the archive file
#: (``self.filename``) must be present, and at least how many files of which type its folder holds.
FRAME_SETS: Dict[str, Tuple[bool, str, int]] = {
    "ASLDVS": (True, ".mat", 100800),
    "CIFAR10DVS": (True, ".aedat4", 1000),
    "DVSGesture": (True, ".npy", 100),
    "DVSLip": (False, ".npy", 100),
    "NCALTECH101": (True, ".bin", 8709),
    "NMNIST": (True, ".bin", 10000),
    "POKERDVS": (True, ".npy", 20),
}


def import_tonic():
    """The ``tonic`` module, imported on first use.

    Raises:
        DataError: tonic is not installed (says how to install it).
    """
    try:
        import tonic
    except ImportError as exc:
        raise DataError(f"event data through tonic needs the tonic package ({exc}); install it with "
                        f"pip install '{TONIC_PIN}'") from None
    return tonic


def parse_spec(arg: str, what: str) -> Tuple[str, Optional[int]]:
    """``(path, per_class)`` of a folder argument ``PATH`` or ``PATH?per_class=N``.

    A path that exists as written is taken whole (even with a ``?`` in it).

    Raises:
        DataError: an option other than ``per_class``, or ``N`` not a whole number >= 1 (names ``what``).
    """
    path, sep, query = arg.rpartition("?")
    if not sep or os.path.exists(arg):
        return arg, None
    key, eq, value = query.partition("=")
    if key != PER_CLASS or not eq:
        raise DataError(f"{what}: unknown option {query!r}; the only option is ?{PER_CLASS}=N (recordings per class "
                        "and split)")
    if not value.isdigit() or int(value) < 1:
        raise DataError(f"{what}: ?{PER_CLASS}= takes a whole number >= 1, got {value!r}")
    return path, int(value)


def check_fits_in_memory(n: int, time_steps: int, frame_shape: Sequence[int], what: str) -> None:
    """Refuse to read ``n`` recordings whose float32 frames ``(n, T, C, H, W)`` would take more than a
    third of this machine's memory (clipping and stacking need about three times that at their peak).

    Raises:
        DataError: with the size, the machine's memory and the ``?per_class=N`` way out.
    """
    need = 4 * n * time_steps * int(np.prod(frame_shape))
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > total / 3:
        raise DataError(f"{what}: {n} recordings as ({time_steps}, {', '.join(map(str, frame_shape))}) float32 frames "
                        f"take {need / 2**30:.1f} GiB, more than a third of this machine's {total / 2**30:.0f} GiB; "
                        f"read fewer with ?{PER_CLASS}=N or use fewer --time-steps")


def tonic_frames(events: np.ndarray, sensor_size: Tuple[int, int, int], time_steps: int, what: str) -> np.ndarray:
    """One recording binned by tonic's ``ToFrame(sensor_size=sensor_size, n_time_bins=time_steps)``.

    Args:
        events: structured array with fields ``x``, ``y`` (pixels), ``t`` (microseconds), ``p``
            (polarity 0 .. P-1), as tonic's readers return it.
        sensor_size: ``(W, H, P)``, tonic's order.
        time_steps: ``T`` bins over the recording's own duration (see the module docstring).
        what: the recording, for messages.

    Returns:
        ``(T, P, H, W)`` int16 event counts (channel ``p``: 0 OFF, 1 ON). An empty recording gives
        zeros of that shape (tonic's ``ToFrame`` gives ``(T, P, W, H)`` there); events out of time
        order are sorted first (tonic's time bins assume order).

    Raises:
        DataError: ``time_steps`` < 1, or an event address or polarity outside ``sensor_size``
            (names ``what``).
    """
    if time_steps < 1:
        raise DataError(f"time steps must be >= 1, got {time_steps}")
    w, h, p = (int(s) for s in sensor_size)
    if len(events) == 0:
        return np.zeros((time_steps, p, h, w), dtype=np.int16)
    for field, size, name in (("x", w, "x address"), ("y", h, "y address"), ("p", p, "polarity")):
        v = events[field].astype(np.int64)
        if v.min() < 0 or v.max() >= size:
            raise DataError(f"{what}: {name} {int(v.min() if v.min() < 0 else v.max())} outside the "
                            f"{w} x {h} x {p} (W x H x polarities) sensor")
    t = events["t"]
    if np.any(t[1:] < t[:-1]):
        events = events[np.argsort(t, kind="stable")]
    tonic = import_tonic()
    frames = tonic.transforms.ToFrame(sensor_size=(w, h, p), n_time_bins=time_steps)(events)
    return np.asarray(frames, dtype=np.int16)


def binned_note(what: str, time_steps: int, n_binned: int, n_events: int) -> Tuple[str, ...]:
    """The note saying how many events tonic's time bins left out (none when all were binned)."""
    if n_binned >= n_events:
        return ()
    return (f"{what}: tonic's ToFrame(n_time_bins={time_steps}) binned {n_binned} of {n_events} events; the "
            f"{n_events - n_binned} left out fell at or after the end of the last whole bin (bins are "
            "(t_last - t_first) // T microseconds wide)",)


def frame_set_names() -> List[str]:
    """The tonic data sets this source bins into frames (those of :data:`FRAME_SETS` the installed
    tonic has)."""
    tonic = import_tonic()
    return [n for n in FRAME_SETS if hasattr(tonic.datasets, n)]


def _missing(ds, name: str) -> str:
    """What tonic's ``_check_exists()`` did not find under ``ds.location_on_system``."""
    archive_needed, ext, n_files = FRAME_SETS[name]
    where = ds.location_on_system
    wants = []
    filename = getattr(ds, "filename", None)
    if archive_needed and filename:
        path = os.path.join(where, filename)
        wants.append(f"the archive {path} ({'present' if os.path.isfile(path) else 'missing'})")
    folder = os.path.join(where, ds.folder_name) if ds.folder_name else where
    found = sum(1 for _ in _walk_files(folder, ext))
    wants.append(f"at least {n_files} {ext} files under {folder} (found {found})")
    return " and ".join(wants)


def _walk_files(folder: str, ext: str):
    for path, _, files in os.walk(folder):
        for f in files:
            if f.endswith(ext):
                yield os.path.join(path, f)


def offline_class(name: str):
    """``tonic.datasets.NAME`` made unable to download: a subclass of the same name (tonic's folder
    is ``save_to/NAME``) whose ``_check_exists()`` raises when tonic's own check fails.

    Raises:
        DataError: ``name`` is not one of :func:`frame_set_names` (lists them).
    """
    tonic = import_tonic()
    names = frame_set_names()
    canon = {n.lower(): n for n in names}.get(name.lower())
    if canon is None:
        other = [n for n in getattr(tonic.datasets, "__all__", []) if n not in names]
        raise DataError(f"tonic:{name}: not an event-camera classification set tonic {tonic.__version__} can read into "
                        f"frames; those are: {', '.join(names)}"
                        + (f" (tonic's other sets, audio or not classification: {', '.join(other)})" if other else ""))
    base = getattr(tonic.datasets, canon)

    def _check_exists(self, *args, **kwargs):
        ok = base._check_exists(self, *args, **kwargs)
        if not ok or ok is NotImplementedError:
            raise DataError(f"tonic:{canon}: the data is not under {self.location_on_system}: tonic "
                            f"{tonic.__version__} wants {_missing(self, canon)}; nothing was downloaded")
        return True

    def _refuse(self, *args, **kwargs):
        raise DataError(f"tonic:{canon}: tonic tried to fetch the data into {self.location_on_system}; this source "
                        "never downloads: put the files there first")

    return type(canon, (base,), {"_check_exists": _check_exists, "download": _refuse,
                                 "_copy_and_extract_local_data": _refuse, "__module__": __name__,
                                 "__doc__": f"tonic.datasets.{canon} that never downloads."})


def _path(ds, i: int) -> Optional[str]:
    """The file of recording ``i`` where tonic keeps paths in ``ds.data`` (None where it keeps arrays)."""
    data = ds.data[i] if i < len(ds.data) else None
    return data if isinstance(data, str) else None


def _sample_name(ds, i: int) -> str:
    return _path(ds, i) or f"{ds.location_on_system} recording {i}"


def _select(ds, per_class: Optional[int]) -> List[int]:
    """Indices of the recordings to read, in file name order (tonic lists some sets in directory
    order): all, or the first ``per_class`` of each class."""
    order = sorted(range(len(ds.targets)), key=lambda i: (_path(ds, i) or "", i))
    if per_class is None:
        return order
    seen: Dict = {}
    keep = []
    for i in order:
        t = ds.targets[i]
        if seen.get(t, 0) < per_class:
            seen[t] = seen.get(t, 0) + 1
            keep.append(i)
    return keep


def _read(ds, what: str, idx: List[int]):
    """``(events, target)`` of recording ``idx``, tonic's reader errors turned into DataError."""
    for i in idx:
        try:
            yield i, ds[i]
        except DataError:
            raise
        except Exception as exc:  # tonic's readers raise whatever numpy/h5py/zip raise on a bad file
            raise DataError(f"{_sample_name(ds, i)}: tonic's {what} reader failed ({type(exc).__name__}: {exc})") from None


def _bin_set(ds, name: str, idx: List[int], sensor_size, time_steps: int):
    """Frames ``(N, T, P, H, W)`` int16, raw targets, events binned and read."""
    w, h, p = sensor_size
    x = np.zeros((len(idx), time_steps, p, h, w), dtype=np.int16)
    targets, n_events = [], 0
    for k, (i, (events, target)) in enumerate(_read(ds, name, idx)):
        x[k] = tonic_frames(events, sensor_size, time_steps, _sample_name(ds, i))
        n_events += len(events)
        targets.append(target)
    return x, targets, int(x.sum(dtype=np.int64)), n_events


def _sensor_size(ds, name: str, idx: List[int]) -> Tuple[Tuple[int, int, int], bool]:
    """``(sensor_size, measured)``: the class's ``sensor_size`` ``(W, H, P)``, or, for sets whose
    recordings differ in size (``sensor_size = None``), the largest ``(W, H, 2)`` among ``idx``."""
    size = getattr(type(ds), "sensor_size", None)
    if size is not None:
        return tuple(int(s) for s in size), False
    w = h = 1
    for _, (events, _) in _read(ds, name, idx):
        if len(events):
            w, h = max(w, int(events["x"].max()) + 1), max(h, int(events["y"].max()) + 1)
    return (w, h, 2), True


def _labels(targets: Sequence, name: str) -> Tuple[Dict, Tuple[str, ...]]:
    """Map tonic's targets (ints or class names) to 0..K-1, in sorted order."""
    classes = sorted(set(targets), key=lambda t: (not isinstance(t, (int, np.integer)), t))
    mapping = {t: k for k, t in enumerate(classes)}
    if all(isinstance(t, (int, np.integer)) and int(t) == k for t, k in mapping.items()):
        return mapping, ()
    shown = ", ".join(f"{t}->{k}" for t, k in list(mapping.items())[:12]) + (" ..." if len(mapping) > 12 else "")
    return mapping, (f"tonic:{name}: labels renumbered 0..{len(classes) - 1} in sorted order ({shown})",)


def load_tonic(name: str, root: str, time_steps: int = DEFAULT_TIME_STEPS, per_class: Optional[int] = None,
               test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A tonic event data set from files already under ``root/NAME``, as frames ``(N, T, P, H, W)``.

    Args:
        name: ``tonic.datasets`` class name (``NMNIST``, ``DVSGesture``, ``POKERDVS``,
            ``NCALTECH101`` ...; any case).
        root: the ``save_to`` folder given to tonic; tonic reads ``root/NAME``.
        time_steps: ``T`` bins per recording (tonic's ``ToFrame(n_time_bins=T)``).
        per_class: at most this many recordings per class and split (the first in file name order).
        test_fraction, seed: the stratified split of sets without a train/test split of their own.

    Returns:
        A ``frames`` :class:`Dataset` (0/1 float32, labels 0..K-1) named ``tonic-NAME``, with the
        data set's own split where its constructor takes ``train``.

    Raises:
        DataError: tonic missing, an unknown ``name`` (lists the readable ones), files tonic wants
            missing under ``root/NAME`` (named; nothing downloads), a recording tonic cannot read or
            with events outside the sensor (named), or frames too large for memory.
    """
    cls = offline_class(name)
    name = cls.__name__
    if not os.path.isdir(root):
        raise DataError(f"tonic:{name}: {root} is not a folder (tonic reads {os.path.join(root, name)})")
    has_split = "train" in inspect.signature(cls.__init__).parameters
    parts = {"train": cls(save_to=root, train=True), "test": cls(save_to=root, train=False)} if has_split \
        else {"all": cls(save_to=root)}
    idx = {k: _select(ds, per_class) for k, ds in parts.items()}
    notes: Tuple[str, ...] = ()
    sizes = [_sensor_size(ds, name, idx[k]) for k, ds in parts.items()]
    sensor = tuple(max(size[j] for size, _ in sizes) for j in range(3))
    if any(measured for _, measured in sizes):
        notes += (f"tonic:{name}: recordings differ in size; frames are {sensor[0]} x {sensor[1]} (W x H), the "
                  "largest, each recording in the top left corner",)
    check_fits_in_memory(sum(map(len, idx.values())), time_steps, sensor[::-1],
                         f"tonic:{name} under {os.path.join(root, name)}")
    xs, ts, binned, n_events = {}, {}, 0, 0
    for k, ds in parts.items():
        xs[k], ts[k], b, e = _bin_set(ds, name, idx[k], sensor, time_steps)
        binned, n_events = binned + b, n_events + e
    notes += binned_note(f"tonic:{name}", time_steps, binned, n_events)
    mapping, label_notes = _labels([t for k in ts for t in ts[k]], name)
    notes += label_notes
    ys = {k: np.asarray([mapping[t] for t in ts[k]], dtype=np.int64) for k in ts}
    for k in xs:
        xs[k], clip = binary_events(xs[k], f"tonic:{name} {k}")
        notes += clip
    if has_split:
        x_tr, y_tr, x_te, y_te = xs["train"], ys["train"], xs["test"], ys["test"]
        if not len(x_te):
            raise DataError(f"tonic:{name}: no test recordings under {parts['test'].location_on_system}")
    else:
        x_tr, x_te, y_tr, y_te = split(xs["all"], ys["all"], test_fraction, seed, f"tonic:{name} under {root}")
    return Dataset(f"tonic-{name}", x_tr, y_tr, x_te, y_te, len(mapping), "frames", notes)


@SOURCES.register("tonic", help="an event data set tonic reads from a local folder: tonic:NAME:ROOT[?per_class=N] "
                                "(NAME as in tonic.datasets, e.g. NMNIST, DVSGesture, POKERDVS; files under "
                                "ROOT/NAME); binned by tonic's ToFrame; never downloads")
def tonic_source(arg: Optional[str], req: DataRequest) -> Dataset:
    name, sep, rest = (arg or "").partition(":")
    if not name or not sep or not rest:
        raise DataError("--data tonic:NAME:ROOT needs a tonic data set name and the folder that holds ROOT/NAME "
                        f"(e.g. tonic:NMNIST:~/data), optionally ?{PER_CLASS}=N")
    root, per_class = parse_spec(rest, f"tonic:{name}")
    return load_tonic(name, os.path.expanduser(root), req.time_steps or DEFAULT_TIME_STEPS, per_class,
                      req.test_fraction, req.seed)
