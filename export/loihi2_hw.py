"""Target ``loihi2``: the ``loihi-sim`` processes compiled for a Loihi 2 chip (``Loihi2HwCfg``).

Running on hardware needs Intel's ``lava-loihi`` extension (available to members of Intel's
Neuromorphic Research Community, not on PyPI). Without it this target writes the same files
as ``loihi-sim`` (``network.npz``: the fixed-point network, whose integers are the chip's),
verifies them in the CPU simulator when inputs are given, and says in the result that the
hardware run was skipped and why. With ``lava-loihi`` importable, the run uses
``Loihi2HwCfg`` instead of the simulator.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import numpy as np

from dpap_deploy.export import ExportResult, register_target
from dpap_deploy.export.lava_sim import export_loihi_sim
from dpap_deploy.ir import NetworkIR

HW_MESSAGE = ("Loihi 2 hardware needs Intel's lava-loihi extension (Intel Neuromorphic Research Community), "
              "which is not installed: the network was written and verified in Lava's CPU simulator "
              "(Loihi2SimCfg fixed_pt, the chip's integer arithmetic) instead")


def lava_loihi_available() -> bool:
    """True when Intel's ``lava-loihi`` (``lava.magma.compiler.subcompilers.nc``) can be imported."""
    try:
        return importlib.util.find_spec("lava.magma.compiler.subcompilers.nc") is not None
    except (ImportError, ValueError):
        return False


@register_target("loihi2")
def export_loihi2(ir: NetworkIR, out_dir: str, spikes: Optional[np.ndarray] = None, progress: bool = False,
                  **_) -> ExportResult:
    """Write the fixed-point network; run it on Loihi 2 with lava-loihi, else in the simulator
    (``result.extra["hardware"]`` says which, ``result.extra["message"]`` why).

    Raises:
        UnsupportedLayerError: layers Lava cannot run, or timestep masks that silence neurons
            inside the window (the simulator's ``GatedLIFReset`` and ``SpikeGate`` are CPU process models,
            not chip features);
            on the chip (lava-loihi installed) also current encoding, whose per-sample bias switch
            (``export/gate/bias_lif.py``) is a CPU process model too. Without lava-loihi a
            current-encoded network is written and verified as ``loihi-sim`` does.
    """
    from dpap_deploy.export import lava_sim as _sim

    _sim.check_supported(ir, "loihi2")
    if lava_loihi_available():  # pragma: no cover - needs Intel's hardware stack
        from dpap_deploy.export import lava_sim

        if ir.input_encoding == "current":
            from dpap_deploy.errors import UnsupportedLayerError

            raise UnsupportedLayerError(
                f'target loihi2: layer "{ir.layers[0].name}" is driven by current encoding, a per-sample bias that '
                "only Lava's CPU simulator switches (loihi-sim); the chip run has no such process model")

        result = export_loihi_sim(ir, out_dir, spikes=None, progress=progress)
        if spikes is not None:
            counts, info = lava_sim.run(result.network, spikes, progress=progress, run_cfg="hw")
            result.counts, result.output_spikes = counts, info["output_spikes"]
            result.seconds = info["seconds"]
        result.target = "loihi2"
        result.extra["hardware"] = True
        return result
    result = export_loihi_sim(ir, out_dir, spikes=spikes, progress=progress)
    result.target = "loihi2"
    result.extra["hardware"] = False
    result.extra["message"] = HW_MESSAGE
    return result
