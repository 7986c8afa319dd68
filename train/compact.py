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

from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.train.models import MaskedNet, SpikingMLP


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
        rows = torch.as_tensor(kept[l])
        cols = torch.as_tensor(input_columns(units_in, specs[l].in_block))
        w = (layer.weight * m).index_select(0, rows).index_select(1, cols)
        small.layers[l].weight.copy_(w)
        small.masks[l].copy_(m.index_select(0, rows).index_select(1, cols))
        if model.time_mask(l) is not None:
            small.set_time_mask(l, model.time_mask(l).index_select(0, rows))
    return small, kept


def to_ir(model: SpikingMLP, time_steps: int, name: str = "snn", metadata: dict | None = None) -> NetworkIR:
    """The IR of a (compacted) :class:`SpikingMLP`; float weights, no fixed point yet.

    Args:
        model: the network; ``model.dense_widths`` (kept by :func:`compact`) gives the unpruned shapes.
        time_steps: ``T`` per sample.
    """
    if not isinstance(model, SpikingMLP):
        raise TypeError(f"to_ir supports SpikingMLP, got {type(model).__name__}")
    lif = model.lif
    neurons = LIFNeurons(tau_syn_s=1.0 / lif.tau_syn_inv, tau_mem_s=1.0 / lif.tau_mem_inv, v_th=lif.v_th)
    dense = [model.sizes[0], *model.dense_widths]
    layers = []
    for l, (fc, m, nm) in enumerate(zip(model.layers, model.masks, model.layer_names())):
        w = (fc.weight * m).detach().cpu().numpy()
        layers.append(FCLayer(nm, w, m.cpu().numpy(), neurons, dense_shape=(dense[l + 1], dense[l]),
                              time_mask=_time_mask(model, l)))
    return NetworkIR(name=name, input_size=model.sizes[0], time_steps=model.active_steps(time_steps),
                     dt_s=float(lif.dt), layers=layers, metadata=_window(model, time_steps, metadata))


def _time_mask(model, l: int):
    tm = model.time_mask(l)
    return None if tm is None else tm.cpu().numpy().copy()


def _window(model, time_steps: int, metadata: dict | None) -> dict:
    """Metadata, plus the trained window when timestep pruning shortened it."""
    meta = dict(metadata or {})
    if model.active_steps(time_steps) < time_steps:
        meta["time_steps_trained"] = int(time_steps)
    return meta


def ann_to_ir(model, name: str = "ann", metadata: dict | None = None) -> NetworkIR:
    """The IR of a (compacted) :class:`~dpap_deploy.train.models.ANNMLP`: ReLU hidden layers,
    identity (logits) output, ``time_steps = 1``, readout ``"logits"``.

    Raises:
        TypeError: not an ANNMLP (conv ANNs are not in the IR yet).
    """
    from dpap_deploy.train.models import ANNMLP

    if not isinstance(model, ANNMLP):
        raise TypeError(f"ann_to_ir supports ANNMLP, got {type(model).__name__}")
    dense = [model.sizes[0], *model.dense_widths]
    layers = []
    n = len(model.layers)
    for l, (fc, m, nm) in enumerate(zip(model.layers, model.masks, model.layer_names())):
        w = (fc.weight * m).detach().cpu().numpy()
        layers.append(FCLayer(nm, w, m.cpu().numpy(), None, dense_shape=(dense[l + 1], dense[l]),
                              activation="relu" if l < n - 1 else "identity"))
    return NetworkIR(name=name, input_size=model.sizes[0], time_steps=1, dt_s=0.0, layers=layers,
                     readout="logits", metadata=dict(metadata or {}))


def fold_pool_into_conv(weight: np.ndarray, pool: int, padding: int) -> Tuple[np.ndarray, int, int]:
    """A convolution on the ``pool``-average-pooled input as one convolution on the unpooled input.

    ``conv(avgpool_p(z), K, pad)`` equals ``conv(z, K', stride=p, pad=p*pad)`` with the kernel
    ``K'[o, i, a*p + u, b*p + v] = K[o, i, a, b] / p**2`` (``u, v < p``), when the pooled input's
    height and width are ``H // p`` exactly (checked by the caller: ``H % p == 0``).

    Returns:
        ``(K', stride, padding)``.
    """
    k_out = np.repeat(np.repeat(weight, pool, axis=2), pool, axis=3) / float(pool * pool)
    return k_out, pool, padding * pool


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


