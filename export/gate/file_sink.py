"""``FileSink``: a Lava sink that writes what it receives into a memory-mapped ``.npy`` file.

Why not ``lava.proc.io.sink.RingBuffer``: its recording is a Var, and Lava 0.10 reads a Var on
the host one element per channel message (``lava/magma/runtime/runtime.py``, the loop in
``Runtime.get_var``), i.e. ``n * steps`` messages per sink: minutes for a conv network's
hidden populations (issue 14). This process's model runs in its own (forked) process like any
CPU model and writes each step's array as one row of a ``.npy`` file that the host created and
mapped before the run (``numpy.lib.format.open_memmap``); the host reads the file once when the
run is over (:meth:`FileSink.read`), whole. Nothing goes through Lava's channels but the spikes
themselves.

It behaves like the ring buffer in Lava's run loop: the model's ``time_step`` keeps counting over
repeated ``run(RunSteps(n))`` calls (our chunked long run, ``export/lava_sim.py``), so step ``t``
lands in row ``t - 1``; the file is complete as soon as ``run`` returns (the process writes in
its ``run_spk`` of that step, into a shared mapping of the file), and stays readable after
``stop()`` ends the processes. Steps after ``steps`` are received and dropped (a probe window:
only the first samples of a long run are kept).

Tags ``fixed_pt`` and ``floating_pt``: ``Loihi2SimCfg(select_tag=...)`` picks it for either precision.
"""
from __future__ import annotations

import os

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


def _create(path: str, dtype, shape: tuple) -> None:
    """Create ``path``: a ``.npy`` file of zeros ``shape`` (the model maps it again in its own process)."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    mm.flush()
    del mm


class FileSink(AbstractProcess):
    """Record a port's data, one row per Lava time step, in ``path`` (a ``.npy`` file).

    Args:
        shape: the port's shape in Lava (``(n,)``, or ``(W, H, C)`` for a conv population).
        steps: time steps to keep (steps ``1 .. steps``; later steps are received and dropped).
        path: the ``.npy`` file to create (``(steps, *shape)``, zeros until written); it must not
            be read before the run that fills it returns.
        dtype: the file's dtype; ``int8`` holds spikes (0/1) as LIF populations send them. Values
            outside the dtype's range are cast like ``numpy`` casts.

    Raises:
        ValueError: ``steps < 1``.
    """

    def __init__(self, *, shape: tuple, steps: int, path: str, dtype=np.int8, name: str = None):
        if steps < 1:
            raise ValueError(f"FileSink needs steps >= 1, got {steps}")
        shape = tuple(int(s) for s in shape)
        _create(path, dtype, (int(steps),) + shape)
        super().__init__(shape=shape, steps=int(steps), path=os.path.abspath(path), name=name)
        self.path = os.path.abspath(path)
        self.a_in = InPort(shape=shape)

    def read(self, steps_last: bool = True) -> np.ndarray:
        """The recording, read from the file in one piece (call after ``run`` returned).

        Returns:
            ``(*shape, steps)`` as ``RingBuffer.data.get()`` gives it (``steps_last=True``), or the
            file's own ``(steps, *shape)``; column/row ``t - 1`` is Lava step ``t``.
        """
        rec = np.load(self.path)
        return np.ascontiguousarray(np.moveaxis(rec, 0, -1)) if steps_last else rec


@implements(proc=FileSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyFileSinkModel(PyLoihiProcessModel):
    """CPU model of :class:`FileSink`: ``run_spk`` receives the step's array and writes row ``time_step - 1``."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._steps = int(proc_params["steps"])
        self._path = proc_params["path"]
        self._rec = None

    def run_spk(self) -> None:
        data = self.a_in.recv()
        t = self.time_step - 1
        if t >= self._steps:
            return
        if self._rec is None:  # mapped in this (the model's) process, on its first step
            self._rec = np.load(self._path, mmap_mode="r+")
        self._rec[t] = data


#: ports of one :class:`FileSinks` process
MAX_PORTS = 8


class FileSinks(AbstractProcess):
    """Up to :data:`MAX_PORTS` recordings like :class:`FileSink`'s in **one** process: each Lava
    process costs its own synchronisation every time step, so a run that records the output and
    the hidden populations adds one process instead of one per population.

    Ports ``in_0 .. in_{MAX_PORTS-1}`` (:meth:`port`); those beyond ``len(shapes)`` are ``(1,)``,
    unconnected and not read.

    Args:
        shapes: per recording the port's shape in Lava.
        steps: per recording the time steps to keep (the first ones).
        paths: per recording its ``.npy`` file (``(steps, *shape)``).
        dtype: the files' dtype (``int8``: spikes).

    Raises:
        ValueError: no recording, more than :data:`MAX_PORTS`, lists of different lengths, a ``steps`` < 1.
    """

    def __init__(self, *, shapes: list, steps: list, paths: list, dtype=np.int8, name: str = None):
        shapes = [tuple(int(s) for s in shape) for shape in shapes]
        if not 1 <= len(shapes) <= MAX_PORTS or not len(shapes) == len(steps) == len(paths):
            raise ValueError(f"FileSinks takes 1 to {MAX_PORTS} recordings with a shape, steps and path each; "
                             f"got {len(shapes)}, {len(steps)}, {len(paths)}")
        if min(steps) < 1:
            raise ValueError(f"FileSinks needs steps >= 1, got {steps}")
        paths = [os.path.abspath(p) for p in paths]
        for shape, n, path in zip(shapes, steps, paths):
            _create(path, dtype, (int(n),) + shape)
        super().__init__(shapes=shapes, steps=[int(n) for n in steps], paths=paths, name=name)
        self.paths = paths
        for k in range(MAX_PORTS):
            setattr(self, f"in_{k}", InPort(shape=shapes[k] if k < len(shapes) else (1,)))

    def port(self, k: int) -> InPort:
        """Recording ``k``'s in-port."""
        return getattr(self, f"in_{k}")

    def read(self, k: int = 0, steps_last: bool = True) -> np.ndarray:
        """Recording ``k`` as :meth:`FileSink.read` gives it (``(*shape, steps)``), after ``run`` returned."""
        rec = np.load(self.paths[k])
        return np.ascontiguousarray(np.moveaxis(rec, 0, -1)) if steps_last else rec


@implements(proc=FileSinks, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyFileSinksModel(PyLoihiProcessModel):
    """CPU model of :class:`FileSinks`: every step receives each used port and writes row
    ``time_step - 1`` of its file while ``time_step`` is within that recording's ``steps``."""

    in_0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_4: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_5: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_6: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in_7: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._steps = list(proc_params["steps"])
        self._paths = list(proc_params["paths"])
        self._rec = [None] * len(self._paths)

    def run_spk(self) -> None:
        t = self.time_step - 1
        for k, steps in enumerate(self._steps):
            data = getattr(self, f"in_{k}").recv()  # every step: the sender waits for its channel otherwise
            if t >= steps:
                continue
            if self._rec[k] is None:
                self._rec[k] = np.load(self._paths[k], mmap_mode="r+")
            self._rec[k][t] = data


class Recording:
    """One recording of a :class:`FileSinks` (``read()`` as :meth:`FileSink.read`)."""

    def __init__(self, sinks: FileSinks, k: int):
        self.sinks, self.k = sinks, k

    def read(self, steps_last: bool = True) -> np.ndarray:
        """The recording ``(*shape, steps)`` (or ``(steps, *shape)``), after ``run`` returned."""
        return self.sinks.read(self.k, steps_last)
