"""Physical compaction of a masked network, and the torch -> IR conversion.

A hidden neuron (conv: channel) is removed when it can no longer matter: it has no
surviving input synapse (no bias, so it never spikes / its ReLU stays 0) or no surviving
output synapse (nobody hears it). Removal repeats until nothing changes, since removing
one unit can empty another's dendrite. A removed conv channel leaves this layer's output
and the next layer's input (for the fc layer after a flatten: its ``H*W`` features).
Input channels and output neurons (classes) are always kept. Removed synapses stay in the
compacted layers as ``False`` mask entries and become absent entries of Lava's ``Sparse``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from dpap_deploy.ir import AvgPool, ConvLayer, FCLayer, Flatten, LIFNeurons, NetworkIR
from dpap_deploy.train.models import MaskedNet


def surviving_units(connectivity: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Indices of the output units (neurons or channels) each layer keeps.

    Args:
        connectivity: per layer ``(n_out, n_in units)`` bool, e.g. :meth:`MaskedNet.unit_connectivity`.

    Returns:
        per layer a sorted index array; the last layer (classes) keeps all.
    """
    alive = [np.ones(c.shape[0], dtype=bool) for c in connectivity]
    changed = True
    while changed:
        changed = False
        for l in range(len(connectivity) - 1):
            cols = np.ones(connectivity[l].shape[1], dtype=bool) if l == 0 else alive[l - 1]
            has_in = connectivity[l][:, cols].any(axis=1)
            has_out = connectivity[l + 1][alive[l + 1]].any(axis=0)
            new = alive[l] & has_in & has_out
            if not np.array_equal(new, alive[l]):
                alive[l], changed = new, True
    kept = [np.flatnonzero(a) for a in alive]
    # a layer with no useful unit left still needs one (silent) unit for the shapes to chain
    return [k if len(k) else np.array([0]) for k in kept]


def surviving_neurons(masks: List[np.ndarray]) -> List[np.ndarray]:
    """:func:`surviving_units` for fully connected masks ``(N_l, N_{l-1})``."""
    return surviving_units(masks)


def input_columns(kept_units: np.ndarray, block: int) -> np.ndarray:
    """Feature indices of kept input units, ``block`` features each (flatten order ``C, H, W``)."""
    if block == 1:
        return kept_units
    return (kept_units[:, None] * block + np.arange(block)[None, :]).ravel()


@torch.no_grad()
def compact(model: MaskedNet) -> Tuple[MaskedNet, List[np.ndarray]]:
    """A new, smaller model of the same kind computing the same outputs as ``model``.

    The new model is on the CPU, whatever device ``model`` is on.

    Returns:
        ``(compacted, kept)``: the compacted model (removed units gone from the shapes,
        weights and masks sliced) and, per weight layer, the original output indices kept.
    """
    specs = model.specs()
    conn = [model.unit_connectivity(l) for l in range(len(specs))]
    for l in range(len(specs) - 1):  # a unit silenced at every time step is heard by nobody
        tm = model.time_mask(l)
        if tm is not None:
            conn[l] = conn[l] & tm.any(1).cpu().numpy()[:, None]
    kept = surviving_units(conn)
    small = model.resized([len(k) for k in kept])
    small.dense_widths = model.dense_widths
    for l, (layer, m) in enumerate(zip(model.layers, model.masks)):
        units_in = np.arange(specs[l].n_in) if l == 0 else kept[l - 1]
        rows = torch.as_tensor(kept[l], device=m.device)
        cols = torch.as_tensor(input_columns(units_in, specs[l].in_block), device=m.device)
        w = (layer.weight * m).index_select(0, rows).index_select(1, cols)
        small.layers[l].weight.copy_(w)
        small.masks[l].copy_(m.index_select(0, rows).index_select(1, cols))
        if model.time_mask(l) is not None:
            small.set_time_mask(l, model.time_mask(l).index_select(0, rows))
    return small, kept


