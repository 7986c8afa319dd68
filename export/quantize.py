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

Matching term by term (docs/deployment.md secs. 2.2, 4.1 and 6.1)::

    du     = round(4096 * dt / tau_syn) - 1     # lava-dl netx: iDecay = round(4096 a_i), du = iDecay - 1
    dv     = round(4096 * dt / tau_mem)         # lava-dl netx: vDecay
    w_int  = round(s * (dt / tau_mem) * W / 2**weight_exp)   # Norse adds a_v * i to v
    r_int  = round(s * (dt / tau_mem) * W_rec / 2**weight_exp)   # recurrent weights, same scale
    b_int  = round(s * (dt / tau_mem) * input_bias / 2**weight_exp)  # the bias axon's weights, same scale
    vth    = round(s * v_th)                    # 17-bit mantissa

where ``s`` (Lava units per Norse unit) maps the largest ``|a_v W|``, ``|a_v W_rec|`` or
``|a_v input_bias|`` of the layer to the largest even 8-bit weight (254). Lava's ``Sparse`` keeps mixed-sign weights as even values
in ``[-256, 254]`` (``clip_weights`` then ``truncate_weights`` in ``lava/utils/weightutils.py``
drop the lowest bit), so we round to even integers ourselves: nothing changes inside Lava.
``weight_exp`` is moved off 0 only when ``vth`` would leave its 17-bit range
(``weight_exp < 0``) or fall below ``min_vth`` (``weight_exp > 0``), within ``[-8, 7]``.
A synapse whose weight rounds to 0 is absent from the exported network.

