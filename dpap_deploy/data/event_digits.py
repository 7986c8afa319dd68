"""*event-digits*: a neuromorphic version of scikit-learn's digits, recorded the way N-MNIST was.

N-MNIST (Orchard et al., "Converting static image datasets to spiking neuromorphic datasets
using saccades", Front. Neurosci. 9:437, 2015) moved an ATIS camera in three saccades
(the edges of a triangle) in front of MNIST digits on a screen. Here the camera is
simulated: each 8x8 digit is upsampled (bilinear) to ``digit_size`` pixels, placed on a
sensor of ``digit_size + 2*margin`` pixels and moved along three saccades
(``(0,-m) -> (m,m) -> (-m,m) -> (0,-m)``, ``m = margin``) in ``substeps`` position updates
each. A DVS pixel emits an ON (OFF) event whenever its log intensity has risen (fallen) by
its contrast threshold since its last event (Lichtsteiner, Posch, Delbruck, IEEE JSSC 43(2),
2008), then ignores changes for ``refractory`` updates. Thresholds vary per pixel
(``threshold_mismatch``, relative standard deviation) like a real sensor's, which is where
the seed enters: the generator is deterministic under its seed.

Events are binned into frames ``(T, 2, H, W)`` (channel 0 ON, 1 OFF), 1 where a pixel had at
least one event of that polarity in the time bin (``binary=True``) or the event count.

The data source ``event-digits`` (``--data event-digits``, the conv families' default) records the
1797 digits once per ``(T, settings, seed)`` and keeps the frames in a cache folder
(:func:`cache_dir`): recording takes about 20 s, reading the cache well under one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from dpap_deploy.data import SOURCES, Dataset, DataRequest, split
from dpap_deploy.errors import DataError

log = logging.getLogger(__name__)
#: ``T`` of event-digits when the run does not ask for one
DEFAULT_TIME_STEPS = 32


@dataclass(frozen=True)
class DVSConfig:
    """Simulated recording settings (see the module docstring).

    Attributes:
        digit_size: side of the upsampled digit, pixels.
        margin: saccade amplitude, pixels; the sensor is ``digit_size + 2*margin`` square.
        substeps: position updates per saccade (the DVS compares at each update).
        threshold: contrast threshold on ``log(I + floor)``.
        threshold_mismatch: relative standard deviation of the per-pixel thresholds.
        refractory: position updates a pixel stays silent after an event.
        floor: dark level added before the log (the digits' background is 0).
    """

    digit_size: int = 16
    margin: int = 2
    substeps: int = 30
    threshold: float = 0.25
    threshold_mismatch: float = 0.05
    refractory: int = 1
    floor: float = 0.1

    @property
    def sensor_size(self) -> int:
        return self.digit_size + 2 * self.margin


def saccade_path(cfg: DVSConfig) -> np.ndarray:
    """Sensor-relative digit offsets ``(3 * substeps + 1, 2)`` (dy, dx) in pixels along the triangle."""
    m = float(cfg.margin)
    corners = np.array([(0.0, -m), (m, m), (-m, m), (0.0, -m)])
    steps = [corners[0][None]]
    for a, b in zip(corners[:-1], corners[1:]):
        f = np.arange(1, cfg.substeps + 1)[:, None] / cfg.substeps
        steps.append(a + f * (b - a))
    return np.concatenate(steps)


def record_events(image: np.ndarray, cfg: DVSConfig, rng: np.random.Generator) -> np.ndarray:
    """Events of one image moved along :func:`saccade_path`.

    Args:
        image: intensities in [0, 1], any square shape (upsampled to ``digit_size``).
        rng: source of the per-pixel threshold mismatch.

    Returns:
        ``(E, 4)`` int array of ``(update index, polarity (0 ON, 1 OFF), y, x)``.
    """
    from scipy import ndimage

    zoom = cfg.digit_size / image.shape[0]
    digit = np.clip(ndimage.zoom(image.astype(np.float64), zoom, order=1), 0.0, 1.0)
    S = cfg.sensor_size
    canvas = np.zeros((S, S))
    canvas[cfg.margin:cfg.margin + cfg.digit_size, cfg.margin:cfg.margin + cfg.digit_size] = digit
    thr = cfg.threshold * (1.0 + cfg.threshold_mismatch * rng.standard_normal((S, S)))
    thr = np.maximum(thr, 1e-3)
    path = saccade_path(cfg)
    ref = np.log(ndimage.shift(canvas, path[0], order=1, mode="constant") + cfg.floor)
    silent_until = np.full((S, S), -1)
    events = []
    for k in range(1, len(path)):
        log_i = np.log(ndimage.shift(canvas, path[k], order=1, mode="constant") + cfg.floor)
        diff = log_i - ref
        ready = silent_until < k
        for pol, fire in ((0, diff >= thr), (1, diff <= -thr)):
            fire &= ready
            ys, xs = np.nonzero(fire)
            if len(ys):
                n = np.floor(np.abs(diff[ys, xs]) / thr[ys, xs])
                ref[ys, xs] += np.sign(diff[ys, xs]) * n * thr[ys, xs]
                silent_until[ys, xs] = k + cfg.refractory
                events.append(np.stack([np.full(len(ys), k), np.full(len(ys), pol), ys, xs], axis=1))
    if not events:
        return np.zeros((0, 4), dtype=np.int64)
    return np.concatenate(events).astype(np.int64)


def bin_events(events: np.ndarray, n_updates: int, time_steps: int, size: int, binary: bool = True) -> np.ndarray:
    """Frames ``(T, 2, H, W)`` float32 from events ``(E, 4)`` over updates ``1..n_updates``."""
    frames = np.zeros((time_steps, 2, size, size), dtype=np.float32)
    if len(events):
        t = np.minimum((events[:, 0] - 1) * time_steps // n_updates, time_steps - 1)
        np.add.at(frames, (t, events[:, 1], events[:, 2], events[:, 3]), 1.0)
    return np.minimum(frames, 1.0) if binary else frames


def make_event_digits(images: np.ndarray, time_steps: int = 20, cfg: DVSConfig = DVSConfig(), seed: int = 0,
                      binary: bool = True) -> np.ndarray:
    """Record every image: ``(N, T, 2, S, S)`` float32 frames (``S = cfg.sensor_size``).

    Raises:
        DataError: ``time_steps`` < 1 or images that are not square 2-D.
    """
    if time_steps < 1:
        raise DataError(f"time steps must be >= 1, got {time_steps}")
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataError(f"event-digits needs square images (N, H, H), got {images.shape}")
    rng = np.random.default_rng(seed)
    n_updates = 3 * cfg.substeps
    out = np.zeros((len(images), time_steps, 2, cfg.sensor_size, cfg.sensor_size), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = bin_events(record_events(img, cfg, rng), n_updates, time_steps, cfg.sensor_size, binary)
    return out


def cache_dir() -> Optional[str]:
    """Where generated data sets are kept: ``$DPAP_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/dpap-deploy``,
    else ``~/.cache/dpap-deploy``; None when ``DPAP_DEPLOY_CACHE`` is set to the empty string (no cache)."""
    if "DPAP_DEPLOY_CACHE" in os.environ:
        return os.environ["DPAP_DEPLOY_CACHE"] or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dpap-deploy")


def _recorded(images: np.ndarray, time_steps: int, cfg: DVSConfig, seed: int) -> np.ndarray:
    """:func:`make_event_digits` of ``images``, through the cache when there is one (frames are 0/1,
    kept as uint8; a cache that cannot be written is skipped, never an error)."""
    folder = cache_dir()
    key = hashlib.sha256(json.dumps([asdict(cfg), int(time_steps), int(seed), len(images),
                                     hashlib.sha256(images.tobytes()).hexdigest()]).encode()).hexdigest()[:16]
    path = os.path.join(folder, f"event-digits-T{time_steps}-{key}.npy") if folder else None
    if path and os.path.isfile(path):
        try:
            x = np.load(path, allow_pickle=False)
            if x.shape == (len(images), time_steps, 2, cfg.sensor_size, cfg.sensor_size):
                return x.astype(np.float32)
        except (OSError, ValueError):
            pass  # a damaged cache file is recorded again
    x = make_event_digits(images, time_steps, cfg, seed)
    if path:
        try:
            from dpap_deploy.fileio import atomic_path

            os.makedirs(folder, exist_ok=True)
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, x.astype(np.uint8))
        except Exception as exc:  # noqa: BLE001 - caching is an optimisation only
            log.debug("event-digits cache not written (%s)", exc)
    return x


def load_event_digits(time_steps: int = 20, cfg: DVSConfig = DVSConfig(), test_fraction: float = 0.2,
                      seed: int = 0, limit: int | None = None) -> Dataset:
    """The event-digits set: scikit-learn's 1797 digits recorded by :func:`make_event_digits`
    (cached on disk, :func:`cache_dir`).

    The train/test split is the same stratified split as :func:`dpap_deploy.data.load_digits`
    for the same ``seed``. ``x`` arrays are ``(N, T, 2, S, S)``.

    Args:
        limit: use only the first ``limit`` digits (for quick tests).
    """
    from sklearn.datasets import load_digits as _sk

    bunch = _sk()
    images = (bunch.images / 16.0)[:limit]
    y = bunch.target.astype(np.int64)[:limit]
    x = _recorded(images, time_steps, cfg, seed)
    x_tr, x_te, y_tr, y_te = split(x, y, test_fraction, seed, "event-digits")
    return Dataset("event-digits", x_tr, y_tr, x_te, y_te, 10, "frames")


@SOURCES.register("event-digits", help="the digits recorded by a simulated DVS camera: (T, 2, 20, 20) frames, "
                                       "10 classes (generated once, then cached)")
def event_digits(arg: Optional[str], req: DataRequest) -> Dataset:
    if arg:
        raise DataError(f"--data event-digits takes no argument, got event-digits:{arg}")
    return load_event_digits(req.time_steps or DEFAULT_TIME_STEPS, test_fraction=req.test_fraction, seed=req.seed)
