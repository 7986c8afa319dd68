"""Quantisation of an IR to Loihi / Lava fixed point.

Norse's current-based LIF (``norse/torch/functional/lif.py``, ``lif_feed_forward_step``)::

    i' = i + W s                      # synaptic input of this step
    v  = v + a_v * (v_leak - v + i')  # a_v = dt / tau_mem
    i  = i' - a_i * i'                # a_i = dt / tau_syn
    spike = v > v_th ; v[spike] = 0

Lava's bit-accurate LIF (``lava/proc/lif/models.py``, ``AbstractPyLifModelFixed``), with
``a_in`` the integer synaptic input of ``Sparse`` (``lava/proc/sparse/models.py``)::

    u = (u * (4096 - (du + 1))) >> 12  + (a_in << 6)      # sign-magnitude shift
    v = (v * (4096 - dv)) >> 12  + u
    spike = v > (vth << 6) ; v[spike] = 0

Matching term by term (``shared/specs/deployment.md`` sec. 1, 3, 4b)::

    du     = round(4096 * dt / tau_syn) - 1     # lava-dl netx: iDecay = round(4096 a_i), du = iDecay - 1
    dv     = round(4096 * dt / tau_mem)         # lava-dl netx: vDecay
    w_int  = round(s * (dt / tau_mem) * W / 2**weight_exp)   # Norse adds a_v * i to v
    vth    = round(s * v_th)                    # 17-bit mantissa

where ``s`` (Lava units per Norse unit) maps the largest ``|a_v W|`` of the layer to the
largest even 8-bit weight (254). Lava's ``Sparse`` keeps mixed-sign weights as even values
in ``[-256, 254]`` (``clip_weights`` then ``truncate_weights`` in ``lava/utils/weightutils.py``
drop the lowest bit), so we round to even integers ourselves: nothing changes inside Lava.
``weight_exp`` is moved off 0 only when ``vth`` would leave its 17-bit range
(``weight_exp < 0``) or fall below ``min_vth`` (``weight_exp > 0``), within ``[-8, 7]``.
A synapse whose weight rounds to 0 is absent from the exported network.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from dpap_deploy.errors import QuantizationError
from dpap_deploy.ir import FCLayer, FixedPoint, NetworkIR

DECAY_UNITY = 4096          # 12-bit decays (Lava decay_shift = 12)
VTH_MAX = 2**17 - 1         # 17-bit threshold mantissa
W_MAX_EVEN = 254            # largest mixed-sign 8-bit weight that survives truncation
W_MIN = -256
WEIGHT_EXP_RANGE = (-8, 7)


def decay_registers(dt_s: float, tau_syn_s: float, tau_mem_s: float, layer: str = "?") -> tuple:
    """Lava ``(du, dv)`` 12-bit registers for Norse time constants (seconds).

    ``du = round(4096 dt/tau_syn) - 1`` and ``dv = round(4096 dt/tau_mem)``; Lava's LIF
    decays ``u`` by ``(4096 - (du + 1)) / 4096`` and ``v`` by ``(4096 - dv) / 4096``.

    Raises:
        QuantizationError: ``dt/tau`` outside ``(0, 1]`` (Euler step unstable or no decay representable).
    """
    out = []
    for what, tau, offset in (("tau_syn", tau_syn_s, 1), ("tau_mem", tau_mem_s, 0)):
        ratio = dt_s / tau if tau > 0 else math.inf
        reg = int(round(DECAY_UNITY * ratio)) - offset
        if not (0.0 < ratio <= 1.0) or reg < 0:
            raise QuantizationError(
                f"layer {layer!r}: dt/{what} = {ratio:g} (dt {dt_s:g} s, {what} {tau:g} s) must be in "
                f"(1/4096, 1] to be a 12-bit Lava decay"
            )
        out.append(min(reg, DECAY_UNITY - 1))
    return tuple(out)


def to_even_int(x: np.ndarray) -> np.ndarray:
    """Round to the nearest even integer and clip to ``[-256, 254]`` (int32)."""
    return np.clip(2 * np.round(np.asarray(x, dtype=np.float64) / 2.0), W_MIN, W_MAX_EVEN).astype(np.int32)


def quantize_layer(layer: FCLayer, dt_s: float, min_vth: int = 256) -> FCLayer:
    """Fixed-point parameters of one layer (see the module docstring for the formulas).

    Conv layers (``ConvLayer``) get ``weight_exp = 0`` always: Lava's fixed-point ``Conv``
    (``lava/proc/conv/models.py``) applies none.

    Raises:
        QuantizationError: decays out of range, or a threshold that no weight exponent
            in ``[-8, 7]`` fits into 17 bits.
    """
    n = layer.neurons
    du, dv = decay_registers(dt_s, n.tau_syn_s, n.tau_mem_s, layer.name)
    if n.v_leak != 0 or n.v_reset != 0:
        raise QuantizationError(f"layer {layer.name!r}: Lava's LIF needs v_leak = v_reset = 0")
    if n.v_th <= 0:
        raise QuantizationError(f"layer {layer.name!r}: threshold v_th = {n.v_th:g} must be > 0")
    a_v = dt_s / n.tau_mem_s
    w = a_v * layer.masked_weight().astype(np.float64)
    conv = layer.kind == "conv"
    m = float(np.abs(w).max()) if w.size else 0.0
    if m == 0.0:
        fixed = FixedPoint(np.zeros(w.shape, np.int32), 0, du, dv, min(VTH_MAX, max(1, int(min_vth))), 0.0)
        return replace(layer, fixed=fixed)
    vth0 = W_MAX_EVEN / m * n.v_th
    exp = 0
    if vth0 > VTH_MAX:
        exp = -int(math.ceil(math.log2(vth0 / VTH_MAX)))
    elif vth0 < min_vth:
        exp = int(math.ceil(math.log2(min_vth / vth0)))
    exp = int(np.clip(exp, *WEIGHT_EXP_RANGE))
    if conv and exp > 0:  # Lava's fixed-point Conv has no weight exponent: keep a smaller vth instead
        exp = 0
    elif conv and exp < 0:
        raise QuantizationError(f"layer {layer.name!r}: a convolution's threshold needs weight_exp {exp}, and "
                                "Lava's fixed-point Conv applies no weight exponent")
    s = W_MAX_EVEN * 2.0**exp / m
    vth = int(round(s * n.v_th))
    if not (1 <= vth <= VTH_MAX):
        raise QuantizationError(
            f"layer {layer.name!r}: threshold {vth} does not fit the 17-bit mantissa [1, {VTH_MAX}] "
            f"with weight_exp in {list(WEIGHT_EXP_RANGE)} (largest |dt/tau_mem * w| = {m:g})"
        )
    w_int = to_even_int(s * w / 2.0**exp)
    w_int[~layer.weight_mask()] = 0
    return replace(layer, fixed=FixedPoint(w_int, exp, du, dv, vth, s))


def quantize(ir: NetworkIR, min_vth: int = 256) -> NetworkIR:
    """A copy of ``ir`` with :class:`~dpap_deploy.ir.FixedPoint` parameters on every layer."""
    return ir.with_layers([quantize_layer(l, ir.dt_s, min_vth) for l in ir.layers])
