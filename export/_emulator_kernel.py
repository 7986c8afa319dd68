"""The fused, event-driven CPU kernel behind ``emulate(..., engine="numba")``.

One numba function runs whole samples: per sample (in parallel over samples), per time step,
per layer it adds the weight row of every presynaptic neuron that spiked (dense rows for
fully connected layers, an unrolled CSR matrix for convolutions), then updates the layer's
neurons with Lava's fixed-point LIF equations. Only the weights and one sample's state are
touched, so it stays in cache and does no work for silent neurons. The arithmetic is the same
as ``export/emulator.py``'s torch engine; see that module for the equations and their sources.

Timestep masks: ``gate`` ``(total neurons, T)`` uint8, 0 silences a neuron at that step, as
``hold[l]`` (``(L,)`` uint8) says for layer ``l``: 1 ("hold") disables its threshold test there
(no spike, no reset: ``v`` keeps its charge), 0 ("drop") drops its spike after the LIF update
(the neuron resets either way).

Recurrent weights: ``rw_off[l] >= 0`` marks a layer with recurrent integer weights, the row of
presynaptic neuron ``q`` at ``rw[rw_off[l] + q*n_out[l] : ... + n_out[l]]`` (int32); the layer's
own spikes of step ``t - 1`` add ``floor(sum * scale[l])`` to ``a`` at step ``t`` (a second Lava
``Sparse`` with the layer's ``weight_exp``, shifted on its own; none at ``t = 0``).

Input biases: ``ib`` ``(total neurons,)`` float64, what each neuron's bias axon adds to ``a`` at
every step (already shifted by the layer's ``weight_exp``: ``emulator.bias_input``; 0 without).

Synaptic delays (mode 2 only): ``dly`` (aligned with ``ix``) holds each synapse's delay in time
steps; a layer with ``ring_len[l] > 1`` adds a spike's weight at step ``t`` into ring slot
``(t0 + t + delay) % ring_len[l]`` of ``ring[b]`` (``ring`` ``(N, ring size)`` int64, kept by the
caller; ``ring_off[l]``: the layer's offset in it) and takes slot ``(t0 + t) % ring_len[l]`` as its
input at step ``t`` (Lava's ``DelaySparse``; delay 0 is the plain path). A caller that runs one
sample per call with the same ``ring`` and ``t0 = k*T`` carries the delayed spikes of sample ``k``
into sample ``k + 1``, as Lava's long run does.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

U_LIM = 2 ** 23


@njit(cache=True, nogil=True, inline="always")
def _dense16_input(acc, acc16, wd16, base, idx, ns, m):  # pragma: no cover (numba)
    """``acc[:m]`` = the sum of the int16 dense rows of the ``ns`` presynaptic neurons in ``idx`` (mode 0: a
    layer whose partial sums of any spike subset fit in int16, so the sum runs in 16 bits)."""
    acc16[:m] = 0
    for k in range(ns):
        r = base + idx[k] * m
        row16 = wd16[r:r + m]  # a slice: unit stride without wrap checks, so LLVM vectorises
        for j in range(m):
            acc16[j] += row16[j]
    for j in range(m):
        acc[j] = acc16[j]


@njit(cache=True, nogil=True, inline="always")
def _dense32_input(acc, wd32, base, idx, ns, m):  # pragma: no cover (numba)
    """``acc[:m]`` = the sum of the int32 dense rows of the presynaptic neurons in ``idx[:ns]`` (mode 1)."""
    acc[:m] = 0
    for k in range(ns):
        r = base + idx[k] * m
        row = wd32[r:r + m]
        for j in range(m):
            acc[j] += row[j]


@njit(cache=True, nogil=True, inline="always")
def _sparse_input(acc, ip, ix, wx, p0, d0, idx, ns, m):  # pragma: no cover (numba)
    """``acc[:m]`` = the CSR rows (by presynaptic neuron) of the neurons in ``idx[:ns]`` (mode 2)."""
    acc[:m] = 0
    for k in range(ns):
        i = idx[k]
        for q in range(ip[p0 + i], ip[p0 + i + 1]):
            acc[ix[d0 + q]] += wx[d0 + q]


@njit(cache=True, nogil=True, inline="always")
def _ring_input(acc, rb, ip, ix, wx, dly, p0, d0, nr, r0, t_abs, idx, ns, m):  # pragma: no cover (numba)
    """Delayed synapses (mode 2, ``nr = ring_len > 1``): each spike's weight goes into the ring slot of
    its arrival step ``(t_abs + delay) % nr``; ``acc[:m]`` takes (and clears) the slot of step ``t_abs``."""
    for k in range(ns):
        i = idx[k]
        for q in range(ip[p0 + i], ip[p0 + i + 1]):
            rb[r0 + ((t_abs + dly[d0 + q]) % nr) * m + ix[d0 + q]] += wx[d0 + q]
    slot = r0 + (t_abs % nr) * m
    for j in range(m):
        acc[j] = rb[slot + j]
        rb[slot + j] = 0


@njit(cache=True, nogil=True, inline="always")
def _recurrent_input(racc, rw, base, prev, o, m):  # pragma: no cover (numba)
    """``racc[:m]`` = the recurrent rows of the layer's neurons that spiked at the previous step (``prev``)."""
    racc[:m] = 0
    for q in range(m):
        if prev[o + q]:
            rrow = rw[base + q * m:base + q * m + m]
            for j in range(m):
                racc[j] += rrow[j]


