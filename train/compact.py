"""Physical compaction of a masked network, and the torch -> IR conversion.

A hidden neuron is removed when it can no longer matter: it has no surviving input
synapse (no bias, so it never spikes) or no surviving output synapse (nobody hears it).
Removal repeats until nothing changes, since removing one neuron can empty another's
dendrite. Input channels and output neurons (classes) are always kept. Removed
synapses stay in the compacted layers as ``False`` mask entries, and become absent
entries of Lava's ``Sparse`` weights at export.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.train.models import SpikingMLP


def surviving_neurons(masks: List[np.ndarray]) -> List[np.ndarray]:
    """Indices of the neurons each population keeps.

    Args:
        masks: per layer ``(N_l, N_{l-1})`` boolean synapse masks.

    Returns:
        per population ``l = 1..L`` a sorted index array; the output population keeps all.
    """
    alive = [np.ones(m.shape[0], dtype=bool) for m in masks]
    changed = True
    while changed:
        changed = False
        for l in range(len(masks) - 1):  # hidden populations only
            cols = np.ones(masks[l].shape[1], dtype=bool) if l == 0 else alive[l - 1]
            has_in = masks[l][:, cols].any(axis=1)
            has_out = masks[l + 1][alive[l + 1]].any(axis=0)
            new = alive[l] & has_in & has_out
            if not np.array_equal(new, alive[l]):
                alive[l], changed = new, True
    return [np.flatnonzero(a) for a in alive]


@torch.no_grad()
def compact(model: SpikingMLP) -> Tuple[SpikingMLP, List[np.ndarray]]:
    """A new, smaller :class:`SpikingMLP` computing the same spikes as ``model``.

    Returns:
        ``(compacted, kept)``: the compacted model (pruned neurons gone from the shapes,
        weights and masks sliced) and, per population, the original indices kept.
    """
    masks = [m.cpu().numpy() for m in model.masks]
    kept = surviving_neurons(masks)
    rows = kept
    cols = [np.arange(model.sizes[0])] + kept[:-1]
    sizes = [model.sizes[0]] + [len(k) for k in kept]
    small = SpikingMLP(sizes, model.lif, init_gain=model.init_gain)
    for l, (fc, m) in enumerate(zip(model.fcs, model.masks)):
        r, c = torch.as_tensor(rows[l]), torch.as_tensor(cols[l])
        w = (fc.weight * m)[r][:, c]
        small.fcs[l].weight.copy_(w)
        small.masks[l].copy_(m[r][:, c])
    small.dense_sizes = getattr(model, "dense_sizes", model.sizes)
    return small, kept


def to_ir(model: SpikingMLP, time_steps: int, name: str = "snn", metadata: dict | None = None) -> NetworkIR:
    """The IR of a (compacted) :class:`SpikingMLP`; float weights, no fixed point yet.

    Args:
        model: the network; ``model.dense_sizes`` (set by :func:`compact`) gives the unpruned shapes.
        time_steps: ``T`` per sample.
    """
    lif = model.lif
    neurons = LIFNeurons(tau_syn_s=1.0 / lif.tau_syn_inv, tau_mem_s=1.0 / lif.tau_mem_inv, v_th=lif.v_th)
    dense = getattr(model, "dense_sizes", model.sizes)
    layers = []
    for l, (fc, m, nm) in enumerate(zip(model.fcs, model.masks, model.layer_names())):
        w = (fc.weight * m).detach().cpu().numpy()
        layers.append(FCLayer(nm, w, m.cpu().numpy(), neurons, dense_shape=(dense[l + 1], dense[l])))
    return NetworkIR(name=name, input_size=model.sizes[0], time_steps=int(time_steps), dt_s=float(lif.dt),
                     layers=layers, metadata=dict(metadata or {}))
