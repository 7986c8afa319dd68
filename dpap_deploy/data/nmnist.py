"""Real N-MNIST from a local folder (``--data nmnist:ROOT``), read and binned by tonic.

Nothing is downloaded: point :func:`load_nmnist` at the folder a user already has, in either
layout

* ``ROOT/Train/<label>/*.bin`` and ``ROOT/Test/<label>/*.bin`` (the unpacked official archives), or
* ``ROOT/NMNIST/Train/...`` and ``ROOT/NMNIST/Test/...`` (where ``tonic.datasets.NMNIST(save_to=ROOT)``
  keeps them),

with class folders named by their digit (the label). The file format is the ATIS one of Orchard
et al., "Converting static image datasets to spiking neuromorphic datasets using saccades",
Front. Neurosci. 9:437 (2015): every event is 5 bytes, big-endian bit fields

* bits 39-32: x address (pixels), bits 31-24: y address (pixels),
* bit 23: polarity (1 ON, 0 OFF), bits 22-0: timestamp (microseconds).

Each recording is read by tonic's ``tonic.io.read_mnist_file`` (which also drops the timestamp
overflow markers, events with ``y = 240``) and binned by tonic's
``ToFrame(sensor_size=(34, 34, 2), n_time_bins=T)`` (:func:`dpap_deploy.data.tonic_source.tonic_frames`):
frames ``(T, 2, 34, 34)``, **channel 0 OFF, channel 1 ON** (tonic's order, channel = polarity bit),
rows ``y``, columns ``x``, ``T`` bins of ``(t_last - t_first) // T`` microseconds each. Counts above
one per step are clipped to one spike and said in :attr:`Dataset.notes`, as are the events past the
last whole bin that tonic leaves out.

:func:`read_nmnist_bin` and :func:`events_to_frames` are our own tonic-free reader and binning
(channel 0 ON, 1 OFF; bins cover the whole duration), kept for code that reads single files
without tonic.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from dpap_deploy.data import SOURCES, Dataset, DataRequest, binary_events
from dpap_deploy.data.tonic_source import PER_CLASS, binned_note, check_fits_in_memory, import_tonic, parse_spec, tonic_frames
from dpap_deploy.errors import DataError

NMNIST_SENSOR = (34, 34)  # (H, W) pixels, Orchard et al. 2015
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])


def read_nmnist_bin(path: str, sensor: Tuple[int, int] = NMNIST_SENSOR) -> np.ndarray:
    """Events of one ATIS ``.bin`` recording.

    Args:
        path: the file.
        sensor: ``(H, W)`` of the sensor; events outside it are an error.

    Returns:
        Structured array ``(E,)`` with fields ``t`` (microseconds), ``x``, ``y`` (pixels), ``p`` (1 ON, 0 OFF).

    Raises:
        DataError: missing file, a size that is not a multiple of 5 bytes (truncated), or an
            address outside the sensor (not an N-MNIST file).
    """
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read event file ({exc.strerror or exc})") from None
    if raw.size % 5:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of 5-byte ATIS events (truncated file?)")
    ev = raw.reshape(-1, 5).astype(np.int64)
    out = np.empty(len(ev), dtype=EVENT_DTYPE)
    out["x"] = ev[:, 0]
    out["y"] = ev[:, 1]
    out["p"] = ev[:, 2] >> 7
    out["t"] = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    h, w = sensor
    if len(out) and (out["x"].max() >= w or out["y"].max() >= h):
        raise DataError(f"{path}: event address (x up to {int(out['x'].max())}, y up to {int(out['y'].max())}) "
                        f"outside the {w} x {h} sensor: not an N-MNIST recording")
    return out


def events_to_frames(events: np.ndarray, time_steps: int, sensor: Tuple[int, int] = NMNIST_SENSOR,
                     binary: bool = True) -> np.ndarray:
    """Bin events into ``(T, 2, H, W)`` float32 frames over the recording's duration.

    Bin ``k`` holds events with ``t`` in ``[t0 + k*D/T, t0 + (k+1)*D/T)`` (the last bin also
    its end), ``D`` the time from the first to the last event. ``binary``: 1 where a pixel had at
    least one event of that polarity in the bin, else the count.
    """
    if time_steps < 1:
        raise DataError(f"time steps must be >= 1, got {time_steps}")
    frames = np.zeros((time_steps, 2, *sensor), dtype=np.float32)
    if len(events):
        t = events["t"] - events["t"].min()
        span = max(int(t.max()), 1)
        k = np.minimum(t * time_steps // span, time_steps - 1)
        chan = 1 - events["p"].astype(np.int64)  # ON -> 0, OFF -> 1
        np.add.at(frames, (k, chan, events["y"].astype(np.int64), events["x"].astype(np.int64)), 1.0)
    return np.minimum(frames, 1.0) if binary else frames


def read_nmnist_events(path: str, sensor: Tuple[int, int] = NMNIST_SENSOR) -> np.ndarray:
    """Events of one ATIS ``.bin`` recording, read by tonic's ``tonic.io.read_mnist_file``.

    Returns:
        tonic's structured array ``(E,)`` with fields ``x``, ``y`` (pixels), ``t`` (microseconds),
        ``p`` (1 ON, 0 OFF).

    Raises:
        DataError: missing or unreadable file, a size that is not a multiple of 5 bytes (truncated),
            or an address outside the ``(H, W)`` sensor (not an N-MNIST file); each names the file.
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read event file ({exc.strerror or exc})") from None
    if size % 5:
        raise DataError(f"{path}: {size} bytes is not a whole number of 5-byte ATIS events (truncated file?)")
    tonic = import_tonic()
    try:
        ev = tonic.io.read_mnist_file(path, dtype=tonic.datasets.NMNIST.dtype)
    except OSError as exc:
        raise DataError(f"{path}: cannot read event file ({exc.strerror or exc})") from None
    h, w = sensor
    if len(ev) and (ev["x"].max() >= w or ev["y"].max() >= h):
        raise DataError(f"{path}: event address (x up to {int(ev['x'].max())}, y up to {int(ev['y'].max())}) "
                        f"outside the {w} x {h} sensor: not an N-MNIST recording")
    return ev


