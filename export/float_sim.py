"""A float reference run of an IR's own equations, for networks with no trained torch model behind
them (a NIR graph read from another framework's file).

Per layer and time step ``t``, Norse's ``LIFCell`` order (``norse/torch/functional/lif.py``,
``lif_feed_forward_step``; :class:`dpap_deploy.ir.LIFNeurons` and its ``step_factors`` give the
variants LIF / IF / LI the same form)::

    I_in = W s_in[t] + input_bias + R s_out[t-1]       # R: recurrent weights (zero spikes at t = 0)
    i    = i + I_in
    v    = keep_v * v + gain * (v_leak + i)
    s_out[t] = v > v_th ;  v[s_out] = v_reset
    i    = keep_i * i

Convolutions are ``torch.nn.functional.conv2d`` (correlation, zero padding), the input bias per
output channel. Shape nodes other than ``Flatten`` (an unfolded average pooling) are refused.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from dpap_deploy.ir import NetworkIR


def _synaptic_input(layer, s: torch.Tensor) -> torch.Tensor:
    """``W s`` (+ bias) of one layer for spikes ``s`` ``(N, n_in)``; returns ``(N, n_out)``."""
    w = torch.from_numpy(layer.masked_weight().astype(np.float64))
    if layer.kind == "conv":
        x = s.reshape(s.shape[0], *layer.in_shape)
        out = torch.nn.functional.conv2d(x, w, stride=layer.stride, padding=layer.padding)
        if layer.input_bias is not None:
            out = out + torch.from_numpy(layer.input_bias.astype(np.float64))[None, :, None, None]
        return out.reshape(s.shape[0], -1)
    out = s @ w.T
    return out if layer.input_bias is None else out + torch.from_numpy(layer.input_bias.astype(np.float64))


@torch.no_grad()
def run_float(ir: NetworkIR, spikes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    """Run ``spikes`` ``(T, N, F)`` (or ``(T, N, C, H, W)``) through ``ir``'s float equations (module
    docstring), float64.

    Returns:
        ``(counts, membrane, rasters)``: output spike counts ``(N, n_last)`` int64, the last layer's
        membrane potential after the last step ``(N, n_last)`` (the score of a ``"membrane"``
        readout), and per layer the spikes ``(T, N, n_l)`` uint8.

    Raises:
        UnsupportedLayerError: an average-pooling node (not folded into a layer's weights).
    """
    ir.require_nodes(("fc", "conv", "flatten"), "the float reference run")
    x = torch.from_numpy(np.asarray(spikes, dtype=np.float64))
    T, N = x.shape[:2]
    x = x.reshape(T, N, -1)
    layers = ir.layers
    factors = [l.neurons.step_factors(ir.dt_s) for l in layers]
    i = [torch.zeros(N, l.n_out, dtype=torch.float64) for l in layers]
    v = [torch.zeros(N, l.n_out, dtype=torch.float64) for l in layers]
    prev = [torch.zeros(N, l.n_out, dtype=torch.float64) for l in layers]
    rasters = [np.zeros((T, N, l.n_out), np.uint8) for l in layers]
    for t in range(T):
        s = x[t]
        for k, l in enumerate(layers):
            keep_i, keep_v, gain = factors[k]
            p = l.neurons
            i_in = _synaptic_input(l, s)
            if getattr(l, "recurrent", None) is not None:
                i_in = i_in + prev[k] @ torch.from_numpy(l.recurrent.astype(np.float64)).T
            i[k] = i[k] + i_in
            vv = keep_v * v[k] + gain * (p.v_leak + i[k])
            fired = vv > p.v_th
            v[k] = torch.where(fired, torch.full_like(vv, p.v_reset), vv)
            i[k] = keep_i * i[k]
            s = prev[k] = fired.to(torch.float64)
            rasters[k][t] = fired.numpy()
    counts = rasters[-1].sum(axis=0, dtype=np.int64)
    return counts, v[-1].numpy(), rasters