def fold_pool_into_conv(weight: np.ndarray, pool: int, padding: int, stride: int = 1) -> Tuple[np.ndarray, int, int]:
    """A convolution on the ``pool``-average-pooled input as one convolution on the unpooled input.

    ``conv(avgpool_p(z), K, stride=s, pad)`` equals ``conv(z, K', stride=s*p, pad=p*pad)`` with the
    kernel ``K'[o, i, a*p + u, b*p + v] = K[o, i, a, b] / p**2`` (``u, v < p``), when the pooled
    input's height and width are ``H / p`` exactly (checked by the caller: ``H % p == 0``).

    Returns:
        ``(K', stride, padding)``.
    """
    k_out = np.repeat(np.repeat(weight, pool, axis=2), pool, axis=3) / float(pool * pool)
    return k_out, stride * pool, padding * pool


def fold_pool_into_fc(weight: np.ndarray, mask: np.ndarray, in_shape: Tuple[int, int, int], pool: int):
    """An FC layer on ``flatten(avgpool_p(z))`` as one FC layer on ``flatten(z)``, ``z`` of
    ``in_shape = (C, H, W)`` (torch's flatten order ``c, y, x``); pixels the pooling drops
    (``y >= (H // p) * p``) get no synapse.

    Returns:
        ``(weight (n, C*H*W), mask (n, C*H*W))``.
    """
    c, h, w = in_shape
    hp, wp = h // pool, w // pool
    n = weight.shape[0]
    wr = weight.reshape(n, c, hp, wp)
    mr = mask.reshape(n, c, hp, wp)
    big_w = np.zeros((n, c, h, w), dtype=np.float64)
    big_m = np.zeros((n, c, h, w), dtype=bool)
    big_w[:, :, : hp * pool, : wp * pool] = np.repeat(np.repeat(wr, pool, 2), pool, 3) / float(pool * pool)
    big_m[:, :, : hp * pool, : wp * pool] = np.repeat(np.repeat(mr, pool, 2), pool, 3)
    return big_w.reshape(n, -1), big_m.reshape(n, -1)


def _window(model, time_steps: int, metadata: dict | None) -> dict:
    """Metadata, plus the trained window when timestep pruning shortened it."""
    meta = dict(metadata or {})
    if model.active_steps(time_steps) < time_steps:
        meta["time_steps_trained"] = int(time_steps)
    return meta


def _neurons(model, l: int):
    """``(activation, LIFNeurons or None)`` of weight layer ``l``."""
    d = model.neuron_def(l)
    if d is None:
        return "identity", None
    if d.kind == "relu":
        return "relu", None
    c = d.lif
    return "lif", LIFNeurons(tau_syn_s=1.0 / c.tau_syn_inv, tau_mem_s=1.0 / c.tau_mem_inv, v_th=c.v_th,
                             v_leak=c.v_leak, v_reset=c.v_reset)


def _dt(model) -> float:
    """The one time step of a spiking model (every population must share it)."""
    from dpap_deploy.errors import UnsupportedLayerError

    dts = {float(model.neuron_def(l).lif.dt) for l in range(len(model.layers))}
    if len(dts) > 1:
        raise UnsupportedLayerError(f"populations of {model.family} use different time steps dt {sorted(dts)} s; "
                                    "the IR (and Lava) run one dt")
    return dts.pop()


