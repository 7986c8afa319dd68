"""Target ``nir``: the network as a NIR graph (``DIR/network.nir``), written from our own IR.

Norse 1.1.0's ``to_nir`` writes wrong time constants (norse issue 411) and size-1 layers
(issue 412), so the graph is built here with the ``nir`` package (``shared/specs/deployment.md``
sec. 4): ``Input -> Linear -> CubaLIF -> Linear -> CubaLIF ... -> Output``, numpy parameters
of each layer's real shape after pruning (removed neurons are gone; removed synapses are 0
in ``Linear.weight``, NIR having no sparse weight), time constants in **seconds**.

NIR's ``CubaLIF`` (nir 1.0, ``nir/ir/neuron.py``)::

    tau_syn dI/dt = -I + w_in * x
    tau_mem dv/dt = (v_leak - v) + r * I ;   spike when v > v_threshold, then v = v_reset

Norse's ``LIFCell`` adds each step's input to the current at once (``i <- i + W s``), which
is the Euler step of the first equation with ``w_in = tau_syn / dt``; ``r = 1``. With those,
``norse.torch.from_nir`` rebuilds the same dynamics (``LIBoxCell`` synapse + ``LIFBoxCell``),
which the tests check spike for spike. ``dt`` and ``T`` go into the graph's metadata.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from dpap_deploy.errors import IRError, UnsupportedLayerError
from dpap_deploy.export import ExportResult, register_target
from dpap_deploy.fileio import atomic_path
from dpap_deploy.ir import NetworkIR

SUPPORTED_KINDS = ("fc",)


def to_nir(ir: NetworkIR):
    """The ``nir.NIRGraph`` of a (float) IR.

    Raises:
        UnsupportedLayerError: a layer kind NIR export does not handle (names the layer).
    """
    import nir

    bad = [f"{l.name} ({l.kind}, {l.activation})" for l in ir.layers
           if l.kind not in SUPPORTED_KINDS or l.activation != "lif"]
    if bad:
        raise UnsupportedLayerError(f"target nir supports layer kinds {SUPPORTED_KINDS}; unsupported: {', '.join(bad)}")
    nodes = {"input": nir.Input(input_type={"input": np.array([ir.input_size])})}
    edges = []
    prev = "input"
    for l in ir.layers:
        n, p = l.n_out, l.neurons
        w = np.where(l.mask, l.weight, 0.0).astype(np.float32)
        nodes[l.name] = nir.Linear(weight=w)
        nodes[f"{l.name}_lif"] = nir.CubaLIF(
            tau_syn=np.full(n, p.tau_syn_s, dtype=np.float32),
            tau_mem=np.full(n, p.tau_mem_s, dtype=np.float32),
            r=np.ones(n, dtype=np.float32),
            v_leak=np.full(n, p.v_leak, dtype=np.float32),
            v_threshold=np.full(n, p.v_th, dtype=np.float32),
            v_reset=np.full(n, p.v_reset, dtype=np.float32),
            w_in=np.full(n, p.tau_syn_s / ir.dt_s, dtype=np.float32),
        )
        edges += [(prev, l.name), (l.name, f"{l.name}_lif")]
        prev = f"{l.name}_lif"
    nodes["output"] = nir.Output(output_type={"output": np.array([ir.layers[-1].n_out])})
    edges.append((prev, "output"))
    meta = {"producer": "dpap-deploy", "dt_s": float(ir.dt_s), "time_steps": int(ir.time_steps), "name": ir.name}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def read_checked(path: str, ir: NetworkIR):
    """Read ``path`` back with ``nir.read`` and check it against ``ir`` (weights, time constants).

    Raises:
        IRError: an unreadable file, or a graph that differs from ``ir`` (names the node).
    """
    import nir

    try:
        g = nir.read(path)
    except Exception as exc:  # h5py/KeyError/OSError from a truncated or foreign file
        raise IRError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {exc})") from None
    for l in ir.layers:
        lin, lif = g.nodes.get(l.name), g.nodes.get(f"{l.name}_lif")
        if lin is None or lif is None:
            raise IRError(f"{path}: node {l.name!r} or {l.name + '_lif'!r} missing")
        if lin.weight.shape != (l.n_out, l.n_in) or not np.allclose(lin.weight, np.where(l.mask, l.weight, 0.0)):
            raise IRError(f"{path}: node {l.name!r} weight differs from the network's")
        if not np.allclose(lif.tau_mem, l.neurons.tau_mem_s) or not np.allclose(lif.tau_syn, l.neurons.tau_syn_s):
            raise IRError(f"{path}: node {l.name + '_lif'!r} time constants differ from the network's")
    return g


def run_in_norse(graph, spikes: np.ndarray, dt_s: float) -> np.ndarray:
    """Import ``graph`` with ``norse.torch.from_nir`` (an independent reader) and run input
    spikes ``(T, N, F)`` through it. Returns output spike counts ``(N, C)``."""
    import norse.torch as norse
    import torch

    module = norse.from_nir(graph, dt=dt_s)
    x = torch.from_numpy(np.ascontiguousarray(spikes, dtype=np.float32))
    state, total = None, None
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = module(x[t], state)
            total = out if total is None else total + out
    return total.numpy().astype(np.int64)


@register_target("nir")
def export_nir(ir: NetworkIR, out_dir: str, spikes: Optional[np.ndarray] = None, **_) -> ExportResult:
    """Write ``out_dir/network.nir`` (the float network; NIR carries no fixed point), read it
    back with ``nir.read`` and check it; with ``spikes`` ``(T, N, F)``, run the file as
    ``norse.torch.from_nir`` imports it (``counts``), so its spikes can be compared with ours."""
    import nir

    graph = to_nir(ir)
    path = os.path.join(out_dir, "network.nir")
    with atomic_path(path, suffix=".nir") as tmp:
        nir.write(tmp, graph)
    g = read_checked(path, ir)
    result = ExportResult(target="nir", network=ir)
    result.extra["synapses_counted_from"] = "NIR Linear weights (non-zero)"
    verified = "nir.read (weights and time constants compared)"
    if spikes is not None:
        import time

        t0 = time.perf_counter()
        result.counts = run_in_norse(g, spikes, ir.dt_s)
        result.seconds["run"] = time.perf_counter() - t0
        result.extra["accuracy_key"] = "nir_in_norse"
        verified += "; norse.torch.from_nir run"
    result.files.append({"path": path, "verified_by": verified})
    result.synapses_per_layer = {l.name: int(np.count_nonzero(np.where(l.mask, l.weight, 0.0))) for l in ir.layers}
    return result
