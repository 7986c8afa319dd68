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


def to_nir(ir: NetworkIR):
    """The ``nir.NIRGraph`` of a (float) IR.

    Raises:
        UnsupportedLayerError: a layer kind NIR export does not handle, or current encoding (the
            first layer's analog input current; ``CubaLIF`` nodes take it through a synaptic
            current), naming the layer.
    """
    import nir

    check_layers(ir, "nir", SUPPORTED_KINDS, ("lif",))
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
        p = l.neurons
        if l.kind == "conv":
            shape = l.out_shape
            nodes[l.name] = nir.Conv2d(input_shape=tuple(l.in_shape[1:]), weight=l.masked_weight().astype(np.float32),
                                       stride=l.stride, padding=l.padding, dilation=1, groups=1,
                                       bias=np.zeros(shape[0], dtype=np.float32))
        else:
            shape = (l.n_out,)
            nodes[l.name] = nir.Linear(weight=l.masked_weight().astype(np.float32))
        nodes[f"{l.name}_lif"] = nir.CubaLIF(
            tau_syn=np.full(shape, p.tau_syn_s, dtype=np.float32),
            tau_mem=np.full(shape, p.tau_mem_s, dtype=np.float32),
            r=np.ones(shape, dtype=np.float32),
            v_leak=np.full(shape, p.v_leak, dtype=np.float32),
            v_threshold=np.full(shape, p.v_th, dtype=np.float32),
            v_reset=np.full(shape, p.v_reset, dtype=np.float32),
            w_in=np.full(shape, p.tau_syn_s / ir.dt_s, dtype=np.float32),
        )
        edges += [(prev, l.name), (l.name, f"{l.name}_lif")]
        prev = f"{l.name}_lif"
    nodes["output"] = nir.Output(output_type={"output": np.array([ir.layers[-1].n_out])})
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
        if not np.allclose(lif.tau_mem, l.neurons.tau_mem_s) or not np.allclose(lif.tau_syn, l.neurons.tau_syn_s):
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
    """Read a NIR file of the structure :func:`to_nir` writes back into a float IR.

    The graph must be a chain ``Input -> (Linear | Conv2d) -> CubaLIF -> ... -> Output`` with
    ``Flatten`` between conv and fully connected layers; ``Affine`` and conv biases are taken
    only when zero. Each ``CubaLIF`` must share ``tau_syn``, ``tau_mem`` (s), ``v_threshold``,
    ``v_leak``, ``v_reset`` over its neurons, have ``r = 1`` and ``w_in = tau_syn / dt`` (how
    Norse's ``LIFCell`` adds its input, see the module docstring). ``dt_s``, ``time_steps``, the
    name and each layer's ``dense_shape`` and ``pool_fold`` come from the graph's metadata when
    present (third-party files: ``dt = tau_syn / w_in`` of the first population, ``T = 1``).
    The mask is the non-zero weights (conv: channel pairs with any non-zero kernel weight).

    Returns:
        NetworkIR with float weights ``(n_out, n_in)`` / ``(C_out, C_in, kH, kW)``, no fixed point.

    Raises:
        NetworkFileError: the file is missing, not a NIR graph, truncated, not a chain, has
            wrong shapes, non-finite values or sizes that do not chain (names file and node).
        UnsupportedLayerError: a node type or parameter this reader does not handle (named).
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
    return _ChainReader(g, path).read()


class _ChainReader:
    """Walks a NIR chain ``Input -> ... -> Output`` node by node into IR nodes (see :func:`read_nir`)."""

    def __init__(self, g, path: str):
        import nir

        from dpap_deploy.errors import NetworkFileError

        self.path, self.cur = path, "input"
        nodes, edges = getattr(g, "nodes", None), getattr(g, "edges", None)
        if not isinstance(nodes, dict) or not nodes or edges is None:
            raise NetworkFileError(f"{path}: the graph has no nodes or edges")
        self.nodes = nodes
        self.meta = g.metadata if isinstance(getattr(g, "metadata", None), dict) else {}
        self.nxt = self._successors(edges)
        self.inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
        if len(self.inputs) != 1:
            self.fail(f"the graph has {len(self.inputs)} Input nodes; expected one")
        self.dt = self.meta_number("dt_s", float, None)
        self.out: list = []        # IR nodes so far
        self.syn = None            # (name, kind, weight, conv geometry) waiting for its CubaLIF

    def fail(self, what, kind=None):
        from dpap_deploy.errors import NetworkFileError

        raise (kind or NetworkFileError)(f"{self.path}: {what}")

    def _successors(self, edges) -> dict:
        nxt, prv = {}, {}
        for e in edges:
            if len(e) != 2 or not all(isinstance(x, str) for x in e):
                self.fail(f"edge {e!r} is not a pair of node names")
            a, b = e
            for x in (a, b):
                if x not in self.nodes:
                    self.fail(f"edge {a!r} -> {b!r} names node {x!r}, which the graph does not have")
            if a in nxt or b in prv:
                self.fail(f"edge {a!r} -> {b!r}: node {a if a in nxt else b!r} has two "
                          f"{'outputs' if a in nxt else 'inputs'}; this reader takes a chain")
            nxt[a], prv[b] = b, a
        return nxt

    def meta_number(self, key, kind, default):
        if key not in self.meta:
            return default
        a = np.asarray(self.meta[key])
        if a.size != 1 or a.dtype.kind not in "iuf" or not np.isfinite(a).all() or float(a.reshape(-1)[0]) <= 0 \
                or (kind is int and a.reshape(-1)[0] != round(float(a.reshape(-1)[0]))):
            self.fail(f"metadata {key!r} = {self.meta[key]!r}; expected a positive {kind.__name__}")
        return kind(a.reshape(-1)[0])

    def read(self) -> NetworkIR:
        from dpap_deploy.errors import DpapError, NetworkFileError, UnsupportedLayerError

        try:
            return self._read()
        except DpapError as exc:
            if isinstance(exc, (NetworkFileError, UnsupportedLayerError)):
                raise
            raise NetworkFileError(f"{self.path}: {exc}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a node without the fields its type promises
            raise NetworkFileError(f"{self.path}: node {self.cur!r}: malformed ({type(exc).__name__}: {exc})") from None

    def _read(self) -> NetworkIR:
        import nir

        T = self.meta_number("time_steps", int, 1)
        meta = self.meta
        name = meta.get("name") if isinstance(meta.get("name"), str) and meta.get("name") else \
            os.path.splitext(os.path.basename(self.path))[0]
        self.cur = self.inputs[0]
        in_type = getattr(self.nodes[self.cur], "input_type", None)
        in_type = in_type.get("input") if isinstance(in_type, dict) else None
        if in_type is None or np.asarray(in_type).dtype.kind not in "iu":
            self.fail(f"node {self.cur!r}: input_type {getattr(self.nodes[self.cur], 'input_type', None)!r}; "
                      "expected {'input': shape}")
        in_shape = tuple(int(s) for s in np.asarray(in_type).reshape(-1))
        if len(in_shape) not in (1, 3) or min(in_shape) < 1:
            self.fail(f"node {self.cur!r}: input shape {list(in_shape)}; expected [F] or [C, H, W] of positive sizes")
        shape, seen = in_shape, {self.cur}
        while True:
            if self.cur not in self.nxt:
                self.fail(f"node {self.cur!r} has no outgoing edge; the chain must end in an Output node")
            self.cur = self.nxt[self.cur]
            if self.cur in seen:
                self.fail(f"node {self.cur!r} is reached twice: the graph has a cycle")
            seen.add(self.cur)
            node = self.nodes[self.cur]
            if isinstance(node, nir.Output):
                if self.syn is not None:
                    self.fail(f"node {self.syn[0]!r} has no CubaLIF after it")
                break
            shape = self._node(node, shape)
        layers = [n for n in self.out if n.kind in ("fc", "conv")]
        if not layers:
            self.fail("the graph has no Linear/Conv2d + CubaLIF layer")
        if self.dt is None or not (np.isfinite(self.dt) and self.dt > 0):
            self.fail(f"time step dt = {self.dt!r} is not a positive number")
        return NetworkIR(name=name, input_size=int(np.prod(in_shape)), time_steps=T, dt_s=float(self.dt),
                         nodes=self.out, metadata={"read_from": self.path, "format": "nir"},
                         input_shape=in_shape if len(in_shape) == 3 else None)

    def _node(self, node, shape: tuple) -> tuple:
        """Take one node; returns the shape after it."""
        import nir

        from dpap_deploy.errors import UnsupportedLayerError
        from dpap_deploy.ir import Flatten

        cur = self.cur
        if isinstance(node, nir.Flatten):
            if self.syn is not None or len(shape) != 3:
                self.fail(f"node {cur!r}: Flatten after {'a synapse' if self.syn else f'shape {list(shape)}'}; "
                          "expected it between a (C, H, W) population or input and a Linear node")
            self.out.append(Flatten(cur, shape))
            return (int(np.prod(shape)),)
        if isinstance(node, (nir.Linear, nir.Affine, nir.Conv2d)) and self.syn is not None:
            self.fail(f"node {cur!r} follows synapse node {self.syn[0]!r} without a CubaLIF between them")
        if isinstance(node, (nir.Linear, nir.Affine)):
            if isinstance(node, nir.Affine) and np.any(np.asarray(node.bias) != 0):
                self.fail(f"node {cur!r}: Affine with a non-zero bias; our IR has no bias", UnsupportedLayerError)
            w = _weight(self.path, cur, node.weight, 2)
            if len(shape) != 1 or w.shape[1] != shape[0]:
                self.fail(f"node {cur!r}: weight {w.shape} takes {w.shape[1]} inputs but the node before gives "
                          f"{list(shape)}")
            self.syn = (cur, "fc", w, None)
            return (w.shape[0],)
        if isinstance(node, nir.Conv2d):
            return self._conv(node, shape)
        if isinstance(node, nir.CubaLIF):
            self._population(node, shape)
            return shape
        self.fail(f"node {cur!r} has type {type(node).__name__}, which this reader does not handle (it takes Input, "
                  "Linear, Affine with zero bias, Conv2d, Flatten, CubaLIF, Output)", UnsupportedLayerError)

    def _conv(self, node, shape: tuple) -> tuple:
        from dpap_deploy.errors import UnsupportedLayerError

        cur, path = self.cur, self.path
        w = _weight(path, cur, node.weight, 4)
        if len(shape) != 3 or w.shape[1] != shape[0]:
            self.fail(f"node {cur!r}: kernel {w.shape} takes {w.shape[1]} channels but the node before gives "
                      f"{list(shape)}")
        if np.any(np.asarray(node.bias) != 0):
            self.fail(f"node {cur!r}: Conv2d with a non-zero bias; our IR has no bias", UnsupportedLayerError)
        stride = _pair(path, cur, "stride", node.stride, 1)
        padding = _pair(path, cur, "padding", node.padding, 0)
        for key in ("dilation", "groups"):
            if _pair(path, cur, key, getattr(node, key), 1) != 1:
                self.fail(f"node {cur!r}: {key} = {getattr(node, key)!r}; this reader takes 1 only",
                          UnsupportedLayerError)
        if node.input_shape is not None and tuple(np.asarray(node.input_shape).reshape(-1)) != shape[1:]:
            self.fail(f"node {cur!r}: input_shape {node.input_shape} but the node before gives {list(shape)}")
        out = (w.shape[0], (shape[1] + 2 * padding - w.shape[2]) // stride + 1,
               (shape[2] + 2 * padding - w.shape[3]) // stride + 1)
        if min(out) < 1:
            self.fail(f"node {cur!r}: kernel {w.shape} does not fit input {list(shape)}")
        self.syn = (cur, "conv", w, (shape, stride, padding))
        return out

    def _population(self, node, shape: tuple) -> None:
        from dpap_deploy.errors import UnsupportedLayerError
        from dpap_deploy.ir import ConvLayer, FCLayer, LIFNeurons

        cur = self.cur
        if self.syn is None:
            self.fail(f"node {cur!r}: CubaLIF without a Linear or Conv2d node before it")
        p = {k: _uniform(self.path, cur, k, getattr(node, k), shape, positive=k.startswith("tau"))
             for k in ("tau_syn", "tau_mem", "r", "v_threshold", "v_leak", "v_reset", "w_in")}
        if abs(p["r"] - 1) > 1e-6:
            self.fail(f"node {cur!r}: r = {p['r']:g}; our LIF has r = 1", UnsupportedLayerError)
        if p["w_in"] <= 0:
            self.fail(f"node {cur!r}: w_in = {p['w_in']:g} must be > 0")
        if self.dt is None:
            self.dt = p["tau_syn"] / p["w_in"]
        if not np.isclose(p["w_in"], p["tau_syn"] / self.dt, rtol=1e-4):
            self.fail(f"node {cur!r}: w_in = {p['w_in']:g} but tau_syn / dt = {p['tau_syn'] / self.dt:g}; our LIF "
                      "(Norse's LIFCell) adds its input with w_in = tau_syn / dt", UnsupportedLayerError)
        lname, lkind, w, conv = self.syn
        neurons = LIFNeurons(tau_syn_s=p["tau_syn"], tau_mem_s=p["tau_mem"], v_th=p["v_threshold"],
                             v_leak=p["v_leak"], v_reset=p["v_reset"])
        dense_shapes = self.meta.get("dense_shape") if isinstance(self.meta.get("dense_shape"), dict) else {}
        pool_folds = self.meta.get("pool_fold") if isinstance(self.meta.get("pool_fold"), dict) else {}
        dense = dense_shapes.get(lname)
        dense = tuple(int(s) for s in np.asarray(dense).reshape(-1)) if dense is not None else w.shape[:2]
        fold = pool_folds.get(lname, 1)
        fold = int(fold) if np.asarray(fold).dtype.kind in "iu" and int(fold) >= 1 else 1
        if lkind == "fc":
            self.out.append(FCLayer(lname, w, w != 0, neurons, dense, pool_fold=fold))
        else:
            in_sh, stride, padding = conv
            self.out.append(ConvLayer(lname, w, np.any(w != 0, axis=(2, 3)), neurons, in_sh, dense,
                                      stride=stride, padding=padding, pool_fold=fold))
        self.syn = None
