"""A network from a file, run in place of a trained one: ``dpap-export --from FILE.net|FILE.nir|FILE.npz``.

A network trained elsewhere (lava-dl/slayer's netx HDF5, a NIR graph from Norse, snnTorch or
sinabs, or one of our IR files) goes through the same stages as a trained one, minus training::

    data (--data) -> read the file (dpap_deploy.readers) -> IR -> export -> verify -> map -> measure -> report

:class:`FileNetwork` stands where the trained Norse model stands in a training run. In ``verify``,
the network's own tool runs the file as the reference the target's run is compared with: each file
type registers that run in :data:`REFERENCES` by suffix (lava-dl's ``netx.hdf5.Network`` in Lava for
``.net``, Norse's ``from_nir`` for ``.nir``; our IR has no other tool, so its run is compared with
the fixed-point emulator only).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Optional, Tuple

import numpy as np

from dpap_deploy.errors import DataError, NetworkFileError
from dpap_deploy.ir import NetworkIR
from dpap_deploy.registry import Registry


@dataclass(frozen=True)
class Reference:
    """How the file's own tool runs it.

    Attributes:
        key: the accuracy key in ``report.json`` (``lava_dl_netx``, ``norse_from_nir``), which names the tool.
        run: ``run(path, ir, x)`` -> ``(counts, spikes)``: output spike counts ``(N, C)`` int and, where
            the tool gives them aligned with our Lava run, the output spikes ``(T, N, C)`` (else None),
            for inputs ``x`` ``(T, N, ...)`` (time first, the test split as the target gets it); ``ir``
            is the network as read.
    """

    key: str
    run: Callable[[str, NetworkIR, np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]]


def _run_netx(path: str, ir: NetworkIR, x: np.ndarray):
    from dpap_deploy.export.lava_sim import SDNN_INPUT_MESSAGE_BITS, is_sigma_delta
    from dpap_deploy.export.netx import run_netx

    bits = SDNN_INPUT_MESSAGE_BITS if is_sigma_delta(ir) else 0  # sigma-delta: graded input and output, as loihi-sim
    spikes = run_netx(path, x, x.shape[0], bits)  # reset every T steps, aligned like loihi-sim's output
    return spikes.sum(axis=0).astype(np.int64), spikes


def _run_nir(path: str, ir: NetworkIR, x: np.ndarray):
    import nir

    from dpap_deploy.export.nir_export import run_in_norse

    return run_in_norse(nir.read(path, type_check=False), x, ir.dt_s), None  # writers leave batch axes


def _load_builtin() -> None:
    REFERENCES.register(".net", Reference("lava_dl_netx", _run_netx),
                        help="lava-dl's netx.hdf5.Network in Lava's Loihi2SimCfg, fixed point")
    REFERENCES.register(".nir", Reference("norse_from_nir", _run_nir), help="Norse's norse.torch.from_nir (float)")


#: the reference run of each network-file type, by suffix (a type without one is compared with the emulator only)
REFERENCES: Registry[Reference] = Registry("reference run", loader=_load_builtin, error=NetworkFileError)


def is_network_file(path: Optional[str]) -> bool:
    """True when ``path`` names a file (``--from FILE``), False for a run folder or None."""
    return bool(path) and os.path.isfile(path)


@dataclass
class FileNetwork:
    """A network read from a file, standing where a trained model stands in the pipeline.

    Attributes:
        path: the file.
        ir: its IR as the reader returned it (float for NIR; fixed point as written for netx).
        reference: how the file's own tool runs it, or None (our IR files).
    """

    path: str
    ir: NetworkIR
    reference: Optional[Reference]

    @property
    def spiking(self) -> bool:
        """True for a LIF network and for a sigma-delta one (event-driven over time steps: it takes spike
        trains as graded input, ``export/lava_sim.py``)."""
        from dpap_deploy.export.lava_sim import is_sigma_delta

        return self.ir.spiking or is_sigma_delta(self.ir)

    @property
    def family(self) -> str:
        """What ``report.json`` names as the network's family: ``file <type>``."""
        return f"file {os.path.splitext(self.path)[1].lower()}"

    def for_data(self, n_features: int, n_classes: int, time_steps: int) -> NetworkIR:
        """The IR to run on data of ``n_features`` inputs, ``n_classes`` classes and ``time_steps`` steps
        per sample: the file's network with its window set to ``time_steps`` (third-party files
        carry none).

        Raises:
            DataError: the data's features or classes do not fit the network (names the file and both sizes).
        """
        ir = self.ir
        if ir.input_size != n_features or ir.n_classes < n_classes:
            raise DataError(f"{self.path}: the network takes {ir.input_size} inputs and has {ir.n_classes} outputs; "
                            f"the data have {n_features} features and {n_classes} classes")
        return replace(ir, time_steps=int(time_steps))

    def run_reference(self, x: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """``(counts (N, C), output spikes (T, N, C) or None)`` of the file's own tool on inputs ``x``
        ``(T, N, ...)``; ``(None, None)`` for a file type without one."""
        return (None, None) if self.reference is None else self.reference.run(self.path, self.ir, x)


def open_network_file(path: str) -> FileNetwork:
    """Read ``path`` with the reader of its suffix (:mod:`dpap_deploy.readers`).

    Raises:
        NetworkFileError, UnsupportedLayerError, IRError: as the readers raise them, naming the file
            and the layer, node or key they could not take.
    """
    from dpap_deploy.readers import read_network_file

    ir = read_network_file(path)
    suffix = os.path.splitext(path)[1].lower()
    return FileNetwork(path, ir, REFERENCES.get(suffix) if suffix in REFERENCES else None)


def file_time_steps(net: FileNetwork, requested: Optional[int]) -> Optional[int]:
    """``T`` for static data into a file's network: ``--time-steps``, else the window the file
    records (our files; third-party files read as ``T = 1``, which means unknown), else None
    (the default of the encoding)."""
    if requested:
        return requested
    return net.ir.time_steps if net.ir.time_steps > 1 else None