def cnn_to_ir(model, time_steps: int = 1, name: str = "cnn", metadata: dict | None = None) -> NetworkIR:
    """The IR of a (compacted) :class:`~dpap_deploy.train.models.SpikingCNN` (LIF layers) or
    :class:`~dpap_deploy.train.models.ANNCNN` (ReLU layers, logits out; ``time_steps`` ignored),
    input ``(C, H, W)``.

    Every ``AvgPool2d`` of the model is folded into the weights of the layer after it
    (:func:`fold_pool_into_conv`, :func:`fold_pool_into_fc`): pooling is linear, so the IR
    computes exactly what the model does, with only convolutions and fully connected layers
    (what Lava's ``Conv`` and ``Sparse`` synapses provide).

    Raises:
        UnsupportedLayerError: a pooled feature map whose size is not a multiple of the pool
            factor feeds a convolution (the fold would read pixels the pooling drops).
    """
    from dpap_deploy.errors import UnsupportedLayerError
    from dpap_deploy.ir import ConvLayer
    from dpap_deploy.train.models import ANNCNN, SpikingCNN

    if not isinstance(model, (SpikingCNN, ANNCNN)):
        raise TypeError(f"cnn_to_ir supports SpikingCNN and ANNCNN, got {type(model).__name__}")
    spiking = isinstance(model, SpikingCNN)
    if spiking:
        lif = model.lif
        neurons = LIFNeurons(tau_syn_s=1.0 / lif.tau_syn_inv, tau_mem_s=1.0 / lif.tau_mem_inv, v_th=lif.v_th)
    else:
        neurons = None
    n_layers = len(model.layers)

    def act(l):  # ANN: ReLU on hidden layers, logits out
        return "lif" if spiking else ("relu" if l < n_layers - 1 else "identity")
    names = model.layer_names()
    dense = model.dense_widths
    p, k = model.pool, model.kernel
    layers = []
    shape = model.in_shape  # (C, H, W) the next layer receives, before any pooling
    pooled_in = False
    c_prev_dense = model.in_shape[0]
    for l, (layer, m) in enumerate(zip(model.layers, model.masks)):
        w = (layer.weight * m).detach().cpu().numpy().astype(np.float64)
        mk = m.cpu().numpy()
        if l < model.n_conv:
            ch_mask = mk.any(axis=(2, 3))
            stride, pad = 1, k // 2
            if pooled_in:
                if shape[1] % p or shape[2] % p:
                    raise UnsupportedLayerError(
                        f'layer "{names[l]}": its input {shape} is pooled by {p} with a remainder; the pooling '
                        "cannot be folded into the convolution")
                w, stride, pad = fold_pool_into_conv(w, p, pad)
            conv = ConvLayer(names[l], w, ch_mask, neurons, in_shape=shape, dense_shape=(dense[l], c_prev_dense),
                             stride=stride, padding=pad, activation=act(l), pool_fold=p if pooled_in else 1,
                             time_mask=_time_mask(model, l) if spiking else None)
            layers.append(conv)
            shape, pooled_in, c_prev_dense = conv.out_shape, True, dense[l]
        else:
            fold = 1
            if l == model.n_conv:  # flatten(avgpool(conv output))
                w, mk = fold_pool_into_fc(w, mk, shape, p)
                n_in_dense = c_prev_dense * (shape[1] // p) * (shape[2] // p)
                fold = p
            else:
                n_in_dense = dense[l - 1]
            layers.append(FCLayer(names[l], w, mk, neurons, dense_shape=(dense[l], n_in_dense), activation=act(l),
                                  pool_fold=fold, time_mask=_time_mask(model, l) if spiking else None))
    return NetworkIR(name=name, input_size=int(np.prod(model.in_shape)),
                     time_steps=model.active_steps(time_steps) if spiking else 1,
                     dt_s=float(model.lif.dt) if spiking else 0.0, layers=layers,
                     metadata=_window(model, time_steps, metadata) if spiking else dict(metadata or {}),
                     input_shape=tuple(model.in_shape), readout="spike_count" if spiking else "logits")
