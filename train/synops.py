"""A differentiable count of synaptic operations, for a loss term that trains fewer of them.

A neuromorphic chip spends energy per synaptic operation: one per spike per surviving synapse
it reaches (``dpap_deploy/energy.py`` counts them from the spikes of a finished run). During
training the same count over a batch, with the hidden populations' spikes from the surrogate
gradient, is differentiable in those spikes, so adding ``lambda * synops / dense synapses`` to the
loss trains the network to reach its accuracy with fewer spikes into its surviving synapses.
sinabs counts the same quantity (``sinabs.SNNAnalyzer``) for its users to put into their loss; here
it is counted on our masks. It is not part of DPAP (the paper prunes by activity but trains with
cross-entropy only), see docs/dpap.md sec. 6.8.

Pruning interacts with it twice: the count uses each layer's *surviving* fan-out, so a
presynaptic neuron whose synapses were pruned costs less; and a neuron pushed to silence by the
penalty has a low spiking trace and a low spine value, which DPAP's neuron rule then removes.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch


def fan_out(model) -> List[torch.Tensor]:
    """Per weight layer, the surviving synapses one presynaptic spike reaches, as floats:
    fc ``(n_in,)`` = the mask's column sums; conv ``(C_in,)`` = the surviving kernel taps from that
    input channel over every output channel, divided by ``stride ** 2`` (each input position is
    reached by ``k*k/stride**2`` output positions on average, borders ignored, as
    ``energy.dense_fan_out`` counts them)."""
    out = []
    for l, m in enumerate(model.masks):
        m = m.to(torch.float32)
        if m.dim() == 4:
            stride = model._weight_def(l).stride
            out.append(m.sum(dim=(0, 2, 3)) / float(stride * stride))
        else:
            out.append(m.sum(dim=0))
    return out


def synops_per_sample(model, records: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean synaptic operations per sample of one batch, differentiable in the hidden spikes.

    Args:
        model: a spiking :class:`~dpap_deploy.train.models.SequentialNet` (its masks, strides and
            input encoding).
        records: its forward pass's ``(input, output)`` per weight layer; the inputs are
            ``(T, B, n_in)`` or ``(T, B, C, H, W)`` spikes.

    Returns:
        A scalar tensor: ``sum_l sum_j count_j * fan_out_l[j] / B``, ``count_j`` the spikes of
        presynaptic unit ``j`` (a conv channel: summed over its positions). With current encoding the
        first layer's analog input costs no synaptic operation (the host computes ``W x``) and is not
        counted, as in ``energy.synops_per_sample``.

    Raises:
        ValueError: ``model`` is not spiking (an ANN has no spikes to count).
    """
    if not model.spiking:
        raise ValueError("the synaptic-operation penalty counts spikes; this network is not spiking (an ANN)")
    total = None
    for l, ((pre, _), fo) in enumerate(zip(records, fan_out(model))):
        if l == 0 and model.input_current:
            continue
        counts = pre.sum(0)  # (B, n_in) or (B, C, H, W)
        if counts.dim() == 4:
            counts = counts.sum(dim=(2, 3))
        term = (counts * fo.to(counts.device)).sum() / max(1, counts.shape[0])
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())
