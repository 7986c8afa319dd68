"""``SpikeGate``: a Lava process that realises a ``"drop"`` timestep mask of spatio-temporal DPAP.

Spatio-temporal DPAP (spec sec. 4b, docs/dpap.md sec. 7) silences neuron ``i`` at time step ``t``
of every sample. A layer whose ``time_gate`` is ``"drop"`` (networks saved before the ``"hold"``
gate existed, docs/dpap.md sec. 7.4) drops the spike *after* the LIF update: the neuron still
resets, as in the Norse model's ``"drop"`` mode. That is what this process does. ``"hold"`` layers
(the default of new models: no spike and no reset at a masked step) cannot be gated after the
population, whose reset has already happened; they use
:class:`~dpap_deploy.export.gate.GatedLIFReset` (``export/gate/gated_lif.py``) instead.
Lava's ``LIF``/``LIFReset`` (and Loihi's neuron) have no per-neuron, per-step switch, so for a
``"drop"`` layer the exporter puts this process between the population and its outgoing synapses::

    LIFReset.s_out -> SpikeGate.s_in ; SpikeGate.s_out -> Sparse.s_in (and the spike sinks)

It receives and sends in the same time step (no extra synaptic delay: the delay of a Lava
synapse comes from ``Sparse`` sending its previous step's buffer first, see
``lava/proc/sparse/models.py``), and reads the within-sample step from Lava's time step with
the same phase as the population's ``LIFReset`` offset. It is a CPU process model
(``PyLoihiProcessModel``, tags ``fixed_pt`` and ``floating_pt``), so it runs in
``Loihi2SimCfg``; on a Loihi 2 chip it would run on the host, which is why the ``loihi2``,
``netx`` and ``nir`` targets refuse timestep masks instead.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class SpikeGate(AbstractProcess):
    """Pass spikes of a population, dropping neuron ``n`` at within-sample step ``j`` where ``mask[..., j]`` is 0.

    Args:
        shape: the population's shape in Lava (``(n,)``, or ``(W, H, C)`` for a conv layer).
        mask: ``shape + (T,)`` 0/1: 1 passes the spike.
        phase: Lava time step at which the population's within-sample step ``j = 0`` falls,
            modulo ``T``: step ``j = (time_step - phase) mod T`` (``export/lava_sim.py``: layer ``i``
            of the chain has phase ``i + 2``, ``i + 1`` with current encoding: ``first_step()``).
    """

    def __init__(self, shape: tuple, mask: np.ndarray, phase: int, name: str = None):
        super().__init__(shape=shape, name=name)
        mask = np.asarray(mask, dtype=np.int32)
        if mask.shape[:-1] != tuple(shape):
            raise ValueError(f"gate mask {mask.shape} does not match the population {shape} (+ T)")
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.mask = Var(shape=mask.shape, init=mask)
        self.step_offset = Var(shape=(1,), init=int(phase))  # not `phase`: PyLoihiProcessModel uses that name


@implements(proc=SpikeGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PySpikeGateModel(PyLoihiProcessModel):
    """CPU model of :class:`SpikeGate` (same step in, same step out)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    mask: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)
    step_offset: np.ndarray = LavaPyType(np.ndarray, int, precision=16)

    def run_spk(self) -> None:
        s = self.s_in.recv()
        T = self.mask.shape[-1]
        j = (self.time_step - int(self.step_offset[0])) % T
        self.s_out.send((s * self.mask[..., j]).astype(s.dtype))
