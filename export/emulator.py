"""A batched torch emulator of Lava's fixed-point ``Sparse``/``Dense`` + ``LIF`` (Loihi's integers).

Lava's CPU simulator is the ground truth, but it runs about a thousand time steps per second
(docs/deployment.md sec. 4.4). This module runs the same integer equations on
whole batches of samples at once, on CPU, so fixed-point accuracy can be measured during
training and on whole test sets. Per layer and time step (``lava/proc/lif/models.py``,
``AbstractPyLifModelFixed``; ``lava/proc/sparse/models.py``, ``PySparseModelBitAcc``)::

    a   = (W s) << weight_exp            # >> -weight_exp for negative exponents (floor)
    u   = sign(u*(4096-(du+1))) * (|u*(4096-(du+1))| >> 12) + (a << 6)   # wraps into (-2^23, 2^23]
    v   = sign(v*(4096-dv)) * (|v*(4096-dv)| >> 12) + u                 # clipped to +-(2^23 - 1)
    s'  = v > (vth << 6)
    time_gate "drop" (or no mask):  v[s'] = 0;  out = s' & gate[:, t]
        # the neuron resets, the spike is dropped: the SpikeGate after the population (export/gate/spike_gate.py)
    time_gate "hold":  s' = s' & gate[:, t];  v[s'] = 0;  out = s'
        # threshold test off at a masked step: no spike, no reset (export/gate/gated_lif.py)

A layer with an input bias adds its bias axon's ``b << weight_exp`` to ``a`` at every step
(``b = FixedPoint.input_bias``, conv: per channel over the map; a third ``Sparse`` in Lava, from an
input that spikes at every step, shifted on its own: :func:`bias_input`).

A layer with recurrent weights ``R`` (``FixedPoint.recurrent_weight``) also adds
``(R out[t-1]) << weight_exp`` to ``a`` (shifted on its own: Lava's second ``Sparse`` from the
population back to itself, whose one-step delay is the recurrence's ``t -> t+1``; zero at ``t = 0``).

``gate[:, t]`` is the layer's timestep mask at within-sample step ``t`` (all True without one;
docs/dpap.md sec. 7.4).

With current encoding (``NetworkIR.input_encoding == "current"``) layer 0 has no synapses:
``u = 0`` and ``v = decay(v) + (bias_mant << bias_exp)`` with the sample's ``bias_mant`` from
``export/quantize.py`` (``current_bias()``), the same integers ``loihi-sim``'s ``BiasScheduleLIF``
(``export/gate/bias_lif.py``) sets, and the analog input is what ``lava_sim.run`` takes.

Each sample starts from zero state, which is what the exported Lava network does with its
``LIFReset`` processes (their offsets absorb the one-step delay of every ``Sparse``; see
``export/lava_sim.py``), so the emulator's step ``j`` of sample ``k`` is Lava's sink column
``k*T + L + j`` for the output population (``k*T + L - 1 + j`` with current encoding). All state is integer-valued float64, which is
exact below 2^53: ``|u|, |v| < 2^23`` times a 12-bit decay stays below 2^36, and the matrix
product of 9-bit weights with 0/1 spikes below 2^53 for any realistic fan-in.

Two engines compute the same integers:

- ``"numba"`` (default): one fused, event-driven kernel (``export/_emulator_kernel.py``),
  parallel over samples; per time step it adds only the weight rows of neurons that spiked.
  About 1000x Lava's throughput on the digits networks (``benchmarks/README.md``).
- ``"torch"``: the same equations as batched torch tensor operations, layer by layer per step;
  the readable reference, and the engine to use for tensors on another device.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from dpap_deploy.errors import ExportValidationError
from dpap_deploy.ir import NetworkIR

U_LIM = 2 ** 23
ENGINES = ("numba", "torch")
#: optional layer features the emulator realises (:meth:`~dpap_deploy.ir.NetworkIR.require_features`)
FEATURES = ("bias", "delay", "groups", "dilation", "input_bias", "recurrent", "if")
#: fully connected layers at least this dense use dense weight rows in the numba kernel
#: (vectorised adds); sparser ones and convolutions use CSR rows (one add per synapse)
DENSE_ROWS_MIN_DENSITY = 0.125


def _decay(x: torch.Tensor, d: int) -> torch.Tensor:
    """``sign(x*(4096-d)) * (|x*(4096-d)| >> 12)`` = ``trunc(x * (4096-d)/4096)`` on integer-valued
    float64: the factor is an exact binary fraction and the product stays below 2^53, so exact."""
    return torch.trunc(x * ((4096 - d) / 4096.0))


def _require_fixed(ir: NetworkIR) -> None:
    for l in ir.layers:
        if l.fixed is None:
            raise ExportValidationError(f'layer "{l.name}" is not quantised; run export.quantize.quantize first')


def _layer_params(ir: NetworkIR) -> List[dict]:
    _require_fixed(ir)
    params = []
    biases = np.split(_neuron_bias(ir), np.cumsum([l.n_out for l in ir.layers])[:-1])
    for l, b in zip(ir.layers, biases):
        exp = int(l.fixed.weight_exp)
        common = {"exp": exp, "du": int(l.fixed.du), "dv": int(l.fixed.dv), "vth64": int(l.fixed.vth) * 64,
                  "n_out": l.n_out,
                  "bias64": torch.from_numpy(b), "delays": _delay_slices(l, exp)}
        if l.kind == "conv":  # torch layout (C_out, C_in, kH, kW), correlation as in the model
            w = l.masked_weight(fixed=True).astype(np.float64)
            params.append({**common, "conv": True, "w64": torch.from_numpy(w * 64.0), "in_shape": l.in_shape,
                           "stride": l.stride, "padding": l.padding, "groups": l.groups, "dilation": l.dilation})
            continue
        w = l.masked_weight(fixed=True).astype(np.float64)
        params.append({**common, "conv": False, "w": torch.from_numpy(w.T.copy()),
                       "w64": torch.from_numpy(np.ascontiguousarray(w.T * 64.0 * 2.0 ** max(exp, 0)))})
    return params


def _delay_slices(layer, exp: int) -> Optional[List[tuple]]:
    """For a fully connected layer with delays, per distinct delay ``k`` (time steps) the weights
    ``(n_in, n_out)`` of its synapses with that delay, scaled by ``2^exp * 64`` (``exp >= 0``,
    ``lava_sim.check_delays_and_bias``); None without delays."""
    if layer.delay is None:
        return None
    w = layer.masked_weight(fixed=True).astype(np.float64) * 64.0 * 2.0 ** exp
    return [(int(k), torch.from_numpy(np.ascontiguousarray(np.where(layer.delay == k, w, 0.0).T)))
            for k in np.unique(layer.delay)]


def _delayed_input(p: dict, ring: torch.Tensor, s: torch.Tensor, t: int) -> torch.Tensor:
    """A delayed layer's synaptic input ``(B, n_out)`` (``<< 6``) at step ``t``: this step's spikes ``s``
    go into the ring slot of their arrival step ``(t + k) % len(ring)``; slot ``t`` is taken and cleared
    (Lava's ``DelaySparse``, ``lava/proc/sparse/models.py``)."""
    M = ring.shape[0]
    for k, wk in p["delays"]:
        ring[(t + k) % M] += s @ wk
    a = ring[t % M].clone()
    ring[t % M] = 0.0
    return a


def _wrap(uu: torch.Tensor) -> torch.Tensor:
    """Lava's one wrap of the 24-bit current: ``u - 2^24`` above 2^23, ``u + 2^24`` at or below -2^23."""
    lim, two = float(U_LIM), float(2 * U_LIM)
    return torch.where(uu > lim, uu - two, torch.where(uu <= -lim, uu + two, uu))


def _kernel_arrays(ir: NetworkIR) -> tuple:
    """The per-layer parameters and concatenated weights ``_emulator_kernel.run_kernel`` takes."""
    L = len(ir.layers)
    n_out = np.array([l.n_out for l in ir.layers], np.int64)
    mode = np.full(L, 2, np.int64)
    scale, clamp = np.ones(L), np.zeros(L, np.bool_)
    fu, fv, vth64 = np.zeros(L), np.zeros(L), np.zeros(L)
    wd16_parts, wd32_parts, ip_parts, ix_parts, wx_parts, dly_parts = [], [], [], [], [], []
    wd_off, ip_off, ix_off = np.zeros(L, np.int64), np.zeros(L, np.int64), np.zeros(L, np.int64)
    n_wd16 = n_wd32 = n_ip = n_ix = 0
    for i, (l, p) in enumerate(zip(ir.layers, _layer_params(ir))):
        fu[i], fv[i] = (4096 - p["du"] - 1) / 4096.0, (4096 - p["dv"]) / 4096.0
        vth64[i] = p["vth64"]
        if p["conv"]:  # Lava's Conv: no weight exponent, 24-bit clamp of the sum
            clamp[i] = True
            by_pre = l.unrolled(fixed=True).T.tocsr()
        else:
            scale[i] = 2.0 ** p["exp"]
            w = l.masked_weight(fixed=True)
            if l.delay is None and np.count_nonzero(w) >= DENSE_ROWS_MIN_DENSITY * w.size:
                w = w.astype(np.int64)
                # the partial sums of any spike subset lie between these two; int16 if they fit
                narrow = max(np.where(w > 0, w, 0).sum(1).max(), -np.where(w < 0, w, 0).sum(1).min()) < 2 ** 15
                rows = np.ascontiguousarray(w.T).reshape(-1)
                if narrow:
                    mode[i], wd_off[i] = 0, n_wd16
                    wd16_parts.append(rows.astype(np.int16))
                    n_wd16 += w.size
                else:
                    mode[i], wd_off[i] = 1, n_wd32
                    wd32_parts.append(rows.astype(np.int32))
                    n_wd32 += w.size
                continue
            by_pre = sp.csr_matrix(w.T)
        by_pre.eliminate_zeros()
        by_pre.sort_indices()
        ip_off[i], ix_off[i] = n_ip, n_ix
        ip_parts.append(by_pre.indptr.astype(np.int64))
        ix_parts.append(by_pre.indices.astype(np.int64))
        wx_parts.append(by_pre.data.astype(np.int32))
        dly_parts.append(_entry_delays(l, by_pre))
        n_ip += len(by_pre.indptr)
        n_ix += by_pre.nnz
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(1, dt)  # noqa: E731
    neuron_off = np.concatenate([[0], np.cumsum(n_out)]).astype(np.int64)
    gate = np.concatenate([_gate(l, ir.time_steps) for l in ir.layers]).astype(np.uint8)
    from dpap_deploy.export import holds

    hold = np.array([holds(l) for l in ir.layers], np.uint8)  # per layer: 1 "hold", 0 "drop" (docs/dpap.md sec. 7.4)
    rw, rw_off = _recurrent_rows(ir)
    ib = np.concatenate([np.zeros(l.n_out) if bias_input(l) is None else bias_input(l) for l in ir.layers])
    return (n_out, mode, scale, fu, fv, vth64, clamp, cat(wd16_parts, np.int16),
            cat(wd32_parts, np.int32), wd_off,
            cat(ip_parts, np.int64), ip_off, cat(ix_parts, np.int64), cat(wx_parts, np.int32), ix_off, neuron_off,
            np.ascontiguousarray(gate), hold, rw, rw_off, ib, _neuron_bias(ir), cat(dly_parts, np.int64), *_rings(ir))


def _recurrent_rows(ir: NetworkIR) -> Tuple[np.ndarray, np.ndarray]:
    """Recurrent integer weights for the kernel: concatenated rows by presynaptic neuron ``(n*n,)``
    int32 per recurrent layer, and each layer's offset (-1: none)."""
    parts, off, n = [], np.full(len(ir.layers), -1, np.int64), 0
    for i, l in enumerate(ir.layers):
        r = _fixed_recurrent(l)
        if r is not None:
            parts.append(np.ascontiguousarray(r.T).reshape(-1).astype(np.int32))
            off[i], n = n, n + r.size
    return (np.concatenate(parts) if parts else np.zeros(1, np.int32)), off


def _fixed_recurrent(layer) -> Optional[np.ndarray]:
    """The layer's integer recurrent weights ``(n_out, n_out)``, or None."""
    if getattr(layer, "recurrent", None) is None:
        return None
    if layer.fixed.recurrent_weight is None:
        raise ExportValidationError(f'layer "{layer.name}" has recurrent weights but no fixed-point ones; '
                                    "quantise it with export.quantize.quantize")
    return layer.fixed.recurrent_weight


def bias_input(layer) -> Optional[np.ndarray]:
    """What the layer's bias axon adds to ``a`` at every step: ``floor(fixed.input_bias * 2**weight_exp)``
    per neuron ``(n_out,)`` float64 (integers; conv: each channel's over its map, torch's ``(C, H, W)``
    order), or None without an input bias. Lava's bias ``Sparse`` shifts its one-synapse sum by the
    layer's ``weight_exp`` on its own (``lava/proc/sparse/models.py``; ``export/quantize.py``).

    Raises:
        ExportValidationError: a layer with ``input_bias`` but no integer bias (not quantised by us).
    """
    if getattr(layer, "input_bias", None) is None:
        return None
    b = layer.fixed.input_bias
    if b is None:
        raise ExportValidationError(f'layer "{layer.name}" has an input bias but no fixed-point one; '
                                    "quantise it with export.quantize.quantize")
    a = np.floor(np.asarray(b, np.float64) * 2.0 ** int(layer.fixed.weight_exp))
    return np.repeat(a, layer.n_out // a.shape[0])


def _neuron_bias(ir: NetworkIR) -> np.ndarray:
    """Every neuron's static bias ``bias_mant << bias_exp`` (float64 integers, 0 without one), layers
    concatenated, conv neurons in torch's ``(C, H, W)`` order (one value per channel): what Lava's LIF adds
    to ``v`` each step (``lava/proc/lif/models.py``, ``effective_bias``)."""
    parts = []
    for l in ir.layers:
        if l.bias is None:
            parts.append(np.zeros(l.n_out))
            continue
        b = np.asarray(l.fixed.bias_mant, np.float64) * 2.0 ** int(l.fixed.bias_exp)
        parts.append(np.repeat(b, l.n_out // b.size))
    return np.concatenate(parts)


def _entry_delays(layer, by_pre: sp.csr_matrix) -> np.ndarray:
    """The delay (time steps) of each entry of a layer's presynaptic-major CSR ``by_pre`` ``(n_in, n_out)``
    (sorted indices), zeros for a layer without delays."""
    if layer.delay is None:
        return np.zeros(by_pre.nnz, np.int64)
    pre = np.repeat(np.arange(by_pre.shape[0]), np.diff(by_pre.indptr))
    return np.asarray(layer.delay, np.int64)[by_pre.indices, pre]


def _rings(ir: NetworkIR) -> tuple:
    """Per layer the length of its delay ring (``max delay + 1``; 1 without delays) and its offset into
    one sample's ring buffer of ``sum(ring_len * n_out)`` entries."""
    ring_len = np.array([1 if l.delay is None else int(np.max(l.delay, initial=0)) + 1 for l in ir.layers], np.int64)
    sizes = np.where(ring_len > 1, ring_len, 0) * np.array([l.n_out for l in ir.layers], np.int64)
    return ring_len, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _gate(layer, T: int) -> np.ndarray:
    """``(n_out, T)`` bool: the layer's timestep mask per neuron (a conv channel's for each of its
    pixels, torch's ``(C, H, W)`` order), all True without one."""
    if layer.time_mask is None:
        return np.ones((layer.n_out, T), dtype=bool)
    m = np.asarray(layer.time_mask, dtype=bool)[:, :T]
    return np.repeat(m, layer.n_out // m.shape[0], axis=0)


def _emulate_numba(ir: NetworkIR, spikes: np.ndarray, bias: Optional[np.ndarray], record: bool, progress: bool,
                   chunk: int = 4096):
    from tqdm.auto import tqdm

    from dpap_deploy.export._emulator_kernel import run_kernel

    T, N, _ = spikes.shape
    bias = np.zeros((N, 0)) if bias is None else np.ascontiguousarray(bias, dtype=np.float64)
    arrays = _kernel_arrays(ir)
    neuron_off, ring_len, ring_off = arrays[15], arrays[-2], arrays[-1]
    n_ring = int(max(1, *(ring_off + np.where(ring_len > 1, ring_len, 0) * arrays[0])))
    carry, L = carries(ir), len(ir.layers)
    start = np.zeros(L, np.int64)
    if carry:  # delayed spikes cross samples: one sample at a time, one ring for the run, after the prologue
        chunk, ring = 1, np.zeros((1, n_ring), np.int64)
        pro = list(arrays)
        pro[16] = np.ones((int(neuron_off[-1]), L), np.uint8)  # gates open in the prologue
        run_kernel(np.zeros((L, 1, spikes.shape[2]), np.uint8), np.zeros((1, bias.shape[1])), *pro,
                   _prologue_start(L), ring, 0, np.zeros((0, 0, 0), np.uint8), np.zeros((1, ir.layers[-1].n_out), np.int64))
    counts = np.zeros((N, ir.layers[-1].n_out), dtype=np.int64)
    rec = np.zeros((T, N, int(neuron_off[-1])) if record else (0, 0, 0), dtype=np.uint8)
    with tqdm(total=N, desc="emulator", unit="sample", disable=None if progress else True, leave=False) as bar:
        for b0 in range(0, N, chunk):  # chunks show progress; without delays samples are independent
            b1 = min(N, b0 + chunk)
            part = np.zeros((0, 0, 0), np.uint8) if not record else np.zeros((T, b1 - b0, rec.shape[2]), np.uint8)
            if not carry:
                ring = np.zeros((b1 - b0, n_ring), np.int64)
            run_kernel(np.ascontiguousarray(spikes[:, b0:b1]), bias[b0:b1], *arrays, start, ring,
                       L + b0 * T if carry else 0, part, counts[b0:b1])
            if record:
                rec[:, b0:b1] = part
            bar.update(b1 - b0)
    rasters = [rec[:, :, neuron_off[i]:neuron_off[i + 1]] for i in range(len(ir.layers))] if record else None
    return counts, rasters


def _prologue_start(L: int) -> np.ndarray:
    """The prologue of a delayed run: ``L`` steps before sample 0 in which layer ``i`` runs from step
    ``L - i - 1`` on. In Lava population ``i`` runs steps ``1 .. i + 1`` before its first reset (its reset
    offset is ``i + 2``), driven by its bias alone; what it sends then through a delay reaches the next
    population after that one's first reset, i.e. in sample 0. The prologue's neuron state is dropped
    (the reset), its delay buffer kept."""
    return np.array([L - i - 1 for i in range(L)], np.int64)


def carries(ir: NetworkIR) -> bool:
    """True when a layer has non-zero synaptic delays: its delayed spikes of one sample's last steps
    arrive in the next sample's first steps (Lava's ``DelaySparse`` buffer is not reset with the
    neurons), so both engines run the samples one after the other with one delay buffer for the run."""
    return any(l.delay is not None and np.max(l.delay, initial=0) > 0 for l in ir.layers)


def _inputs(ir: NetworkIR, x: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(spikes (T, N, F) uint8, bias)``: for spike input the checked 0/1 spikes and None; with
    current encoding empty spikes ``(T, N, 0)`` and layer 0's bias ``bias_mant << bias_exp``
    ``(N, n_0)`` float64 (integers) of the analog samples."""
    from dpap_deploy.export.quantize import analog_input, current_bias

    if ir.input_encoding == "current":
        mant, exp = current_bias(ir.layers[0], analog_input(ir, x, "the emulator"))
        return np.zeros((ir.time_steps, mant.shape[0], 0), np.uint8), mant.astype(np.float64) * 2.0 ** exp
    spikes = np.asarray(x)
    if spikes.ndim == 5:
        spikes = spikes.reshape(spikes.shape[0], spikes.shape[1], -1)
    T, N, F = spikes.shape
    if T != ir.time_steps or F != ir.input_size:
        raise ExportValidationError(
            f"input spikes have T={T}, F={F}; network {ir.name!r} expects T={ir.time_steps}, F={ir.input_size}")
    binary = np.ascontiguousarray(spikes, dtype=np.uint8)
    if binary.size and (binary.max() > 1 or (spikes.dtype != np.uint8 and not np.array_equal(binary, spikes))):
        raise ExportValidationError(f"input spikes of network {ir.name!r} must be 0 or 1")
    return binary, None


@torch.no_grad()
def check_supported(ir: NetworkIR) -> None:
    """Raise :class:`~dpap_deploy.errors.UnsupportedLayerError` naming every layer the emulator does not
    model: it emulates LIF populations only, so sigma-delta (``"sdnn"``) layers are refused by name (they
    run in ``loihi-sim``, ``export/lava_sim.py``), as is what Lava cannot run (conv delays, ...)."""
    from dpap_deploy.export import check_layers
    from dpap_deploy.export.lava_sim import check_delays_and_bias

    # it emulates what Lava runs, so it refuses what Lava cannot run (and names the layer)
    check_layers(ir, "emulator", ("fc", "conv", "flatten"), ("lif",), features=FEATURES)
    check_delays_and_bias(ir, "emulator")


def emulate(ir: NetworkIR, spikes: np.ndarray, batch_size: int = 512,
            record: bool = False, engine: str = "numba",
            progress: bool = False) -> Tuple[np.ndarray, Optional[List[np.ndarray]]]:
    """Run input spikes through the quantised network exactly as Lava's fixed-point models do.

    Args:
        ir: a quantised network (``FCLayer.fixed`` set, e.g. ``network.npz`` of ``loihi-sim``).
        spikes: ``(T, N, F)`` 0/1 input spikes, time first (``(T, N, C, H, W)`` for a network
            whose first layer is a convolution); with current encoding the analog samples, as
            ``lava_sim.run`` takes them: ``(T, N, F)`` the same at every step, or ``(N, F)``.
        batch_size: samples per batch (``"torch"`` engine).
        record: also return every population's spikes.
        engine: ``"numba"`` (fused CPU kernel) or ``"torch"`` (tensor operations); same results.
        progress: show a progress bar (numba engine; only on a terminal).

    Returns:
        ``(counts, rasters)``: output spike counts ``(N, C)`` int64, and with ``record`` a list
        of ``(T, N, n_l)`` uint8 spike rasters per layer (else None).

    Raises:
        ExportValidationError: unquantised layers, input ``T``/``F`` unlike the network's, input
            values other than 0/1 (current encoding: analog input that changes over ``T``), or an
            unknown engine.
        UnsupportedLayerError: a layer it does not model (:func:`check_supported`: sigma-delta layers,
            conv delays, ...), named.
        QuantizationError: a current-encoded first layer whose threshold no bias reaches.
    """
    if engine not in ENGINES:
        raise ExportValidationError(f"unknown emulator engine {engine!r}; choose one of {', '.join(ENGINES)}")
    check_supported(ir)
    _require_fixed(ir)
    binary, bias = _inputs(ir, spikes)
    if engine == "numba":
        return _emulate_numba(ir, binary, bias, record, progress)
    return _emulate_torch(ir, _layer_params(ir), binary, bias, batch_size, record)


def _emulate_torch(ir: NetworkIR, params: List[dict], spikes: np.ndarray, bias: Optional[np.ndarray],
                   batch_size: int, record: bool) -> Tuple[np.ndarray, Optional[List[np.ndarray]]]:
    """The ``"torch"`` engine of :func:`emulate`: ``spikes`` ``(T, N, F)`` uint8 (``F = 0`` and ``bias``
    ``(N, n_0)`` with current encoding), batches of ``batch_size`` samples; a network with delays one
    sample at a time after the prologue (:func:`carries`, :func:`_prologue_start`), as the numba engine."""
    T, N, _ = spikes.shape
    L = len(ir.layers)
    gates = [torch.from_numpy(_gate(l, T)) for l in ir.layers]
    counts = np.zeros((N, ir.layers[-1].n_out), dtype=np.int64)
    rasters = [np.zeros((T, N, l.n_out), dtype=np.uint8) for l in ir.layers] if record else None
    carry = carries(ir)
    batch_size = 1 if carry else batch_size
    rings = _torch_rings(params, ir, 1) if carry else None
    if carry:  # the prologue: layer i runs from step L - i - 1, no input, gates open; its state is dropped
        state = _TorchState(ir, 1, None)
        start = _prologue_start(L)
        for t in range(L):
            s = torch.zeros(1, ir.layers[0].n_in, dtype=torch.float64)
            for i, p in enumerate(params):
                s = (_torch_layer(p, state, i, s, rings[i], t, None).to(torch.float64) if t >= start[i]
                     else torch.zeros(1, p["n_out"], dtype=torch.float64))
    for b0 in range(0, N, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(spikes[:, b0:b0 + batch_size])).to(torch.float64)
        B = x.shape[1]
        rings = rings if carry else _torch_rings(params, ir, B)
        state = _TorchState(ir, B, None if bias is None else torch.from_numpy(np.ascontiguousarray(bias[b0:b0 + B])))
        rec = [torch.zeros(T, B, l.n_out, dtype=torch.bool) for l in ir.layers] if record else None
        total = torch.zeros(B, ir.layers[-1].n_out, dtype=torch.float64)
        for t in range(T):
            s = x[t]
            for i, p in enumerate(params):
                fired = _torch_layer(p, state, i, s, rings[i], L + b0 * T + t if carry else t, gates[i][:, t])
                s = fired.to(torch.float64)
                if record:
                    rec[i][t] = fired
            total += s
        counts[b0:b0 + B] = total.numpy().astype(np.int64)
        if record:
            for i in range(len(params)):
                rasters[i][:, b0:b0 + B] = rec[i].numpy()
    return counts, rasters


class _TorchState:
    """Per-sample state of the torch engine: every layer's ``u``, ``v`` ``(B, n_l)`` (zero: the reset),
    whether it holds (:func:`~dpap_deploy.export.holds`), layer 0's per-sample input bias ``b_in``
    ``(B, n_0)`` with current encoding (else None), each layer's spikes of the previous step ``prev``
    ``(B, n_l)``, its integer recurrent weights transposed ``recs`` ``(n_l, n_l)`` (None: not recurrent)
    and what its bias axon adds to ``u`` every step ``biases`` ``(n_l,)`` (:func:`bias_input` << 6; None)."""

    def __init__(self, ir: NetworkIR, B: int, b_in: Optional[torch.Tensor]):
        from dpap_deploy.export import holds

        self.u = [torch.zeros(B, l.n_out, dtype=torch.float64) for l in ir.layers]
        self.v = [torch.zeros(B, l.n_out, dtype=torch.float64) for l in ir.layers]
        self.held = [holds(l) for l in ir.layers]
        self.b_in, self.B = b_in, B
        self.prev = [torch.zeros(B, l.n_out, dtype=torch.float64) for l in ir.layers]  # own spikes of step t - 1
        self.recs = [None if _fixed_recurrent(l) is None else torch.from_numpy(_fixed_recurrent(l).T.astype(np.float64))
                     for l in ir.layers]
        self.biases = [None if bias_input(l) is None else torch.from_numpy(bias_input(l) * 64.0) for l in ir.layers]


def _torch_rings(params: List[dict], ir: NetworkIR, B: int) -> list:
    """Per layer its delay ring ``(max delay + 1, B, n_out)`` of pending synaptic input, or None."""
    return [None if p["delays"] is None else torch.zeros(max(k for k, _ in p["delays"]) + 1, B, l.n_out,
                                                         dtype=torch.float64) for p, l in zip(params, ir.layers)]


def _torch_layer(p: dict, st: _TorchState, i: int, s: torch.Tensor, ring, t_ring: int,
                 gate_t: Optional[torch.Tensor]) -> torch.Tensor:
    """Layer ``i``'s step (module docstring): input spikes ``s`` ``(B, n_in)`` -> spikes ``(B, n_out)`` bool,
    ``st.u[i]``/``st.v[i]`` updated; ``ring``/``t_ring``: its delay ring and the run's step for it;
    ``gate_t``: its timestep mask at this step (None: open)."""
    lim, B = float(U_LIM), st.B
    u, v = st.u[i], st.v[i]
    if i == 0 and st.b_in is not None:  # current encoding: no synapses, u stays 0
        uu = _decay(u, p["du"] + 1)
    elif p["conv"]:  # Lava's Conv: 24-bit integer sum, no weight exponent
        a64 = torch.nn.functional.conv2d(s.reshape(B, *p["in_shape"]), p["w64"], stride=p["stride"],
                                         padding=p["padding"], dilation=p["dilation"], groups=p["groups"]).reshape(B, -1)
        a64 = torch.clamp(a64, -64.0 * lim, 64.0 * (lim - 1))  # lava conv utils.signed_clamp(24 bits)
        uu = _decay(u, p["du"] + 1) + a64
    elif p["delays"] is not None:  # DelaySparse: arrivals from earlier steps' spikes
        uu = _decay(u, p["du"] + 1) + _delayed_input(p, ring, s, t_ring)
    elif p["exp"] >= 0:  # (a << exp) << 6 folded into the weights: one addmm
        uu = torch.addmm(_decay(u, p["du"] + 1), s, p["w64"])
    else:  # a >> -exp rounds down before the << 6
        a = torch.floor((s @ p["w"]) * (1.0 / (1 << -p["exp"])))
        uu = _decay(u, p["du"] + 1) + a * 64.0
    if st.recs[i] is not None:  # a second Sparse, shifted by the same weight_exp on its own
        uu = uu + torch.floor((st.prev[i] @ st.recs[i]) * 2.0 ** p["exp"]) * 64.0
    if st.biases[i] is not None:  # the bias axon's Sparse, every step, shifted on its own
        uu = uu + st.biases[i]
    st.u[i] = _wrap(uu)  # into (-2^23, 2^23]
    vv = _decay(v, p["dv"]) + st.u[i] + p["bias64"]  # Lava: v = decay(v) + u + (bias_mant << bias_exp)
    if i == 0 and st.b_in is not None:
        vv = vv + st.b_in  # current encoding: the sample's bias
    vv = torch.clamp(vv, -(lim - 1), lim - 1)
    fired = vv > p["vth64"]
    gate_t = torch.ones(fired.shape[1], dtype=torch.bool) if gate_t is None else gate_t
    if st.held[i]:  # "hold": no threshold test at a masked step, so no spike and no reset
        fired = fired & gate_t
        st.v[i] = vv.masked_fill(fired, 0.0)
    else:  # "drop": the neuron resets even where the gate drops its spike
        st.v[i] = vv.masked_fill(fired, 0.0)
        fired = fired & gate_t
    st.prev[i] = fired.to(torch.float64)
    return fired
