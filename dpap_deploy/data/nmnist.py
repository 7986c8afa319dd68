"""Read real event sets from disk: N-MNIST (and N-Caltech101-style) ``.bin`` recordings.

Nothing is downloaded: point :func:`load_nmnist` at the folder a user already has (the
unpacked ``Train``/``Test`` folders of N-MNIST, the same files ``tonic.datasets.NMNIST``
caches). The file format is the ATIS one of Orchard et al., "Converting static image datasets
to spiking neuromorphic datasets using saccades", Front. Neurosci. 9:437 (2015), also read by
``tonic.io.read_mnist_file``: every event is 5 bytes, big-endian bit fields

* bits 39-32: x address (pixels), bits 31-24: y address (pixels),
* bit 23: polarity (1 ON, 0 OFF), bits 22-0: timestamp (microseconds).

N-MNIST's sensor is 34 x 34 pixels. Events are binned into frames ``(T, 2, H, W)`` (channel 0
ON, 1 OFF) over each recording's own duration, the same layout as
:mod:`dpap_deploy.data.event_digits`' event-digits, so the same conv SNNs train on either.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from dpap_deploy.data import SOURCES, Dataset, DataRequest
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


def _read_split(folder: str, time_steps: int, per_class: Optional[int], sensor) -> Tuple[np.ndarray, np.ndarray]:
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {folder}/0/*.bin ... {folder}/9/*.bin)")
    bad = [c for c in classes if not c.isdigit()]
    if bad:
        raise DataError(f"{folder}: class folder names must be integer labels, found {bad[:3]}")
    xs, ys = [], []
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(folder, c)) if f.endswith(".bin"))[:per_class]
        for f in files:
            xs.append(events_to_frames(read_nmnist_bin(os.path.join(folder, c, f), sensor), time_steps, sensor))
            ys.append(int(c))
    if not xs:
        raise DataError(f"{folder}: no .bin recordings in its class folders")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load_nmnist(root: str, time_steps: int = 20, per_class: Optional[int] = None,
                sensor: Tuple[int, int] = NMNIST_SENSOR) -> Dataset:
    """N-MNIST from a local folder, as frames ``(N, T, 2, 34, 34)`` (never downloads).

    Args:
        root: folder holding ``Train/<label>/*.bin`` and ``Test/<label>/*.bin`` (the layout of
            the official archives and of tonic's cache).
        time_steps: ``T`` bins per recording.
        per_class: read at most this many recordings per class and split (quick runs).

    Raises:
        DataError: a missing ``Train``/``Test`` folder or any unreadable recording (named).
    """
    splits = {}
    for name in ("Train", "Test"):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            raise DataError(f"{root}: no {name}/ folder (expected {root}/Train/<label>/*.bin and {root}/Test/<label>/*.bin)")
        splits[name] = _read_split(folder, time_steps, per_class, sensor)
    (x_tr, y_tr), (x_te, y_te) = splits["Train"], splits["Test"]
    return Dataset("n-mnist", x_tr, y_tr, x_te, y_te, int(max(y_tr.max(), y_te.max())) + 1)


#: ``T`` bins per recording when the run does not ask for one (the paper's N-MNIST setting)
DEFAULT_TIME_STEPS = 20


@SOURCES.register("nmnist", help="real N-MNIST from a local folder: nmnist:ROOT with ROOT/Train/<label>/*.bin and "
                                 "ROOT/Test/<label>/*.bin; never downloads")
def nmnist(arg: Optional[str], req: DataRequest) -> Dataset:
    if not arg:
        raise DataError("--data nmnist:ROOT needs the folder that holds Train/ and Test/")
    return load_nmnist(os.path.expanduser(arg), req.time_steps or DEFAULT_TIME_STEPS)