def _list_split(folder: str, per_class: Optional[int]) -> List[Tuple[str, int]]:
    """``(file, label)`` of the ``.bin`` recordings in ``folder/<label>/``, sorted, at most ``per_class`` each."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {folder}/0/*.bin ... {folder}/9/*.bin)")
    bad = [c for c in classes if not c.isdigit()]
    if bad:
        raise DataError(f"{folder}: class folder names must be integer labels, found {bad[:3]}")
    files = []
    for c in classes:
        names = sorted(f for f in os.listdir(os.path.join(folder, c)) if f.endswith(".bin"))[:per_class]
        files += [(os.path.join(folder, c, f), int(c)) for f in names]
    if not files:
        raise DataError(f"{folder}: no .bin recordings in its class folders")
    return files


def _read_split(folder: str, files: List[Tuple[str, int]], time_steps: int, sensor):
    """Frames ``(N, T, 2, H, W)`` 0/1 float32, labels, notes (clipping, events left out)."""
    h, w = sensor
    counts = np.zeros((len(files), time_steps, 2, h, w), dtype=np.int16)
    n_events = 0
    for k, (path, _) in enumerate(files):
        ev = read_nmnist_events(path, sensor)
        counts[k] = tonic_frames(ev, (w, h, 2), time_steps, path)
        n_events += len(ev)
    notes = binned_note(folder, time_steps, int(counts.sum(dtype=np.int64)), n_events)
    x, clipped = binary_events(counts, folder)
    return x, np.asarray([label for _, label in files], dtype=np.int64), notes + clipped


def nmnist_folders(root: str) -> Tuple[str, str]:
    """``(train, test)`` folders of an N-MNIST copy: ``ROOT/Train`` + ``ROOT/Test``, else tonic's
    ``ROOT/NMNIST/Train`` + ``ROOT/NMNIST/Test``.

    Raises:
        DataError: ``root`` is not a folder, or neither layout is complete (names the missing folder).
    """
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder (expected {root}/Train/<label>/*.bin and {root}/Test/<label>/*.bin)")
    for base in (root, os.path.join(root, "NMNIST")):
        if any(os.path.isdir(os.path.join(base, s)) for s in ("Train", "Test")):
            for s in ("Train", "Test"):
                if not os.path.isdir(os.path.join(base, s)):
                    raise DataError(f"{base}: no {s}/ folder (expected {base}/Train/<label>/*.bin and "
                                    f"{base}/Test/<label>/*.bin)")
            return os.path.join(base, "Train"), os.path.join(base, "Test")
    raise DataError(f"{root}: no Train/ folder (expected {root}/Train/<label>/*.bin and {root}/Test/<label>/*.bin, "
                    f"or tonic's {root}/NMNIST/Train/... and {root}/NMNIST/Test/...)")


def load_nmnist(root: str, time_steps: int = 20, per_class: Optional[int] = None,
                sensor: Tuple[int, int] = NMNIST_SENSOR) -> Dataset:
    """N-MNIST from a local folder, as 0/1 frames ``(N, T, 2, 34, 34)`` binned by tonic (never downloads).

    Args:
        root: folder holding ``Train/<label>/*.bin`` and ``Test/<label>/*.bin`` (the official
            archives unpacked) or ``NMNIST/Train/...`` and ``NMNIST/Test/...`` (tonic's layout).
        time_steps: ``T`` bins per recording (tonic's ``ToFrame(n_time_bins=T)``).
        per_class: read at most this many recordings per class and split (the first in name order).
        sensor: ``(H, W)`` pixels.

    Returns:
        A ``frames`` :class:`Dataset` named ``n-mnist``: the archives' own train/test split, labels
        the digits of the class folders (``n_classes`` = largest label + 1), channel 0 OFF, 1 ON.

    Raises:
        DataError: missing folders, no recordings, too many frames for memory, or any unreadable
            recording (truncated, addresses outside the sensor; the file is named).
    """
    train, test = nmnist_folders(root)
    files = {s: _list_split(s, per_class) for s in (train, test)}
    check_fits_in_memory(sum(len(f) for f in files.values()), time_steps, (2, *sensor), root)
    (x_tr, y_tr, n_tr), (x_te, y_te, n_te) = (_read_split(s, files[s], time_steps, sensor) for s in (train, test))
    return Dataset("n-mnist", x_tr, y_tr, x_te, y_te, int(max(y_tr.max(), y_te.max())) + 1, "frames", n_tr + n_te)


#: ``T`` bins per recording when the run does not ask for one (the paper's N-MNIST setting)
DEFAULT_TIME_STEPS = 20


@SOURCES.register("nmnist", help="real N-MNIST from a local folder: nmnist:ROOT[?per_class=N] with "
                                 "ROOT/Train/<label>/*.bin and ROOT/Test/<label>/*.bin (or tonic's ROOT/NMNIST/...); "
                                 "read and binned by tonic; never downloads")
def nmnist(arg: Optional[str], req: DataRequest) -> Dataset:
    if not arg:
        raise DataError("--data nmnist:ROOT needs the folder that holds Train/ and Test/ (optionally "
                        f"nmnist:ROOT?{PER_CLASS}=N)")
    root, per_class = parse_spec(arg, "nmnist")
    return load_nmnist(os.path.expanduser(root), req.time_steps or DEFAULT_TIME_STEPS, per_class)
