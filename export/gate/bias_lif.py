"""``BiasScheduleLIF``: a ``LIFReset`` population whose bias changes per sample (current encoding).

With current encoding (``NetworkIR.input_encoding == "current"``) the first population has no
synapses on the chip: the host computes ``W x`` of each analog sample and writes it as the
neurons' bias (``export/quantize.py``, ``current_bias()``). In one long simulation of many
samples (``export/lava_sim.py``) the bias must change when a sample starts, i.e. at the
population's reset steps. Lava's ``LIFReset`` has one fixed ``bias_mant``, so this process adds
a ``bias_table`` ``(n, N + 1)``, one column per sample plus a zero column for the steps after
the last one, and its CPU models set ``bias_mant`` to the column of the sample that starts at
each reset step, then run Lava's own step unchanged:

- ``PyBiasScheduleLifModelBitAcc`` (tags ``bit_accurate_loihi``, ``fixed_pt``) subclasses
  ``PyLifResetModelBitAcc``, whose ``run_spk()`` calls ``scale_bias()`` every step, so the new
  ``bias_mant << bias_exp`` enters ``v`` in that same step (``lava/proc/lif/models.py``;
  docs/deployment.md sec. 2.2-2.3);
- ``PyBiasScheduleLifModelFloat`` (tag ``floating_pt``) subclasses ``PyLifResetModelFloat``,
  which adds ``bias_mant`` to ``v`` directly (docs/deployment.md sec. 3).

On a Loihi 2 chip the host would write the biases between samples; these models run on the CPU
only (``Loihi2SimCfg``), which is why only ``loihi-sim`` deploys current encoding.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat
from lava.proc.lif.process import LIFReset


class BiasScheduleLIF(LIFReset):
    """A ``LIFReset`` population whose ``bias_mant`` is column ``k`` of ``bias_table`` during sample ``k``.

    Sample ``k`` occupies Lava steps ``first_step + k*T .. first_step + k*T + T - 1`` (``T`` =
    ``reset_interval``); the reset at its first step (``reset_offset = first_step % T``) clears
    ``u`` and ``v``, and the bias switches at that same step.

    Args:
        shape: ``(n,)`` neurons.
        bias_table: ``(n, N)`` per-sample biases (integers, ``|m| <= 4095``, for the fixed-point
            model; Norse-scaled floats for the float model); a zero column is appended for the
            steps after the last sample.
        reset_interval: ``T``, steps per sample.
        first_step: the Lava time step at which sample 0 starts (Lava counts from 1).
        **lif: ``du``, ``dv``, ``vth``, ``bias_exp``, ``name`` as for ``LIFReset``.
    """

    def __init__(self, *, shape: tuple, bias_table: np.ndarray, reset_interval: int, first_step: int = 1, **lif):
        table = np.asarray(bias_table)
        if table.ndim != 2 or table.shape[0] != int(np.prod(shape)):
            raise ValueError(f"bias table {table.shape} does not match the population {tuple(shape)} (+ samples)")
        table = np.concatenate([table, np.zeros((table.shape[0], 1), table.dtype)], axis=1)
        super().__init__(shape=shape, bias_mant=table[:, 0], reset_interval=reset_interval,
                         reset_offset=int(first_step) % int(reset_interval), **lif)
        self.bias_table = Var(shape=table.shape, init=table)
        self.first_step = Var(shape=(1,), init=int(first_step))


def _switch_bias(model) -> None:
    """At the first step of sample ``k``, ``bias_mant = bias_table[:, k]`` (the zero column after the last)."""
    rel = int(model.time_step) - int(model.first_step[0])
    if rel >= 0 and rel % model.reset_interval == 0:
        k = min(rel // model.reset_interval, model.bias_table.shape[1] - 1)
        model.bias_mant[:] = model.bias_table[:, k]


@implements(proc=BiasScheduleLIF, protocol=LoihiProtocol)
class PyBiasScheduleLifModelBitAcc(PyLifResetModelBitAcc):
    """Lava's bit-accurate ``LIFReset`` model plus the per-sample bias switch (CPU; tags inherited:
    ``bit_accurate_loihi``, ``fixed_pt``)."""

    implements_process = None  # the parent implements LIFReset; `implements` refuses to overwrite it
    bias_table: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    first_step: np.ndarray = LavaPyType(np.ndarray, int, precision=32)

    def run_spk(self) -> None:
        _switch_bias(self)
        super().run_spk()


@implements(proc=BiasScheduleLIF, protocol=LoihiProtocol)
class PyBiasScheduleLifModelFloat(PyLifResetModelFloat):
    """Lava's floating-point ``LIFReset`` model plus the per-sample bias switch (CPU; tag inherited: ``floating_pt``)."""

    implements_process = None
    bias_table: np.ndarray = LavaPyType(np.ndarray, float)
    first_step: np.ndarray = LavaPyType(np.ndarray, int, precision=32)

    def run_spk(self) -> None:
        _switch_bias(self)
        super().run_spk()
