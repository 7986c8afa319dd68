"""``GatedLIFReset``: a ``LIFReset`` population whose threshold test a timestep mask can switch off.

Spatio-temporal DPAP with the ``"hold"`` gate (docs/dpap.md sec. 7.4) silences neuron ``n`` at
within-sample step ``j`` *before* its threshold: the neuron integrates as usual (``u`` and ``v``
update) but does not spike and is **not** reset, so ``v`` keeps its charge into step ``j + 1``.
Lava's ``LIFReset`` has no such switch, and a process after the population (the ``"drop"`` gate's
:class:`~dpap_deploy.export.gate.SpikeGate`) only sees the spike after the reset, so this module
adds a per-neuron, per-step threshold enable to the population itself:

- :class:`GatedLIFReset` (subclass of Lava's ``LIFReset``, ``lava/proc/lif/process.py``) gets a
  ``mask`` Var, the population's shape plus ``(T,)`` 0/1 (1: the threshold test runs), and a
  ``step_offset`` Var: within-sample step ``j = (time_step - step_offset) mod T``, the phase
  convention of ``SpikeGate`` (``export/lava_sim.py``: ``i + first_step(ir)`` for layer ``i``);
- its models subclass Lava's own ``LIFReset`` models (``lava/proc/lif/models.py``):
  ``PyGatedLifResetModelBitAcc`` the bit-accurate ``PyLifResetModelBitAcc`` (tags
  ``bit_accurate_loihi``, ``fixed_pt``), ``PyGatedLifResetModelFloat`` the float
  ``PyLifResetModelFloat`` (tag ``floating_pt``). Both keep Lava's ``run_spk()`` unchanged: it
  receives ``a_in``, resets ``u`` and ``v`` when ``time_step % reset_interval == reset_offset``
  (so ``reset_interval``/``reset_offset`` behave exactly as in ``LIFReset``), runs
  ``subthr_dynamics()``, then ``s_out = spiking_activation()``, ``reset_voltage(s_out)`` and sends
  ``s_out``. The models override only ``spiking_activation()``: Lava's ``v > effective_vth``
  (float: ``v > vth``) AND ``mask[..., j]``. The mask is applied before the reset, so a masked
  neuron neither spikes nor resets; everything else is Lava's arithmetic.

:class:`GatedBiasScheduleLIF` does the same for the current-encoded first population
(:class:`~dpap_deploy.export.gate.BiasScheduleLIF`, ``export/gate/bias_lif.py``).

On Loihi 2 this is one threshold-enable bit per neuron and step, which a microcode neuron
program could read; Lava's built-in LIF has none, and these models run on the CPU only
(``Loihi2SimCfg``), which is why ``loihi2``, ``netx`` and ``nir`` refuse timestep masks.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat
from lava.proc.lif.process import LIFReset

from dpap_deploy.export.gate.bias_lif import (BiasScheduleLIF, PyBiasScheduleLifModelBitAcc,
                                               PyBiasScheduleLifModelFloat)


def _add_gate(proc, shape: tuple, mask: np.ndarray, step_offset: int) -> None:
    mask = np.asarray(mask)
    if mask.ndim != len(shape) + 1 or mask.shape[:-1] != tuple(shape) or mask.shape[-1] < 1:
        raise ValueError(f"threshold mask {mask.shape} does not match the population {tuple(shape)} (+ T)")
    proc.mask = Var(shape=mask.shape, init=(mask != 0).astype(np.int32))
    proc.step_offset = Var(shape=(1,), init=int(step_offset))  # not `phase`: PyLoihiProcessModel uses that name


class GatedLIFReset(LIFReset):
    """Lava's ``LIFReset`` whose neuron ``n`` skips its threshold test (no spike, no reset) at
    within-sample step ``j`` where ``mask[..., j]`` is 0.

    Args:
        shape: the population's shape in Lava (``(n,)``, or ``(W, H, C)`` for a conv layer).
        mask: ``shape + (T,)`` 0/1 (``T`` = steps per sample): 1 runs the threshold test.
        step_offset: Lava time step at which the population's within-sample step ``j = 0`` falls,
            modulo ``T``: ``j = (time_step - step_offset) mod T`` (as :class:`SpikeGate`'s phase; with
            ``reset_interval = T`` it is the step whose ``reset_offset`` clears ``u`` and ``v``).
        **lif: ``du``, ``dv``, ``vth``, ``bias_mant``, ``bias_exp``, ``reset_interval``,
            ``reset_offset``, ``name`` as for ``LIFReset`` (fixed point: integer registers,
            ``vth`` in units of 2^6 of ``v``; float: Norse-scaled values).

    Raises:
        ValueError: a mask whose shape is not ``shape + (T,)``.
    """

    def __init__(self, *, shape: tuple, mask: np.ndarray, step_offset: int, **lif):
        super().__init__(shape=shape, **lif)
        _add_gate(self, tuple(shape), mask, step_offset)


class GatedBiasScheduleLIF(BiasScheduleLIF):
    """:class:`~dpap_deploy.export.gate.BiasScheduleLIF` (current encoding's first population) with
    the same threshold mask as :class:`GatedLIFReset`.

    Args:
        mask, step_offset: as for :class:`GatedLIFReset`.
        **kwargs: ``shape``, ``bias_table``, ``reset_interval``, ``first_step`` and the LIF
            registers, as for ``BiasScheduleLIF``.
    """

    def __init__(self, *, mask: np.ndarray, step_offset: int, **kwargs):
        super().__init__(**kwargs)
        _add_gate(self, tuple(kwargs["shape"]), mask, step_offset)


def _enabled(model) -> np.ndarray:
    """``mask[..., j]`` as bool for the current Lava step (``j = (time_step - step_offset) mod T``)."""
    T = model.mask.shape[-1]
    return model.mask[..., (int(model.time_step) - int(model.step_offset[0])) % T] != 0


class _ThresholdMask:
    """What every gated model adds to its Lava parent (a mixin, first in the bases): the ``mask`` and
    ``step_offset`` Vars' types and ``spiking_activation()`` limited to the neurons the mask enables at
    this step. Lava finds inherited ``LavaPyType`` declarations (its compiler reads them with
    ``getattr`` on the model class, ``lava/magma/compiler/builders/py_builder.py``), as its own LIF
    models inherit theirs from ``AbstractPyLifModelFixed``."""

    mask: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)
    step_offset: np.ndarray = LavaPyType(np.ndarray, int, precision=16)

    def spiking_activation(self) -> np.ndarray:
        # bool, as Lava's: run_spk() resets v[s_out] with it (an int array would index neurons)
        return super().spiking_activation() & _enabled(self)


@implements(proc=GatedLIFReset, protocol=LoihiProtocol)
class PyGatedLifResetModelBitAcc(_ThresholdMask, PyLifResetModelBitAcc):
    """Lava's bit-accurate ``LIFReset`` model (``lava/proc/lif/models.py``, ``PyLifResetModelBitAcc``;
    tags inherited: ``bit_accurate_loihi``, ``fixed_pt``) whose spikes, and therefore resets, are
    limited to the neurons the mask enables at this step."""

    implements_process = None  # the parent implements LIFReset; `implements` refuses to overwrite it


@implements(proc=GatedLIFReset, protocol=LoihiProtocol)
class PyGatedLifResetModelFloat(_ThresholdMask, PyLifResetModelFloat):
    """Lava's floating-point ``LIFReset`` model (``lava/proc/lif/models.py``, ``PyLifResetModelFloat``;
    tag inherited: ``floating_pt``) with the same threshold mask."""

    implements_process = None


@implements(proc=GatedBiasScheduleLIF, protocol=LoihiProtocol)
class PyGatedBiasScheduleLifModelBitAcc(_ThresholdMask, PyBiasScheduleLifModelBitAcc):
    """:class:`~dpap_deploy.export.gate.PyBiasScheduleLifModelBitAcc` (Lava's bit-accurate ``LIFReset``
    model plus the per-sample bias) with the threshold mask (tags inherited: ``bit_accurate_loihi``, ``fixed_pt``)."""

    implements_process = None


@implements(proc=GatedBiasScheduleLIF, protocol=LoihiProtocol)
class PyGatedBiasScheduleLifModelFloat(_ThresholdMask, PyBiasScheduleLifModelFloat):
    """:class:`~dpap_deploy.export.gate.PyBiasScheduleLifModelFloat` with the threshold mask (tag inherited: ``floating_pt``)."""

    implements_process = None
