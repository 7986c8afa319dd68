"""Target ``nir``: the network as a NIR graph (``DIR/network.nir``), written from our own IR.

Norse 1.1.0's ``to_nir`` writes wrong time constants (norse issue 411) and size-1 layers
(issue 412), so the graph is built here with the ``nir`` package (docs/deployment.md
sec. 8): ``Input -> Linear -> CubaLIF -> Linear -> CubaLIF ... -> Output``, with ``Conv2d ->
CubaLIF`` for conv layers (average pooling already folded into the weights by the IR) and a
``Flatten`` (NIR dims, no batch axis) before the first fully connected layer; numpy parameters
of each layer's real shape after pruning (removed neurons and channels are gone; removed
synapses are 0 in the weights, NIR having no sparse weight), time constants in **seconds**.

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

from dpap_deploy.errors import IRError
from dpap_deploy.export import ExportResult, check_layers, register_target
from dpap_deploy.fileio import atomic_path
from dpap_deploy.ir import NetworkIR

SUPPORTED_KINDS = ("fc", "conv", "flatten", "avgpool")
FLATTEN_START_DIM = 0  # NIR: dims of the input type, which has no batch axis


def _synapse_node(l):
    """``Conv2d``, ``Affine`` (a layer with ``input_bias``) or ``Linear`` of weight layer ``l``."""
    import nir

    w = l.masked_weight().astype(np.float32)
    bias = None if l.input_bias is None else l.input_bias.astype(np.float32)
    if l.kind == "conv":
        return nir.Conv2d(input_shape=tuple(l.in_shape[1:]), weight=w, stride=l.stride, padding=l.padding,
                          dilation=1, groups=1, bias=np.zeros(w.shape[0], np.float32) if bias is None else bias)
    return nir.Linear(weight=w) if bias is None else nir.Affine(weight=w, bias=bias)


def _neuron_node(p, shape: tuple, dt_s: float):
    """The NIR node of a population of ``shape`` (:class:`~dpap_deploy.ir.LIFNeurons` variant ->
    ``CubaLIF`` / ``LIF`` / ``IF`` / ``LI``), ``r = 1`` and ``w_in = tau_syn / dt``: what
    ``export/nir_graph.py`` reads back with a weight factor of 1 (docs/deployment.md sec. 8.5)."""
    import nir

    full = lambda v: np.full(shape, v, dtype=np.float32)  # noqa: E731
    model = p.model(dt_s)
    if model == "lif":
        return nir.LIF(tau=full(p.tau_mem_s), r=full(1.0), v_leak=full(p.v_leak), v_threshold=full(p.v_th),
                       v_reset=full(p.v_reset))
    if model == "if":
        return nir.IF(r=full(1.0), v_threshold=full(p.v_th), v_reset=full(p.v_reset))
    if model == "li":
        return nir.LI(tau=full(p.tau_mem_s), r=full(1.0), v_leak=full(p.v_leak))
    return nir.CubaLIF(tau_syn=full(p.tau_syn_s), tau_mem=full(p.tau_mem_s), r=full(1.0), v_leak=full(p.v_leak),
                       v_threshold=full(p.v_th), v_reset=full(p.v_reset), w_in=full(p.tau_syn_s / dt_s))


def to_nir(ir: NetworkIR):
    """The ``nir.NIRGraph`` of a (float) IR. A layer with ``input_bias`` is an ``Affine`` (conv: the
    ``Conv2d``'s bias), one with ``recurrent`` weights has a ``Linear`` node ``NAME_rec`` from its
    population back to it, and the neuron variants are ``LIF``, ``IF`` and ``LI`` nodes.

    Raises:
        UnsupportedLayerError: a layer kind NIR export does not handle, or current encoding (the
            first layer's analog input current; ``CubaLIF`` nodes take it through a synaptic
            current), naming the layer.
    """
    import nir

    check_layers(ir, "nir", SUPPORTED_KINDS, ("lif",), features=("input_bias", "recurrent", "if", "li"))
    in_shape = list(ir.input_shape) if ir.input_shape else [ir.input_size]
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges = []
    prev = "input"
    for l in ir.nodes:
        if l.kind in ("flatten", "avgpool"):
            nodes[l.name] = (nir.Flatten(input_type={"input": np.array(l.in_shape)}, start_dim=FLATTEN_START_DIM)
                             if l.kind == "flatten" else
                             nir.AvgPool2d(kernel_size=np.array([l.pool, l.pool]), stride=np.array([l.pool, l.pool]),
                                           padding=np.array([0, 0])))
            edges.append((prev, l.name))
            prev = l.name
            continue
        shape = l.out_shape if l.kind == "conv" else (l.n_out,)
        nodes[l.name] = _synapse_node(l)
        nodes[f"{l.name}_lif"] = _neuron_node(l.neurons, shape, ir.dt_s)
        edges += [(prev, l.name), (l.name, f"{l.name}_lif")]
        prev = f"{l.name}_lif"
        if getattr(l, "recurrent", None) is not None:  # the loop export/nir_graph.py reads back
            nodes[f"{l.name}_rec"] = nir.Linear(weight=l.recurrent.astype(np.float32))
            edges += [(prev, f"{l.name}_rec"), (f"{l.name}_rec", prev)]
    last = ir.layers[-1]
    nodes["output"] = nir.Output(output_type={"output": np.array(list(last.out_shape) if last.kind == "conv"
                                                                  else [last.n_out])})
    edges.append((prev, "output"))
    meta = {"producer": "dpap-deploy", "dt_s": float(ir.dt_s), "time_steps": int(ir.time_steps), "name": ir.name,
            "dense_shape": {l.name: np.array(l.dense_shape, dtype=np.int64) for l in ir.layers},
            "pool_fold": {l.name: int(l.pool_fold) for l in ir.layers}}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


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
        if lin.weight.shape != l.weight.shape or not np.allclose(lin.weight, l.masked_weight()):
            raise IRError(f"{path}: node {l.name!r} weight differs from the network's")
        taus = {"tau_mem": l.neurons.tau_mem_s, "tau_syn": l.neurons.tau_syn_s, "tau": l.neurons.tau_mem_s}
        if any(hasattr(lif, k) and not np.allclose(getattr(lif, k), v) for k, v in taus.items()):
            raise IRError(f"{path}: node {l.name + '_lif'!r} time constants differ from the network's")
    return g


def run_in_norse(graph, spikes: np.ndarray, dt_s: float) -> np.ndarray:
    """Import ``graph`` with ``norse.torch.from_nir`` (an independent reader) and run input
    spikes ``(T, N, F)`` through it. Returns output spike counts ``(N, C)``."""
    import norse.torch as norse
    import torch

    module = norse.from_nir(graph, dt=dt_s)
    # norse 1.1.0 turns nir.Flatten into torch.nn.Flatten(start_dim, end_dim) with NIR's dims,
    # which count from the first non-batch axis; on batched tensors they are one further
    for sub in module.modules():
        if isinstance(sub, torch.nn.Flatten) and sub.start_dim >= 0:
            sub.start_dim += 1
    x = torch.from_numpy(np.ascontiguousarray(spikes, dtype=np.float32))  # (T, N, F) or (T, N, C, H, W)
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
    if spikes is not None and ir.readout != "spike_count":
        from dpap_deploy.errors import UnsupportedLayerError

        raise UnsupportedLayerError(f'target nir: layer "{ir.layers[-1].name}" is a leaky integrator (membrane readout), '
                                    "which norse.torch.from_nir 1.1.0 does not import; export it without test spikes")
    if spikes is not None:
        import time

        t0 = time.perf_counter()
        result.counts = run_in_norse(g, spikes, ir.dt_s)
        result.seconds["run"] = time.perf_counter() - t0
        result.extra["accuracy_key"] = "nir_in_norse"
        verified += "; norse.torch.from_nir run"
    result.files.append({"path": path, "verified_by": verified})
    result.synapses_per_layer = {l.name: int(np.count_nonzero(l.masked_weight())) // (l.pool_fold ** 2)
                                 for l in ir.layers}
    return result


# -- reading a NIR file back into our IR -----------------------------------------------------
def _uniform(path: str, node: str, key: str, value, shape: tuple, positive: bool = False) -> float:
    """One finite number shared by every neuron of ``node`` (our IR keeps one per population)."""
    from dpap_deploy.errors import NetworkFileError, UnsupportedLayerError

    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NetworkFileError(f"{path}: node {node!r}: {key} is not numeric ({type(value).__name__})") from None
    if a.ndim and a.shape != shape:
        raise NetworkFileError(f"{path}: node {node!r}: {key} has shape {a.shape}; the layer before gives {shape}")
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise NetworkFileError(f"{path}: node {node!r}: {key} is empty or not finite")
    v = float(a.reshape(-1)[0])
    if not np.allclose(a, v, rtol=1e-6, atol=0):
        raise UnsupportedLayerError(f"{path}: node {node!r}: {key} differs between neurons "
                                    f"({a.min():g}..{a.max():g}); our IR keeps one value per population")
    if positive and v <= 0:
        raise NetworkFileError(f"{path}: node {node!r}: {key} = {v:g} must be > 0")
    return v


def _pair(path: str, node: str, key: str, value, lo: int) -> int:
    """An int or an equal pair of ints >= ``lo`` (stride, padding, dilation)."""
    from dpap_deploy.errors import NetworkFileError, UnsupportedLayerError

    if isinstance(value, str):
        raise UnsupportedLayerError(f"{path}: node {node!r}: {key} = {value!r}; this reader takes integers only")
    a = np.asarray(value)
    if a.dtype.kind not in "iuf" or a.size not in (1, 2) or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise NetworkFileError(f"{path}: node {node!r}: {key} = {value!r}; expected an integer or a pair")
    a = a.reshape(-1).astype(np.int64)
    if a.min() != a.max():
        raise UnsupportedLayerError(f"{path}: node {node!r}: {key} = {a.tolist()}; this reader takes equal values "
                                    "in both directions")
    if a[0] < lo:
        raise NetworkFileError(f"{path}: node {node!r}: {key} = {int(a[0])} must be >= {lo}")
    return int(a[0])


def _weight(path: str, node: str, value, ndim: int) -> np.ndarray:
    from dpap_deploy.errors import NetworkFileError

    w = np.asarray(value)
    if w.dtype.kind not in "iuf" or w.ndim != ndim:
        raise NetworkFileError(f"{path}: node {node!r}: weight has shape {w.shape} dtype {w.dtype}; expected a "
                               f"{ndim}-D array of numbers")
    if min(w.shape) < 1 or not np.all(np.isfinite(w)) or np.abs(w).max() > np.finfo(np.float32).max:
        raise NetworkFileError(f"{path}: node {node!r}: weight {w.shape} is empty, not finite or beyond float32")
    return w.astype(np.float32)


def read_nir(path: str) -> NetworkIR:
    """Read a NIR file, ours or another framework's, into a float IR (``export/nir_graph.py``).

    The graph must be a chain of synapse (``Affine``, ``Linear``, ``Conv2d``) + neuron
    (``CubaLIF``, ``LIF``, ``IF``, ``LI``) layers with ``Flatten`` and ``SumPool2d``/``AvgPool2d``
    between them, where a population may feed back into itself through one ``Affine``/``Linear``
    (a recurrent layer: ``FCLayer.recurrent``); biases become ``input_bias``. Each neuron node
    must share its parameters over its neurons; its input scaling (``w_in``, ``r``) is folded into
    the weights (``export/nir_graph.py`` says how, per node type). ``dt_s``, ``time_steps``, the
    name and each layer's ``dense_shape`` and ``pool_fold`` come from the graph's metadata when
    present (third-party files: ``dt`` from the parameters where a writer's convention gives it,
    else 1 ms, norse.torch.from_nir's default; ``T = 1``).
    The mask is the non-zero weights (conv: channel pairs with any non-zero kernel weight).

    Returns:
        NetworkIR with float weights ``(n_out, n_in)`` / ``(C_out, C_in, kH, kW)``, no fixed point.

    Raises:
        NetworkFileError: the file is missing, not a NIR graph, truncated, has wrong shapes,
            non-finite values or sizes that do not chain (names file and node).
        UnsupportedLayerError: a node type, parameter or structure (branches, merges, skip
            connections) this reader does not handle, naming the node, its type and what it takes.
    """
    import nir

    from dpap_deploy.errors import NetworkFileError

    if not os.path.isfile(path):
        raise NetworkFileError(f"{path}: NIR file does not exist")
    try:
        g = nir.read(path, type_check=False)
    except Exception as exc:  # the edge of nir.read: h5py/KeyError/ValueError/... on foreign or truncated files
        raise NetworkFileError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {exc})") from None
    return graph_to_ir(g, path)


def graph_to_ir(g, path: str) -> NetworkIR:
    """The IR of a ``nir.NIRGraph`` read from ``path`` (used in messages); see :func:`read_nir`.

    Raises:
        NetworkFileError, UnsupportedLayerError: as :func:`read_nir`.
    """
    from dpap_deploy.errors import NetworkFileError

    try:
        return _graph_to_ir(g, path)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:  # a graph not shaped as NIR says
        raise NetworkFileError(f"{path}: malformed graph ({type(exc).__name__}: {exc})") from None


def _graph_to_ir(g, path: str) -> NetworkIR:
    from dpap_deploy.export.nir_graph import GraphReader

    return GraphReader(g, path).read()