@njit(cache=True, nogil=True, inline="always")
def _emit(fired, prev, idx, o, m, rec, record, t, b):  # pragma: no cover (numba)
    """The layer's spikes of this step: kept in ``prev``, listed in ``idx`` for the next layer (returns
    their number) and, with ``record``, written to ``rec[t, b]``."""
    ns = 0
    for j in range(m):
        prev[o + j] = fired[j]
        if fired[j]:
            idx[ns] = j
            ns += 1
            if record:
                rec[t, b, o + j] = 1
    return ns


@njit(parallel=True, cache=True, nogil=True)
def run_kernel(spikes, bias, n_out, mode, scale, fu, fv, vth64, clamp, wd16, wd32, wd_off, ip, ip_off, ix, wx,
               ix_off, neuron_off, gate, hold, rw, rw_off, ib, nbias, dly, ring_len, ring_off, start, ring, t0, rec,
               counts):  # pragma: no cover (numba)
    """Run ``spikes`` ``(T, N, F)`` uint8 through ``L`` layers; fill ``counts`` ``(N, n_last)`` int64
    and, when ``rec.shape[0] == T``, the spike raster ``rec`` ``(T, N, total neurons)`` uint8.

    ``bias`` ``(N, n_out[0])`` float64 (current encoding: ``bias_mant << bias_exp`` per sample, added
    to layer 0's ``v`` every step; pass ``spikes`` with ``F = 0``, so layer 0 gets no synaptic
    input and its ``u`` stays 0), or ``(N, 0)`` for spike input.

    Per layer ``l``: ``n_out[l]`` neurons; ``mode[l]`` 0 or 1 selects the dense weight rows
    ``wd16``/``wd32[wd_off[l] + i*n_out[l] : ... + n_out[l]]`` of presynaptic neuron ``i`` (int16 when
    no partial sum can leave int16's range, which doubles the adds per vector instruction;
    else int32); mode 2 the CSR row ``ip[ip_off[l] + i] .. ip[ip_off[l] + i + 1]`` into
    ``ix``/``wx`` (offset ``ix_off[l]``);
    ``scale[l]`` = 2^weight_exp (the product rounded down: Lava's right shift for negative exponents);
    ``fu``/``fv`` = (4096 - du - 1)/4096 and (4096 - dv)/4096; ``vth64`` = vth << 6;
    ``clamp[l]``: clamp the synaptic sum to 24 bits (Lava's ``Conv``); ``gate``, ``hold``: the
    timestep masks (module docstring); ``nbias`` ``(total neurons,)``: each neuron's static
    ``bias_mant << bias_exp``, added to ``v`` every step.

    Recurrent weights, input biases and synaptic delays: module docstring.
    """
    T, N, F = spikes.shape
    L = n_out.shape[0]
    total = neuron_off[L]
    maxn = F
    for l in range(L):
        maxn = max(maxn, n_out[l])
    lim = float(U_LIM)
    record = rec.shape[0] == T
    biased = bias.shape[1] > 0
    for b in prange(N):
        rb = ring[b]
        u = np.zeros(total, np.float64)
        v = np.zeros(total, np.float64)
        acc = np.zeros(maxn, np.int32)
        acc16 = np.zeros(maxn, np.int16)
        fired = np.zeros(maxn, np.bool_)
        idx = np.zeros(maxn, np.int64)
        racc = np.zeros(maxn, np.int64)
        prev = np.zeros(total, np.bool_)
        for t in range(T):
            ns = 0
            for f in range(F):
                if spikes[t, b, f]:
                    idx[ns] = f
                    ns += 1
            for l in range(L):
                m = n_out[l]
                if t < start[l]:  # not started yet (the prologue): no update, no spikes for the next layer
                    ns = 0
                    continue
                if mode[l] == 0:
                    _dense16_input(acc, acc16, wd16, wd_off[l], idx, ns, m)
                elif mode[l] == 1:
                    _dense32_input(acc, wd32, wd_off[l], idx, ns, m)
                elif ring_len[l] > 1:  # delayed synapses: into the ring slot of their arrival step
                    _ring_input(acc, rb, ip, ix, wx, dly, ip_off[l], ix_off[l], ring_len[l], ring_off[l], t0 + t,
                                idx, ns, m)
                else:
                    _sparse_input(acc, ip, ix, wx, ip_off[l], ix_off[l], idx, ns, m)
                o = neuron_off[l]
                has_rec = rw_off[l] >= 0
                if has_rec:
                    _recurrent_input(racc, rw, rw_off[l], prev, o, m)
                ul, vl = u[o:o + m], v[o:o + m]
                lo, hi = (-lim, lim - 1.0) if clamp[l] else (-np.inf, np.inf)
                sc, du_f, dv_f, th = scale[l], fu[l], fv[l], vth64[l]
                with_bias = biased and l == 0
                held = hold[l] != 0
                for j in range(m):  # Lava's AbstractPyLifModelFixed.subthr_dynamics, then spiking
                    # floor: a right shift for negative weight exponents, exact (no-op) otherwise
                    a = np.floor(min(max(float(acc[j]), lo), hi) * sc)
                    if has_rec:
                        a += np.floor(float(racc[j]) * sc)
                    a += ib[o + j]
                    uu = np.trunc(ul[j] * du_f) + a * 64.0
                    uu = uu - 2.0 * lim if uu > lim else (uu + 2.0 * lim if uu <= -lim else uu)
                    ul[j] = uu
                    vv = np.trunc(vl[j] * dv_f) + uu + nbias[o + j]
                    if with_bias:
                        vv += bias[b, j]
                    vv = min(max(vv, -(lim - 1.0)), lim - 1.0)
                    s = vv > th
                    if held:  # "hold": threshold test off at a masked step: no spike, no reset
                        s = s and gate[o + j, t] != 0
                        fired[j] = s
                    else:  # "drop": the neuron resets either way
                        fired[j] = s and gate[o + j, t] != 0
                    vl[j] = 0.0 if s else vv
                ns = _emit(fired, prev, idx, o, m, rec, record, t, b)
            for k in range(ns):
                counts[b, idx[k]] += 1