**Input bias** (``input_bias``, NIR's ``Affine`` bias): Norse adds it to ``i`` with ``W s``
every step, so it is a weight from an input that spikes at every step (a "bias axon"): Lava's
``Sparse``/``Dense`` deliver ``(b_int << weight_exp)`` into ``a_in`` (``lava/proc/dense/models.py``,
``lava/proc/sparse/models.py``: the summed input is shifted by ``weight_exp``, a right shift
rounding down when negative) and the LIF adds ``a_in << 6`` to ``u`` (``lava/proc/lif/models.py``,
``act_shift``), exactly as for ``W s``. ``b_int`` is ``FixedPoint.input_bias`` (conv: per output
channel). It is not Lava's LIF ``bias_mant << bias_exp``, which enters ``v``.

**Current encoding** (``NetworkIR.input_encoding == "current"``): the first layer's neurons
integrate ``W x`` of the analog sample ``x`` straight into the membrane (Norse's
``lif_current_encoder``: ``v <- v + a_v (W x - v)``, no synaptic current). The layer is quantised
like any other (``w_int``, ``weight_exp``, ``dv``, ``vth``, ``s``), its threshold kept at most
:data:`BIAS_VTH_MAX` so that a bias can reach it, and Lava realises ``a_v W x`` as the
population's bias (``bias_mant << bias_exp``, added to ``v`` every step): see :func:`current_bias`.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from dpap_deploy.errors import ExportValidationError, QuantizationError
from dpap_deploy.ir import FCLayer, FixedPoint, NetworkIR

DECAY_UNITY = 4096          # 12-bit decays (Lava decay_shift = 12)
VTH_MAX = 2**17 - 1         # 17-bit threshold mantissa
W_MAX_EVEN = 254            # largest mixed-sign 8-bit weight that survives truncation
W_MIN = -256
WEIGHT_EXP_RANGE = (-8, 7)
BIAS_MANT_MAX = 4095        # 13-bit signed bias mantissa, kept symmetric: |bias_mant| <= 4095
BIAS_EXP_MAX = 7            # 3-bit unsigned bias exponent, 0..7
#: the largest threshold a bias can still exceed: (4095 << 7) > (vth << 6) needs vth <= 8189
BIAS_VTH_MAX = -(-(BIAS_MANT_MAX << BIAS_EXP_MAX) // 64) - 1


def decay_registers(dt_s: float, tau_syn_s: float, tau_mem_s: float, layer: str = "?") -> tuple:
    """Lava ``(du, dv)`` 12-bit registers for Norse time constants (seconds).

    ``du = round(4096 dt/tau_syn) - 1`` and ``dv = round(4096 dt/tau_mem)`` (0 for ``tau_mem = inf``,
    the IF variant: no leak); Lava's LIF
    decays ``u`` by ``(4096 - (du + 1)) / 4096`` and ``v`` by ``(4096 - dv) / 4096``.

    Raises:
        QuantizationError: ``dt/tau`` outside ``(0, 1]`` (Euler step unstable or no decay representable).
    """
    out = []
    for what, tau, offset in (("tau_syn", tau_syn_s, 1), ("tau_mem", tau_mem_s, 0)):
        if what == "tau_mem" and math.isinf(tau):  # the IF variant (dpap_deploy/ir.py, LIFNeurons): no leak
            out.append(0)
            continue
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


def quantize_layer(layer: FCLayer, dt_s: float, min_vth: int = 256, current: bool = False) -> FCLayer:
    """Fixed-point parameters of one layer (see the module docstring for the formulas).

    Conv layers (``ConvLayer``) get ``weight_exp = 0`` always: Lava's fixed-point ``Conv``
    (``lava/proc/conv/models.py``) applies none. With ``current`` (the first layer of a
    current-encoded network) the threshold is kept at most :data:`BIAS_VTH_MAX` (a more negative
    ``weight_exp`` instead, which only scales the host's ``W x``) and ``fixed.bias_exp`` is set
    (:func:`bias_exponent`).

    A layer's ``input_bias`` (``(n_out,)``, conv ``(C_out,)``, Norse units of current per step)
    becomes ``fixed.input_bias = even_round(s * dt/tau_mem * input_bias / 2**weight_exp)`` int32,
    the weights of its bias axon (module docstring): its largest ``|dt/tau_mem * input_bias|`` counts
    in the scale ``s`` like a weight, so every bias is an even integer in ``[-254, 254]``.

    Raises:
        QuantizationError: decays out of range, or a threshold that no weight exponent
            in ``[-8, 7]`` fits into 17 bits (current encoding: into ``[1, 8189]``); an input
            bias on a current-encoded first layer (its ``u`` takes no synaptic input), naming it.
    """
    if current and layer.input_bias is not None:
        raise QuantizationError(f"layer {layer.name!r}: an input bias on the current-encoded first layer is not "
                                "supported (its W x is the population's bias into v; it has no synaptic input)")
    n = layer.neurons
    du, dv = decay_registers(dt_s, n.tau_syn_s, n.tau_mem_s, layer.name)
    if n.v_leak != 0 or n.v_reset != 0:
        raise QuantizationError(f"layer {layer.name!r}: Lava's LIF needs v_leak = v_reset = 0")
    if n.v_th <= 0:
        raise QuantizationError(f"layer {layer.name!r}: threshold v_th = {n.v_th:g} must be > 0")
    a_v = n.step_factors(dt_s)[2]  # dt / tau_mem; 1 for the IF variant (v <- v + i)
    w = a_v * layer.masked_weight().astype(np.float64)
    rec = getattr(layer, "recurrent", None)
    rec = None if rec is None else a_v * rec.astype(np.float64)  # reaches the same u as W: same scale
    ib = None if layer.input_bias is None else a_v * layer.input_bias.astype(np.float64)  # the bias axon: same scale
    conv = layer.kind == "conv"
    vth_max = BIAS_VTH_MAX if current else VTH_MAX
    m = max([float(np.abs(x).max()) for x in (w, rec, ib) if x is not None and x.size] + [0.0])
    zeros = lambda x: None if x is None else np.zeros(x.shape, np.int32)  # noqa: E731
    if m == 0.0:
        vth = min(vth_max, max(1, int(min_vth)))
        fixed = FixedPoint(np.zeros(w.shape, np.int32), 0, du, dv, vth, 0.0,
                           bias_exponent(vth, layer.name) if current else None, zeros(rec), zeros(ib))
        return replace(layer, fixed=with_static_bias(layer, fixed, vth / n.v_th))
    vth0 = W_MAX_EVEN / m * n.v_th
    exp = 0
    if vth0 > vth_max:
        exp = -int(math.ceil(math.log2(vth0 / vth_max)))
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
    if not (1 <= vth <= vth_max):
        what = f"the bias-reachable range [1, {vth_max}] (current encoding)" if current else \
            f"the 17-bit mantissa [1, {VTH_MAX}]"
        raise QuantizationError(
            f"layer {layer.name!r}: threshold {vth} does not fit {what} "
            f"with weight_exp in {list(WEIGHT_EXP_RANGE)} (largest |dt/tau_mem * w| = {m:g})"
        )
    w_int = to_even_int(s * w / 2.0**exp)
    w_int[~layer.weight_mask()] = 0
    bias_exp = bias_exponent(vth, layer.name) if current else None
    rec_int = None if rec is None else to_even_int(s * rec / 2.0**exp)
    ib_int = None if ib is None else to_even_int(s * ib / 2.0**exp)
    return replace(layer, fixed=with_static_bias(layer, FixedPoint(w_int, exp, du, dv, vth, s, bias_exp, rec_int, ib_int), s))


#: lava-dl netx's bias exponent for CUBA neurons (``lava/lib/dl/netx/hdf5.py``, ``get_neuron_params``)
STATIC_BIAS_EXP = 6


def with_static_bias(layer, fixed: FixedPoint, scale: float) -> FixedPoint:
    """``fixed`` with the integers of ``layer.bias`` (Norse ``v`` units): ``bias_mant = round(scale * bias)``
    with ``bias_exp = 6``, so ``bias_mant << 6`` is in the units of ``vth << 6`` (``scale`` = Lava units
    per Norse unit, ``vth = scale * v_th``); unchanged without a bias.

    Raises:
        QuantizationError: a bias mantissa beyond Lava's signed 13 bits (``lava/proc/lif/models.py``)."""
    if layer.bias is None:
        return fixed
    mant = np.round(scale * np.asarray(layer.bias, np.float64)).astype(np.int64)
    if np.abs(mant).max(initial=0) > BIAS_MANT_MAX:
        raise QuantizationError(f"layer {layer.name!r}: bias_mant up to {int(np.abs(mant).max())} exceeds Lava's "
                                f"13-bit bias mantissa (|b| <= {BIAS_MANT_MAX})")
    return replace(fixed, bias_mant=mant, bias_exp=STATIC_BIAS_EXP)


def quantize(ir: NetworkIR, min_vth: int = 256) -> NetworkIR:
    """A copy of ``ir`` with :class:`~dpap_deploy.ir.FixedPoint` parameters on every layer
    (with current encoding the first layer also gets ``bias_exp``: :func:`quantize_layer`).

    Recurrent weights (``FCLayer.recurrent``) are quantised with the layer's scale and weight
    exponent into ``fixed.recurrent_weight`` (they add to the same ``u``); the ``"lif"`` variant
    (``tau_syn_s == dt``) gets ``du = 4095`` (Lava keeps nothing of ``u``).

    Input biases (``input_bias``) become the integer weights of a bias axon,
    ``fixed.input_bias`` (module docstring), with the layer's scale and weight exponent.

    Raises:
        UnsupportedLayerError: an LI population (no spikes), naming it. The IF variant
            (``tau_mem = inf``) gets ``dv = 0`` and an input gain of 1 instead of ``dt/tau_mem``.
        QuantizationError: see :func:`quantize_layer`.
    """
    ir.require_features(("bias", "delay", "groups", "dilation", "input_bias", "recurrent", "if"),
                        "quantisation to Lava fixed point")
    current = ir.input_encoding == "current"
    return ir.with_layers([quantize_layer(l, ir.dt_s, min_vth, current=current and i == 0)
                           for i, l in enumerate(ir.layers)])


# -- current encoding: the first population's per-sample bias -------------------------------
def bias_exponent(vth: int, layer: str = "?") -> int:
    """The smallest Lava ``bias_exp`` (0..7) whose largest bias ``4095 << bias_exp`` exceeds the
    threshold ``vth << 6``.

    A bias above the threshold makes the neuron fire at every step (from ``v = 0`` after a reset,
    one step of bias crosses it), so clipping a larger bias to ``4095 << bias_exp`` changes no
    spike, and the smallest such exponent keeps the finest bias resolution, ``2**bias_exp`` Lava
    units. Ranges: ``bias_mant`` 13-bit signed, ``bias_exp`` 3-bit unsigned (``PyLifResetModelBitAcc``
    in ``lava/proc/lif/models.py``; docs/deployment.md sec. 2.1).

    Raises:
        QuantizationError: ``vth > 8189`` (:data:`BIAS_VTH_MAX`): even ``4095 << 7`` does not reach it.
    """
    for e in range(BIAS_EXP_MAX + 1):
        if BIAS_MANT_MAX << e > int(vth) << 6:
            return e
    raise QuantizationError(
        f"layer {layer!r}: threshold vth = {int(vth)} (vth << 6 = {int(vth) << 6}) is beyond the largest bias "
        f"{BIAS_MANT_MAX} << {BIAS_EXP_MAX} = {BIAS_MANT_MAX << BIAS_EXP_MAX}; current encoding needs vth <= {BIAS_VTH_MAX}")


def current_bias(layer: FCLayer, x: np.ndarray) -> tuple:
    """Lava's per-sample bias of a current-encoded first population: ``(bias_mant, bias_exp)``.

    Lava's fixed-point LIF (``AbstractPyLifModelFixed.subthr_dynamics`` in ``lava/proc/lif/models.py``;
    docs/deployment.md sec. 2.2) adds ``u + (bias_mant << bias_exp)`` to ``v`` every step, and a
    synaptic input ``a`` reaches ``v`` through ``u`` as ``(a << weight_exp) << 6``. The layer is
    quantised with ``v_lava = 64 * s * v_norse`` and ``w_int * 2**weight_exp = s * a_v * W``
    (module docstring; docs/deployment.md sec. 6.1), so Norse's per-step increment ``a_v * (W x)``
    (``lif_current_encoder``, ``a_v = dt/tau_mem``) is, in Lava units::

        b = 64 * 2**weight_exp * (w_int @ x)
        bias_mant = clip(round(b / 2**bias_exp), -4095, 4095)

    with ``u = 0`` (no synapses into the layer). ``bias_exp`` (:func:`bias_exponent`) makes every
    bias up to just above the threshold representable, so clipping changes no spike; ``w_int @ x``
    is what the host computes (the layer's synapses are not on the chip).

    Args:
        layer: the quantised first layer (``layer.fixed`` set; ``fixed.bias_exp`` used when set).
        x: analog samples ``(N, F)`` (or one ``(F,)``), Norse units (current encoding feeds [0, 1]).

    Returns:
        ``bias_mant`` ``(N, n_out)`` int32 in ``[-4095, 4095]`` and ``bias_exp`` int in ``[0, 7]``.

    Raises:
        ExportValidationError: the layer is not quantised, or ``x`` has the wrong width or non-finite values.
        QuantizationError: a threshold no bias reaches (:func:`bias_exponent`).
    """
    f = layer.fixed
    if f is None:
        raise ExportValidationError(f"layer {layer.name!r} is not quantised; run export.quantize.quantize first")
    x = np.asarray(x, dtype=np.float64)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != layer.n_in:
        raise ExportValidationError(f"layer {layer.name!r} takes {layer.n_in} analog inputs per sample, got {x.shape}")
    if not np.isfinite(x).all():
        raise ExportValidationError(f"layer {layer.name!r}: analog input has non-finite values")
    e = int(f.bias_exp) if f.bias_exp is not None else bias_exponent(f.vth, layer.name)
    if not 0 <= e <= BIAS_EXP_MAX or not BIAS_MANT_MAX << e > int(f.vth) << 6:
        raise QuantizationError(f"layer {layer.name!r}: bias_exp {e} outside 0..{BIAS_EXP_MAX} or too small for "
                                f"vth = {int(f.vth)} ((4095 << bias_exp) must exceed vth << 6)")
    drive = (x @ layer.masked_weight(fixed=True).astype(np.float64).T) * (64.0 * 2.0 ** int(f.weight_exp))
    mant = np.clip(np.round(drive / 2.0 ** e), -BIAS_MANT_MAX, BIAS_MANT_MAX).astype(np.int32)
    return mant, e


def analog_input(ir: NetworkIR, x: np.ndarray, who: str = "the network") -> np.ndarray:
    """The analog samples ``(N, F)`` float64 of a current-encoded network's input.

    Args:
        x: ``(T, N, F)`` with ``T = ir.time_steps`` and the same values at every step (what the
            ``current`` encoding, ``dpap_deploy/data/encoding.py``, and training pass), or ``(N, F)``.
        who: the consumer, for the message.

    Raises:
        ExportValidationError: another shape, ``T`` or ``F``, or values that change over ``T``.
    """
    x = np.asarray(x)
    F = ir.input_size
    if x.ndim == 3:
        if x.shape[0] != ir.time_steps or x.shape[2] != F:
            raise ExportValidationError(f"current-encoded input has T={x.shape[0]}, F={x.shape[2]}; network "
                                        f"{ir.name!r} expects T={ir.time_steps}, F={F}")
        if x.shape[0] > 1 and not (x == x[:1]).all():
            raise ExportValidationError(f"{who}: current-encoded input must be the same at every time step "
                                        f"(network {ir.name!r} takes one analog sample per T = {ir.time_steps} steps)")
        x = x[0]
    if x.ndim != 2 or x.shape[1] != F:
        raise ExportValidationError(f"current-encoded input has shape {x.shape}; network {ir.name!r} takes "
                                    f"(T, N, {F}) or (N, {F})")
    return np.ascontiguousarray(x, dtype=np.float64)
