"""How samples become network input: the encodings of static features, and event data as it is.

Static features ``x`` ``(B, F)`` in [0, 1] reach a spiking network through an **encoding**
(``--encoding``, registered in :data:`ENCODINGS`, ``docs/data.md``):

* ``rate``: Bernoulli rate coding, channel ``f`` spikes at each step with probability ``x[:, f]``;
  fresh spikes every epoch, a fixed seed for the test split;
* ``current``: the analog value itself at every step (``(T, B, F)``, the same each step); the
  network's first population integrates it as a constant input current (``input_current`` of
  :class:`~dpap_deploy.train.models.SequentialNet`), which Lava realises as that population's
  bias (``bias_mant``).

Spike trains ``(B, T, F)`` and frames ``(B, T, C, H, W)`` are used as they are, made time first
``(T, B, ...)`` as Norse expects; ANNs take static features ``(B, F)`` unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dpap_deploy.errors import DataError
from dpap_deploy.registry import Registry

#: an encoding of static features: ``(x (B, F) in [0, 1], T, seed) -> (T, B, F) float32``
Encoding = Callable[[np.ndarray, int, int], np.ndarray]
ENCODINGS: Registry[Encoding] = Registry("encoding", error=DataError)


@ENCODINGS.register("rate", help="Bernoulli spikes, probability = feature value per step")
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


@ENCODINGS.register("current", help="the analog value as a constant input current into the first population "
                                    "(Lava: its bias)")
def current_encode(x: np.ndarray, time_steps: int, seed: int = 0) -> np.ndarray:
    """The analog features at every step: ``(T, B, F)`` float32, the same at each step (``seed`` unused:
    the encoding is deterministic).

    Raises:
        DataError: ``time_steps`` < 1.
    """
    if time_steps < 1:
        raise DataError(f"time steps must be >= 1, got {time_steps}")
    return np.ascontiguousarray(np.broadcast_to(x.astype(np.float32)[None], (time_steps,) + x.shape))


@dataclass(frozen=True)
class InputEncoder:
    """Turns a batch of samples of a :class:`~dpap_deploy.data.Dataset` into network input.

    Attributes:
        kind: the data's kind (``static``, ``spikes``, ``frames``).
        encoding: for static data into a spiking network: an :data:`ENCODINGS` name; None otherwise.
        time_steps: ``T`` of the encoded input (static data; event data bring their own).
        spiking: the network is an SNN (time-first input) rather than an ANN.
    """

    kind: str
    encoding: str = None
    time_steps: int = 1
    spiking: bool = True

    def __call__(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Input for samples ``x`` ``(B, ...)``: SNN ``(T, B, ...)``, ANN ``(B, ...)`` (float32)."""
        if not self.spiking:
            return np.ascontiguousarray(x, dtype=np.float32)
        if self.kind == "static":
            return ENCODINGS.get(self.encoding)(x, self.time_steps, seed)
        return np.ascontiguousarray(np.swapaxes(x, 0, 1), dtype=np.float32)

    @property
    def analog(self) -> bool:
        """True when the input is analog current rather than spikes."""
        return self.spiking and self.kind == "static" and self.encoding == "current"