class _IRBuilder:
    """Walks a :class:`~dpap_deploy.train.models.SequentialNet`'s steps into IR nodes, folding each
    average pooling into the weights of the layer after it where that is exact."""

    def __init__(self, model):
        self.model = model
        self.specs = model.specs()
        self.dense = model.dense_widths
        self.nodes = []
        self.shape = tuple(model.in_shape)       # what the next node receives
        self.pool = None                          # (factor, unpooled shape) waiting to be folded
        self.flatten_from = None                  # the (C, H, W) a pending flatten takes

    def step(self, step: tuple) -> None:
        if step[0] == "pool":
            if self.pool is not None:  # two poolings in a row: the first stays a node
                self._emit_pool()
            self.pool = (step[1], self.shape)
            c, h, w = self.shape
            self.shape = (c, h // step[1], w // step[1])
        elif step[0] == "flatten":
            self.flatten_from = self.pool[1] if self.pool else self.shape
            self.shape = (int(np.prod(self.shape)),)
        else:
            self._weight(step[1])

    def _emit_pool(self) -> None:
        """Keep a pending pooling as an :class:`AvgPool` node (it could not be folded)."""
        p, unpooled = self.pool
        self.nodes.append(AvgPool(f"pool{sum(n.kind == 'avgpool' for n in self.nodes) + 1}", unpooled, p))
        self.pool = None

    def _weight(self, l: int) -> None:
        m, spec = self.model, self.specs[l]
        layer, mask = m.layers[l], m.masks[l]
        w = (layer.weight * mask).detach().cpu().numpy().astype(np.float64)
        mk = mask.cpu().numpy()
        act, neurons = _neurons(m, l)
        tmask = None
        if m.time_mask(l) is not None:
            tmask = m.time_mask(l).cpu().numpy().copy()
        n_in_dense = (self.dense[l - 1] if l else spec.n_in) * spec.in_block
        if l == 0 and m.input_current:  # the IR's current-encoded layer integrates W x: fold the gain in
            w = w * m.current_gain()
        common = dict(neurons=neurons, activation=act, time_mask=tmask, time_gate=m.time_gate)
        if spec.kind == "conv":
            d = m._weight_def(l)
            stride, pad, fold = d.stride, d.padding, 1
            if self.pool is not None:
                p, unpooled = self.pool
                if unpooled[1] % p or unpooled[2] % p:  # the fold would read pixels the pooling drops
                    self._emit_pool()
                else:
                    w, stride, pad = fold_pool_into_conv(w, p, pad, stride)
                    self.shape, fold, self.pool = unpooled, p, None
            node = ConvLayer(spec.name, w, mk.any(axis=(2, 3)), in_shape=self.shape, dense_shape=(self.dense[l], n_in_dense),
                             stride=stride, padding=pad, pool_fold=fold, **common)
            self.nodes.append(node)
            self.shape = node.out_shape
            return
        fold = 1
        if self.flatten_from is not None:
            if self.pool is not None:  # flatten(avgpool(z)): fold the pooling into this layer's weights
                p, unpooled = self.pool
                w, mk = fold_pool_into_fc(w, mk, unpooled, p)
                fold, self.pool = p, None
            self.nodes.append(Flatten(f"{spec.name}_flatten", self.flatten_from))
            self.flatten_from = None
        self.nodes.append(FCLayer(spec.name, w, mk, dense_shape=(self.dense[l], n_in_dense), pool_fold=fold, **common))
        self.shape = (spec.n_out,)


def to_ir(model: MaskedNet, time_steps: int = 1, name: str = "snn", metadata: dict | None = None) -> NetworkIR:
    """The IR of a (compacted) network of any family: float weights, no fixed point yet.

    Weight layers become :class:`~dpap_deploy.ir.FCLayer` / :class:`~dpap_deploy.ir.ConvLayer`
    (LIF populations, or ReLU / identity units for ANNs, whose IR has ``T = 1`` and readout
    ``"logits"``); a flatten becomes a :class:`~dpap_deploy.ir.Flatten` node. Every average
    pooling is folded into the weights of the layer after it (:func:`fold_pool_into_conv`,
    :func:`fold_pool_into_fc`): pooling is linear, so the IR computes exactly what the model
    does with only the synapses Lava's ``Conv`` and ``Sparse`` provide. A pooling that feeds a
    convolution from a map whose size is not a multiple of the factor cannot be folded and stays
    an :class:`~dpap_deploy.ir.AvgPool` node. Each layer keeps its timestep mask and the model's
    ``time_gate`` (``"hold"`` or ``"drop"``, docs/dpap.md sec. 7.4).

    Args:
        model: the network; ``model.dense_widths`` (kept by :func:`compact`) gives the unpruned shapes.
        time_steps: ``T`` per sample (SNNs; timestep pruning may shorten it).

    Raises:
        UnsupportedLayerError: populations with different time steps.
    """
    b = _IRBuilder(model)
    for step in model.steps():
        b.step(step)
    spiking = model.spiking
    meta = _window(model, time_steps, metadata) if spiking else dict(metadata or {})
    return NetworkIR(name=name, input_size=int(np.prod(model.in_shape)),
                     time_steps=model.active_steps(time_steps) if spiking else 1,
                     dt_s=_dt(model) if spiking else 0.0, nodes=b.nodes, readout="spike_count" if spiking else "logits",
                     metadata=meta, input_shape=tuple(model.in_shape) if len(model.in_shape) == 3 else None,
                     input_encoding="current" if model.input_current else "spikes")
