"""Reading a NIR graph (ours or another framework's) into our IR: chains with self-recurrent loops.

What the reader takes (NIR 1.0 node files ``nir/ir/*.py``; docs/deployment.md, NIR section):

- ``Input`` -> a chain of ``Affine``/``Linear``/``Conv2d`` synapses, each followed by one neuron
  node (``CubaLIF``, ``LIF``, ``IF``, ``LI``), with ``Flatten`` and ``SumPool2d``/``AvgPool2d``
  (kernel = stride, no padding) between them -> ``Output``;
- a **recurrent loop**: a neuron node ``P`` with an edge to an ``Affine``/``Linear`` node ``S`` and
  ``S -> P`` back. The loop becomes the ``recurrent`` weights of ``P``'s layer (spikes of step ``t``
  reach ``P``'s input at ``t + 1``, as Norse's ``LIFRecurrentCell`` and the writers of snnTorch's
  ``RLeaky``/``RSynaptic`` and of Norse's ``braille.nir`` mean it);
- sub-graphs (a ``NIRGraph`` node) are inlined, their nodes named ``outer.inner``.

Anything else (a node with two inputs or outputs outside such a loop: branches, merges, skip
connections; node types not listed) is refused naming the node, its type and what is supported.

Each NIR neuron node's input scaling is folded into the layer's weights, input bias and recurrent
weights, so that our LIF equations (``dpap_deploy/ir.py``, :class:`LIFNeurons`) compute the node's
Euler step with the graph's ``dt``:

- ``CubaLIF`` (``tau_syn dI/dt = -I + w_in x``, ``tau_mem dv/dt = v_leak - v + r I``): factor
  ``r * w_in * dt / tau_syn``; our current ``i`` is then ``r I``;
- ``LIF`` (``tau dv/dt = v_leak - v + r x``): factor ``r``; ``tau_syn_s = dt`` (no synaptic memory);
- ``IF`` (``dv/dt = r x``, Norse's ``IAFCell``: ``v <- v + x``): factor ``r``; ``tau_mem_s = inf``;
- ``LI`` (``tau dv/dt = v_leak - v + r x``, never spikes): factor ``r``; ``v_th = inf``; only last.

``dt``: the graph's ``metadata["dt_s"]`` (our files); else ``tau_syn / w_in`` of the first
``CubaLIF`` with ``w_in != 1`` (``w_in = tau_syn/dt`` is how snnTorch and our writer scale the input); else
``tau / r`` of the first ``LIF``/``LI`` with ``r != 1`` (snnTorch writes ``r = tau_mem/dt``); else
:data:`DT_DEFAULT` (``norse.torch.from_nir``'s default), noted in the IR's metadata.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from dpap_deploy.errors import DpapError, NetworkFileError, UnsupportedLayerError

DT_DEFAULT = 1e-3  # s; norse.torch.from_nir(graph, dt=0.001)
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d",
             "CubaLIF", "LIF", "IF", "LI")
SYNAPSES = ("Affine", "Linear", "Conv2d")
NEURONS = ("CubaLIF", "LIF", "IF", "LI")
STRUCTURE = ("a chain Input -> (Affine | Linear | Conv2d) -> neuron node -> ... -> Output, with Flatten and "
             "pooling between layers, where a neuron node may feed back into itself through one Affine/Linear "
             "node (a recurrent layer)")


def _type(node) -> str:
    return type(node).__name__


def inline_subgraphs(nodes: dict, edges: list) -> Tuple[dict, list]:
    """Nodes and edges with every ``NIRGraph`` node replaced by its nodes (``outer.inner``); an edge
    into the sub-graph goes to its ``Input`` node's successors, one out of it leaves from its
    ``Output`` node's predecessors (both inner ``Input``/``Output`` nodes disappear)."""
    import nir

    if not any(isinstance(n, nir.NIRGraph) for n in nodes.values()):
        return nodes, edges
    out_nodes, inner_edges, entry, exit_ = {}, [], {}, {}
    for name, n in nodes.items():
        if not isinstance(n, nir.NIRGraph):
            out_nodes[name] = n
            continue
        sub_nodes, sub_edges = inline_subgraphs(n.nodes, list(n.edges))
        ins = [k for k, v in sub_nodes.items() if isinstance(v, nir.Input)]
        outs = [k for k, v in sub_nodes.items() if isinstance(v, nir.Output)]
        for k, v in sub_nodes.items():
            if k not in ins + outs:
                out_nodes[f"{name}.{k}"] = v
        entry[name] = [f"{name}.{b}" for a, b in sub_edges if a in ins]
        exit_[name] = [f"{name}.{a}" for a, b in sub_edges if b in outs]
        inner_edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in sub_edges if a not in ins and b not in outs]
    flat = []
    for a, b in edges:
        for x in exit_.get(a, [a]):
            flat += [(x, y) for y in entry.get(b, [b])]
    return out_nodes, flat + inner_edges


class GraphReader:
    """One NIR graph (``nir.NIRGraph``) read from ``path`` into a float :class:`NetworkIR`
    (module docstring). :meth:`read` raises :class:`NetworkFileError` for a malformed graph and
    :class:`UnsupportedLayerError` for a node type, structure or parameter we do not take, each
    message starting with ``path`` and naming the node."""

    def __init__(self, g, path: str):
        import nir

        self.path, self.cur = path, "input"
        nodes, edges = getattr(g, "nodes", None), getattr(g, "edges", None)
        if not isinstance(nodes, dict) or not nodes or edges is None:
            raise NetworkFileError(f"{path}: the graph has no nodes or edges")
        for e in edges:
            if len(e) != 2 or not all(isinstance(x, str) for x in e):
                self.fail(f"edge {e!r} is not a pair of node names")
        self.nodes, edges = inline_subgraphs(nodes, [tuple(e) for e in edges])
        self.meta = g.metadata if isinstance(getattr(g, "metadata", None), dict) else {}
        for a, b in edges:
            for x in (a, b):
                if x not in self.nodes:
                    self.fail(f"edge {a!r} -> {b!r} names node {x!r}, which the graph does not have")
        self.inputs = [k for k, n in self.nodes.items() if isinstance(n, nir.Input)]
        if len(self.inputs) != 1:
            self.fail(f"the graph has {len(self.inputs)} Input nodes; expected one")
        for k, n in self.nodes.items():
            if _type(n) not in SUPPORTED:
                self.fail(f"node {k!r} has type {_type(n)}, which this reader does not handle (it takes "
                          f"{', '.join(SUPPORTED)})", UnsupportedLayerError)
        self.loops = self._recurrent_loops(edges)
        self.nxt = self._chain(edges)
        self.dt, self.dt_from = self._dt()
        self.out: list = []
        self.syn = None    # (name, kind, weight, bias, conv geometry) waiting for its neuron node
        self.pool = None   # (name, factor, kind, shape before it) waiting for the next weight node

    def fail(self, what, kind=None):
        """Raise ``kind`` (default :class:`NetworkFileError`) with ``what``, prefixed by the file."""
        raise (kind or NetworkFileError)(f"{self.path}: {what}")

    def _recurrent_loops(self, edges) -> Dict[str, str]:
        """``{neuron node: its recurrent synapse}`` for every ``P -> S -> P`` with ``S`` an Affine/Linear."""
        loops = {}
        for a, b in edges:
            if _type(self.nodes[a]) in NEURONS and _type(self.nodes[b]) in ("Affine", "Linear") and (b, a) in edges:
                if a in loops:
                    self.fail(f"node {a!r} ({_type(self.nodes[a])}) has two recurrent loops ({loops[a]!r}, {b!r}); "
                              "this reader takes one", UnsupportedLayerError)
                loops[a] = b
        return loops

    def _chain(self, edges) -> Dict[str, str]:
        """Successor of each node once the recurrent loops are set aside; refuses anything but a chain."""
        rec = set(self.loops.values())
        nxt, prv = {}, {}
        for a, b in edges:
            if a in rec or b in rec:
                if (a in rec and self.loops.get(b) != a) or (b in rec and self.loops.get(a) != b):
                    x = a if a in rec else b
                    self.fail(f"node {x!r} ({_type(self.nodes[x])}) is a recurrent synapse but also connects "
                              f"{a!r} -> {b!r}; this reader takes {STRUCTURE}", UnsupportedLayerError)
                continue
            for x, table, what in ((a, nxt, "outputs (a branch)"), (b, prv, "inputs (a merge)")):
                if x in table:
                    other = table[x]
                    self.fail(f"node {x!r} ({_type(self.nodes[x])}) has two {what}: {other!r} and "
                              f"{b if x == a else a!r}; this reader takes {STRUCTURE}", UnsupportedLayerError)
            nxt[a], prv[b] = b, a
        return nxt

    def _dt(self) -> Tuple[float, str]:
        if "dt_s" in self.meta:
            return self.meta_number("dt_s", float, None), "metadata dt_s"
        for k, n in self.nodes.items():
            if _type(n) == "CubaLIF":
                w_in = float(np.asarray(n.w_in, dtype=np.float64).reshape(-1)[0])
                if w_in > 0 and not np.isclose(w_in, 1.0):  # 1: nir's default, which says nothing of dt
                    return float(np.asarray(n.tau_syn, dtype=np.float64).reshape(-1)[0]) / w_in, \
                        f"tau_syn / w_in of node {k!r}"
        for k, n in self.nodes.items():
            if _type(n) in ("LIF", "LI"):
                r = float(np.asarray(n.r, dtype=np.float64).reshape(-1)[0])
                if r > 0 and not np.isclose(r, 1.0):
                    return float(np.asarray(n.tau, dtype=np.float64).reshape(-1)[0]) / r, f"tau / r of node {k!r}"
        return DT_DEFAULT, "assumed (norse.torch.from_nir's default); the graph does not give it"

    def meta_number(self, key, kind, default):
        if key not in self.meta:
            return default
        a = np.asarray(self.meta[key])
        if a.size != 1 or a.dtype.kind not in "iuf" or not np.isfinite(a).all() or float(a.reshape(-1)[0]) <= 0 \
                or (kind is int and a.reshape(-1)[0] != round(float(a.reshape(-1)[0]))):
            self.fail(f"metadata {key!r} = {self.meta[key]!r}; expected a positive {kind.__name__}")
        return kind(a.reshape(-1)[0])

    def read(self):
        """The graph as a float :class:`~dpap_deploy.ir.NetworkIR` (``T`` from the metadata, else 1).

        Raises:
            NetworkFileError: a malformed graph (missing fields, wrong shapes, non-finite values).
            UnsupportedLayerError: a node type, parameter or structure this reader does not take.
        """
        try:
            return self._read()
        except DpapError as exc:
            if isinstance(exc, (NetworkFileError, UnsupportedLayerError)):
                raise
            raise NetworkFileError(f"{self.path}: {exc}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a node without the fields its type promises
            raise NetworkFileError(f"{self.path}: node {self.cur!r}: malformed ({type(exc).__name__}: {exc})") from None

    def _input_shape(self) -> tuple:
        """The Input node's shape, a leading batch axis of 1 dropped (Norse's to_nir keeps the sample's)."""
        self.cur = self.inputs[0]
        in_type = getattr(self.nodes[self.cur], "input_type", None)
        in_type = in_type.get("input") if isinstance(in_type, dict) else None
        if in_type is None or np.asarray(in_type).dtype.kind not in "iu":
            self.fail(f"node {self.cur!r}: input_type {getattr(self.nodes[self.cur], 'input_type', None)!r}; "
                      "expected {'input': shape}")
        shape = tuple(int(s) for s in np.asarray(in_type).reshape(-1))
        if len(shape) in (2, 4) and shape[0] == 1:
            shape = shape[1:]
        if len(shape) not in (1, 3) or min(shape) < 1:
            self.fail(f"node {self.cur!r}: input shape {list(shape)}; expected [F] or [C, H, W] of positive sizes")
        return shape

    def _read(self):
        import nir

        from dpap_deploy.ir import NetworkIR

        if not (np.isfinite(self.dt) and self.dt > 0):
            self.fail(f"time step dt = {self.dt!r} ({self.dt_from}) is not a positive number")
        T = self.meta_number("time_steps", int, 1)
        name = self.meta.get("name") if isinstance(self.meta.get("name"), str) and self.meta.get("name") else \
            os.path.splitext(os.path.basename(self.path))[0]
        in_shape = self._input_shape()
        shape, seen = in_shape, {self.cur}
        while True:
            if self.cur not in self.nxt:
                self.fail(f"node {self.cur!r} has no outgoing edge; the chain must end in an Output node")
            self.cur = self.nxt[self.cur]
            if self.cur in seen:
                self.fail(f"node {self.cur!r} is reached twice: the graph has a cycle other than a recurrent loop")
            seen.add(self.cur)
            node = self.nodes[self.cur]
            if isinstance(node, nir.Output):
                break
            shape = self._node(node, shape)
        for what, pending in (("neuron node", self.syn), ("Affine, Linear or Conv2d node", self.pool)):
            if pending is not None:
                self.fail(f"node {pending[0]!r} has no {what} after it")
        layers = [n for n in self.out if n.kind in ("fc", "conv")]
        if not layers:
            self.fail("the graph has no synapse + neuron layer")
        readout = "membrane" if layers[-1].neurons.model(self.dt) == "li" else "spike_count"
        return NetworkIR(name=name, input_size=int(np.prod(in_shape)), time_steps=T, dt_s=float(self.dt),
                         nodes=self.out, readout=readout,
                         metadata={"read_from": self.path, "format": "nir", "dt_from": self.dt_from},
                         input_shape=in_shape if len(in_shape) == 3 else None)

    def _node(self, node, shape: tuple) -> tuple:
        """Take one chain node; returns the shape after it."""
        kind = _type(node)
        if kind in SYNAPSES and self.syn is not None:
            self.fail(f"node {self.cur!r} ({kind}) follows synapse node {self.syn[0]!r} without a neuron node "
                      f"between them; this reader takes {STRUCTURE}", UnsupportedLayerError)
        if kind in NEURONS and self.syn is None:
            self.fail(f"node {self.cur!r}: {kind} without an Affine, Linear or Conv2d node before it; this reader "
                      f"takes {STRUCTURE}", UnsupportedLayerError)
        if kind == "Flatten":
            return self._flatten(node, shape)
        if kind in ("SumPool2d", "AvgPool2d"):
            return self._pooling(node, kind, shape)
        if kind in ("Affine", "Linear"):
            return self._linear(node, kind, shape)
        if kind == "Conv2d":
            return self._conv(node, shape)
        if kind in NEURONS:
            self._population(node, kind, shape)
            return shape
        self.fail(f"node {self.cur!r}: a second {kind} node inside the chain; this reader takes {STRUCTURE}")

    def _flatten(self, node, shape: tuple) -> tuple:
        from dpap_deploy.ir import Flatten

        dims = (int(np.asarray(getattr(node, "start_dim", 0)).reshape(-1)[0]),
                int(np.asarray(getattr(node, "end_dim", -1)).reshape(-1)[0]))
        if dims[0] not in (0, -3) or dims[1] not in (-1, 2):
            self.fail(f"node {self.cur!r}: Flatten of dims {dims[0]}..{dims[1]} (NIR dims, no batch axis); this "
                      "reader takes a flatten of the whole (C, H, W) map (0..-1)", UnsupportedLayerError)
        if self.syn is not None or len(shape) != 3:
            self.fail(f"node {self.cur!r}: Flatten after {'a synapse' if self.syn else f'shape {list(shape)}'}; "
                      "expected it between a (C, H, W) population or input and a Linear/Affine node")
        pre = self.pool[3] if self.pool is not None else shape
        self.out.append(Flatten(self.cur, pre))
        return (int(np.prod(shape)),)

    def _pooling(self, node, kind: str, shape: tuple) -> tuple:
        """A pooling (kernel = stride, no padding) waits to be folded into the next weight layer."""
        from dpap_deploy.export.nir_export import _pair

        k = _pair(self.path, self.cur, "kernel_size", node.kernel_size, 1)
        stride = _pair(self.path, self.cur, "stride", node.stride, 1)
        pad = _pair(self.path, self.cur, "padding", node.padding, 0)
        if stride != k or pad != 0:
            self.fail(f"node {self.cur!r}: {kind} with kernel {k}, stride {stride}, padding {pad}; this reader takes "
                      "kernel = stride and no padding", UnsupportedLayerError)
        if self.syn is not None or self.pool is not None or len(shape) != 3 or min(shape[1:]) < k:
            self.fail(f"node {self.cur!r}: {kind} by {k} after {'a synapse' if self.syn else list(shape)}; expected "
                      "it after a (C, H, W) population of at least that size")
        self.pool = (self.cur, k, kind, shape)
        return (shape[0], shape[1] // k, shape[2] // k)

    def _take_pool(self, w: np.ndarray) -> Tuple[np.ndarray, int]:
        """The pending pooling's factor, and ``w`` times ``k**2`` for a sum pooling (the fold averages)."""
        if self.pool is None:
            return w, 1
        _, k, kind, _ = self.pool
        return (w * float(k * k) if kind == "SumPool2d" else w), k

    def _linear(self, node, kind: str, shape: tuple) -> tuple:
        from dpap_deploy.export.nir_export import _weight
        from dpap_deploy.train.compact import fold_pool_into_fc

        w = _weight(self.path, self.cur, node.weight, 2)
        if len(shape) != 1 or w.shape[1] != shape[0]:
            self.fail(f"node {self.cur!r}: weight {w.shape} takes {w.shape[1]} inputs but the node before gives "
                      f"{list(shape)}")
        bias = self._bias(node, kind, w.shape[0])
        mask, fold = w != 0, 1
        if self.pool is not None:
            w, fold = self._take_pool(w)
            w, mask = fold_pool_into_fc(w, mask, self.pool[3], fold)
            self.pool = None
        self.syn = (self.cur, "fc", np.asarray(w, np.float32), bias, None, mask, fold)
        return (int(w.shape[0]),)

    def _bias(self, node, kind: str, n: int, name: Optional[str] = None) -> Optional[np.ndarray]:
        """An Affine's / Conv2d's bias ``(n,)``, None when it is absent or all zero (``name``: the node, for
        messages; default the current one)."""
        b = getattr(node, "bias", None) if kind != "Linear" else None
        if b is None:
            return None
        b = np.asarray(b, dtype=np.float64)
        if b.ndim == 0:
            b = np.full(n, float(b))
        if b.shape != (n,) or not np.all(np.isfinite(b)) or np.abs(b).max() > np.finfo(np.float32).max:
            self.fail(f"node {name or self.cur!r}: bias {b.shape} must be ({n},) finite numbers within float32")
        return b.astype(np.float32) if np.any(b != 0) else None

    def _conv(self, node, shape: tuple) -> tuple:
        from dpap_deploy.export.nir_export import _pair, _weight
        from dpap_deploy.ir import AvgPool
        from dpap_deploy.train.compact import fold_pool_into_conv

        cur, path = self.cur, self.path
        w = _weight(path, cur, node.weight, 4)
        stride = _pair(path, cur, "stride", node.stride, 1)
        padding = _pair(path, cur, "padding", node.padding, 0)
        for key in ("dilation", "groups"):
            if _pair(path, cur, key, getattr(node, key), 1) != 1:
                self.fail(f"node {cur!r}: {key} = {getattr(node, key)!r}; this reader takes 1 only",
                          UnsupportedLayerError)
        if len(shape) != 3 or w.shape[1] != shape[0]:
            self.fail(f"node {cur!r}: kernel {w.shape} takes {w.shape[1]} channels but the node before gives "
                      f"{list(shape)}")
        if node.input_shape is not None and tuple(np.asarray(node.input_shape).reshape(-1)) != tuple(shape[1:]):
            self.fail(f"node {cur!r}: input_shape {np.asarray(node.input_shape).tolist()} but the node before gives "
                      f"{list(shape)}")
        bias = self._bias(node, "Conv2d", w.shape[0])
        out = (w.shape[0], (shape[1] + 2 * padding - w.shape[2]) // stride + 1,
               (shape[2] + 2 * padding - w.shape[3]) // stride + 1)
        if min(out) < 1:
            self.fail(f"node {cur!r}: kernel {w.shape} does not fit input {list(shape)}")
        in_shape, fold = shape, 1
        if self.pool is not None:
            w, k = self._take_pool(w)
            pre = self.pool[3]
            if pre[1] % k == 0 and pre[2] % k == 0:  # fold: conv(avgpool(z)) = conv'(z)
                w, stride, padding = fold_pool_into_conv(w, k, padding, stride)
                in_shape, fold = pre, k
            else:
                self.out.append(AvgPool(self.pool[0], pre, k))
            self.pool = None
        self.syn = (cur, "conv", np.asarray(w, np.float32), bias, (in_shape, stride, padding),
                    np.any(w != 0, axis=(2, 3)), fold)
        return out

    # -- neuron nodes ------------------------------------------------------------------------
    def _params(self, node, kind: str, shape: tuple) -> dict:
        """The node's parameters, one number each per population (``_uniform``); absent optional ones 0."""
        from dpap_deploy.export.nir_export import _uniform

        keys = {"CubaLIF": ("tau_syn", "tau_mem", "r", "v_threshold", "v_leak", "v_reset", "w_in"),
                "LIF": ("tau", "r", "v_threshold", "v_leak", "v_reset"),
                "IF": ("r", "v_threshold", "v_reset"), "LI": ("tau", "r", "v_leak")}[kind]
        p = {}
        for k in keys:
            value = getattr(node, k, None)
            p[k] = 0.0 if value is None and k in ("v_leak", "v_reset") else \
                _uniform(self.path, self.cur, k, value, shape, positive=k.startswith("tau"))
        if p["r"] <= 0 or p.get("w_in", 1.0) <= 0:
            self.fail(f"node {self.cur!r}: r = {p['r']:g}, w_in = {p.get('w_in', 1.0):g}; both must be > 0")
        return p

    def _neurons(self, kind: str, p: dict):
        """``(LIFNeurons, input factor)`` of one NIR neuron node (module docstring)."""
        from dpap_deploy.ir import LIFNeurons

        dt, inf = self.dt, float("inf")
        if kind == "CubaLIF":
            n = LIFNeurons(p["tau_syn"], p["tau_mem"], p["v_threshold"], p["v_leak"], p["v_reset"])
            return n, p["r"] * p["w_in"] * dt / p["tau_syn"]
        if kind == "LIF":
            return LIFNeurons(dt, p["tau"], p["v_threshold"], p["v_leak"], p["v_reset"]), p["r"]
        if kind == "IF":
            return LIFNeurons(dt, inf, p["v_threshold"], 0.0, p["v_reset"]), p["r"]
        return LIFNeurons(dt, p["tau"], inf, p["v_leak"], 0.0), p["r"]

    def _recurrent(self, n_out: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """The recurrent loop's weights ``(n_out, n_out)`` and bias ``(n_out,)`` of the current node, or Nones."""
        from dpap_deploy.export.nir_export import _weight

        s = self.loops.get(self.cur)
        if s is None:
            return None, None
        node = self.nodes[s]
        w = _weight(self.path, s, node.weight, 2)
        if w.shape != (n_out, n_out):
            self.fail(f"node {s!r}: recurrent weight {w.shape} of population {self.cur!r} must be ({n_out}, {n_out})")
        return w, self._bias(node, _type(node), n_out, s)

    def _population(self, node, kind: str, shape: tuple) -> None:
        from dpap_deploy.ir import ConvLayer, FCLayer

        neurons, factor = self._neurons(kind, self._params(node, kind, shape))
        lname, lkind, w, bias, conv, mask, fold = self.syn
        rec, rec_bias = self._recurrent(w.shape[0])
        if rec is not None and lkind != "fc":
            self.fail(f"node {self.cur!r}: a recurrent loop on a convolution's population; this reader takes it on "
                      "fully connected layers only", UnsupportedLayerError)
        if rec_bias is not None:
            bias = rec_bias if bias is None else bias + rec_bias
        dense_shapes = self.meta.get("dense_shape") if isinstance(self.meta.get("dense_shape"), dict) else {}
        pool_folds = self.meta.get("pool_fold") if isinstance(self.meta.get("pool_fold"), dict) else {}
        dense = dense_shapes.get(lname)
        dense = tuple(int(s) for s in np.asarray(dense).reshape(-1)) if dense is not None else mask.shape
        meta_fold = pool_folds.get(lname, fold)
        fold = int(meta_fold) if np.asarray(meta_fold).dtype.kind in "iu" and int(meta_fold) >= 1 else fold
        scaled = lambda a: None if a is None else (np.asarray(a, np.float64) * factor).astype(np.float32)  # noqa: E731
        common = dict(weight=scaled(w), mask=mask, neurons=neurons, dense_shape=dense, pool_fold=fold,
                      input_bias=scaled(bias))
        if lkind == "fc":
            self.out.append(FCLayer(lname, recurrent=scaled(rec), **common))
        else:
            in_sh, stride, padding = conv
            self.out.append(ConvLayer(lname, in_shape=in_sh, stride=stride, padding=padding, **common))
        self.syn = None
