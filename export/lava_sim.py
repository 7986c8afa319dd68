"""Target ``loihi-sim``: Lava processes run in Lava's fixed-point CPU simulator.

Each IR layer becomes ``lava.proc.sparse.process.Sparse`` (pruned synapses are absent
entries of a CSR matrix) followed by ``lava.proc.lif.process.LIFReset``; spikes come
from ``lava.proc.io.source.RingBuffer`` and the output population's spikes go into
``lava.proc.io.sink.RingBuffer``. The run uses ``Loihi2SimCfg(select_tag="fixed_pt")``:
Loihi's integer arithmetic (``PyLifResetModelBitAcc``, ``PySparseModelBitAcc``).

The whole test split runs as **one** long simulation (Lava costs about 1 ms per time
step whatever the network, docs/deployment.md sec. 4.4). Lava counts steps from 1
(docs/deployment.md sec. 2.3). Sample ``k``'s input occupies source columns
``k*T .. k*T+T-1``, i.e. Lava steps ``k*T + 1 ..``. Every ``Sparse`` delivers its input one
time step late, so population ``i`` (0-based) sees sample ``k`` from step ``k*T + i + 2``;
its ``LIFReset`` therefore resets ``u`` and ``v`` every ``T`` steps at offset ``(i + 2) % T``,
exactly when the sample's first input arrives. Norse adds a step's input in the same
step, so the output population's step ``j`` of sample ``k`` (Lava step ``k*T + L + 1 + j``; a
sink records step ``t`` in column ``t - 1``: column ``k*T + L + j``) equals Norse's step ``j``
up to quantisation; ``L`` extra steps at the end flush the last sample.

**Timestep masks** (spatio-temporal DPAP, docs/dpap.md sec. 7.4) that silence a neuron inside the
window: a ``"hold"`` layer's neurons are a :class:`~dpap_deploy.export.gate.GatedLIFReset`
(``export/gate/gated_lif.py``: the mask disables the threshold test, so no spike and no reset); a
``"drop"`` layer keeps ``LIFReset`` followed by a :class:`~dpap_deploy.export.gate.SpikeGate`
(``export/gate/spike_gate.py``: the spike is dropped after the reset). Both read the within-sample
step with the phase of the population's reset offset.

**Input biases** (``input_bias``): one ``RingBuffer`` that spikes at every step feeds, per biased
layer, a one-column ``Sparse`` of the integer biases into the population's ``a_in`` (a bias axon,
:func:`_bias_axon`; docs/deployment.md sec. 8.5).

**Current encoding** (``NetworkIR.input_encoding == "current"``): there is no source and no
``Sparse`` for layer 0. Its population is a :class:`~dpap_deploy.export.gate.BiasScheduleLIF`
(``export/gate/bias_lif.py``) whose bias is the host's ``W x`` of sample ``k``
(``export/quantize.py``, ``current_bias()``), switched in at the sample's first step. Without
the first synaptic delay, population ``i`` sees sample ``k`` from step ``k*T + i + 1`` (layer 0
from ``k*T + 1``): every reset offset, timestep-gate phase and read-out is one step earlier
than with spike input. In general population ``i`` starts sample ``k`` at step
``k*T + i + first_step(ir)`` with :func:`first_step` 2 (spikes) or 1 (current), the output's step
``j`` of sample ``k`` is sink column ``k*T + delays(ir) + j`` with :func:`delays` = the number of
``Sparse``/``Conv`` layers (``L``, or ``L - 1``), and the run has ``N*T + delays(ir)`` steps.

**Sigma-delta networks** (every layer ``activation == "sdnn"``, read from lava-dl netx files): each layer is
a ``Sparse`` with ``num_message_bits`` (graded input: ``weights.dot(s_in)``, ``lava/proc/sparse/models.py``)
followed by ``lava.proc.sdn.process.SigmaDelta`` (ReLU, ``spike_exp``/``state_exp`` 6, no reset), built as
lava-dl's netx builds them (``lava/lib/dl/netx/hdf5.py``: ``get_neuron_params``, ``create_dense``); see
:func:`_sigma_delta_population`. Input and output are graded integers, not 0/1 spikes.
"""
from __future__ import annotations

import functools
import os
import time
from typing import List, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from dpap_deploy.errors import ExportValidationError
from dpap_deploy.export import ExportResult, check_layers, holds, register_target
from dpap_deploy.export.quantize import analog_input, current_bias, quantize
from dpap_deploy.ir import NetworkIR

SUPPORTED_KINDS = ("fc", "conv", "flatten")


#: optional layer features Lava's processes realise: a bias (``LIFReset``'s ``bias_mant``/``bias_exp``),
#: fully connected delays (``DelaySparse``), conv ``groups``/``dilation`` (Lava's ``Conv``)
FEATURES = ("bias", "delay", "groups", "dilation")


def check_supported(ir: NetworkIR, target: str = "loihi-sim") -> None:
    """Raise :class:`UnsupportedLayerError` listing every layer this target cannot export
    (``loihi-sim`` realises timestep masks with :class:`~dpap_deploy.export.gate.GatedLIFReset`,
    ``"hold"``, or :class:`~dpap_deploy.export.gate.SpikeGate`, ``"drop"``; conv delays and a bias on a
    current-encoded first layer it refuses by name). A network whose layers are all sigma-delta
    (:func:`is_sigma_delta`) is checked by :func:`check_sigma_delta` instead (``loihi-sim`` only)."""
    if target == "loihi-sim" and is_sigma_delta(ir):
        check_sigma_delta(ir, target)
        return
    # recurrent loops pass a SpikeGate (a CPU process model, _recurrent_loop): the simulator only
    # input biases: an always-on RingBuffer source (a host process) and timing checked in the simulator only
    extra = ("input_bias", "recurrent", "if") if target == "loihi-sim" else ("if",)
    check_layers(ir, target, SUPPORTED_KINDS, ("lif",), features=FEATURES + extra)
    check_delays_and_bias(ir, target)


def is_sigma_delta(ir: NetworkIR) -> bool:
    """True when every weight layer of ``ir`` is a sigma-delta layer (``activation == "sdnn"``)."""
    return bool(ir.layers) and all(l.activation == "sdnn" for l in ir.layers)


def check_sigma_delta(ir: NetworkIR, target: str) -> None:
    """Refuse, naming the layer, what the sigma-delta build (:func:`_sigma_delta_population`) was not
    verified against lava-dl netx for: anything but fully connected layers (conv, flatten), a bias, delays,
    timestep masks, recurrence, an input bias, current encoding, and an activation other than ``"relu"``
    (netx always builds ``SigmaDelta`` with its default ``ActivationMode.RELU``, whatever the file says)."""
    from dpap_deploy.errors import UnsupportedLayerError

    check_layers(ir, target, ("fc",), ("sdnn",), what="runs sigma-delta networks of fully connected layers only")
    for l in ir.layers:
        if l.sigma_delta.activation != "relu":
            raise UnsupportedLayerError(f'target {target}: sigma-delta layer "{l.name}" has activation '
                                        f"{l.sigma_delta.activation!r}; lava-dl netx runs ReLU only")
        if l.bias is not None or l.delay is not None or l.time_mask is not None:
            raise UnsupportedLayerError(f'target {target}: sigma-delta layer "{l.name}" has a bias, delays or a '
                                        "timestep mask; this target runs plain sigma-delta layers only")
    if ir.input_encoding == "current":
        raise UnsupportedLayerError(f'target {target}: sigma-delta layer "{ir.layers[0].name}" with current '
                                    "encoding; sigma-delta networks take graded input through their first Sparse")


def check_delays_and_bias(ir: NetworkIR, target: str) -> None:
    """Refuse, naming the layer, what the Lava processes cannot run: a conv layer's delay (Lava 0.10 has
    no delayed ``Conv``; lava-dl netx ignores it), delays with a negative weight exponent (``DelaySparse``
    rounds each step's partial sum, which the emulator does not reproduce), delays with current encoding
    (whose populations start one step earlier: the emulator's prologue assumes spike input) and a static
    bias on a current-encoded first layer (whose bias is the per-sample input)."""
    from dpap_deploy.errors import UnsupportedLayerError

    for i, l in enumerate(ir.layers):
        if l.delay is not None and l.kind == "conv":
            raise UnsupportedLayerError(f'target {target}: layer "{l.name}" has synaptic delays on a convolution; '
                                        "Lava 0.10 has no delayed Conv process (lava-dl netx ignores them)")
        if l.delay is not None and l.fixed is not None and l.fixed.weight_exp < 0:
            raise UnsupportedLayerError(f'target {target}: layer "{l.name}" has delays and weight_exp '
                                        f"{l.fixed.weight_exp}; delayed layers take weight_exp >= 0")
        if l.delay is not None and ir.input_encoding == "current":
            raise UnsupportedLayerError(f'target {target}: layer "{l.name}" has synaptic delays and the network '
                                        "current encoding; delays take spike input only")
        if l.bias is not None and i == 0 and ir.input_encoding == "current":
            raise UnsupportedLayerError(f'target {target}: layer "{l.name}" has a bias and current encoding, '
                                        "which sets the same bias per sample")


def lava_bias(layer, shape: tuple, precision: str) -> dict:
    """``LIFReset``'s ``bias_mant`` (and ``bias_exp``) for ``layer`` in Lava's population ``shape``
    (``(n,)`` or conv ``(W, H, C)``: one value per channel along the last axis): the integers
    ``fixed.bias_mant`` with ``fixed.bias_exp`` (fixed point; Lava adds ``bias_mant << bias_exp`` to ``v``
    each step, ``lava/proc/lif/models.py``), or the float ``bias`` (Lava's float LIF adds ``bias_mant``
    as it is); ``{"bias_mant": 0}`` without a bias."""
    if layer.bias is None:
        return {"bias_mant": 0}
    if precision == "fixed":
        mant = np.broadcast_to(np.asarray(layer.fixed.bias_mant, np.int32), shape)
        return {"bias_mant": np.ascontiguousarray(mant), "bias_exp": int(layer.fixed.bias_exp)}
    return {"bias_mant": np.ascontiguousarray(np.broadcast_to(layer.bias.astype(np.float64), shape))}


def delayed_synapses(layer, weights: sp.csr_matrix, **kw):
    """A ``DelaySparse`` for fully connected ``layer`` with ``delay`` ``(n_out, n_in)``: ``weights`` (CSR,
    integers or floats) and the delays of the same entries (lava-dl netx does the same,
    ``netx/blocks/process.py``); delay ``d`` arrives ``d`` steps after a plain ``Sparse`` would deliver it
    (``lava/proc/sparse/models.py``: delay 0 is the next step)."""
    from lava.proc.sparse.process import DelaySparse

    w = weights.tocoo()
    d = sp.csr_matrix((layer.delay[w.row, w.col].astype(int), (w.row, w.col)), shape=weights.shape)  # Lava: dtype int
    d.eliminate_zeros()
    return DelaySparse(weights=weights.tocsr(), delays=d, max_delay=int(layer.delay.max()), **kw)


def first_step(ir: NetworkIR) -> int:
    """The Lava time step at which population 0 receives sample 0's first input: 2 behind a
    ``Sparse``/``Conv`` fed by the source (one step of delay), 1 with current encoding (the bias
    acts at once). Population ``i`` starts sample ``k`` at step ``k*T + i + first_step(ir)``; its
    ``LIFReset`` offset, ``SpikeGate`` phase and ``GatedLIFReset`` step offset are that modulo ``T``."""
    return 1 if ir.input_encoding == "current" else 2


def delays(ir: NetworkIR) -> int:
    """Synaptic delays before the output population: ``L`` (``L - 1`` with current encoding, whose
    first layer has no ``Sparse``). The output's step ``j`` of sample ``k`` is sink column
    ``k*T + delays(ir) + j``; the run has ``N*T + delays(ir)`` steps."""
    return len(ir.layers) - (1 if ir.input_encoding == "current" else 0)


def sparse_weights(ir: NetworkIR) -> List[Optional[sp.csr_matrix]]:
    """Per fully connected layer the CSR weight matrix ``(n_out, n_in)`` handed to Lava:
    surviving, non-zero integers only (None for conv layers)."""
    mats = []
    for l in ir.layers:
        if l.kind == "conv":
            mats.append(None)
            continue
        w = sp.csr_matrix(l.masked_weight(fixed=True).astype(np.int32))
        w.eliminate_zeros()
        mats.append(w)
    return mats


def lava_time_mask(layer, T: int) -> Optional[np.ndarray]:
    """A layer's timestep mask in Lava's population shape plus ``T`` (``(n, T)``, conv ``(W, H, C, T)``),
    0/1 int32, or None when it silences nothing in the first ``T`` steps (no gate needed)."""
    if layer.time_mask is None:
        return None
    m = np.asarray(layer.time_mask, dtype=bool)[:, :T]
    if m.all():
        return None
    if layer.kind == "conv":
        _, h, w = layer.out_shape
        m = np.broadcast_to(m[None, None, :, :], (w, h, m.shape[0], T))
    return np.ascontiguousarray(m, dtype=np.int32)


def lava_conv_weight(kernel: np.ndarray) -> np.ndarray:
    """A torch-layout correlation kernel ``(C_out, C_in, kH, kW)`` as Lava's ``Conv`` weight
    ``(C_out, kW, kH, C_in)``: Lava flips the kernel (it convolves; ``lava/proc/conv/utils.py: conv``)."""
    return np.ascontiguousarray(np.transpose(kernel, (0, 3, 2, 1))[:, ::-1, ::-1])


def layer_synapses(l) -> int:
    """Surviving synapses of a layer as handed to Lava (CSR entries, or a conv kernel's non-zero
    weights), counted once each: a layer with a folded pooling holds every synapse ``pool_fold**2`` times."""
    return int(np.count_nonzero(l.masked_weight(fixed=True))) // (l.pool_fold ** 2)


def input_schedule(spikes: np.ndarray, n_layers: int) -> np.ndarray:
    """Lay a batch of spike trains end to end for one long run.

    Args:
        spikes: ``(T, N, F)`` 0/1, or ``(T, N, C, H, W)`` for a network starting with a convolution.
        n_layers: ``L``, the synaptic delays to flush at the end.

    Returns:
        ``(F, N*T + L)`` int32 (``(W, H, C, N*T + L)``: Lava's conv layout), column ``k*T + j`` =
        sample ``k`` at step ``j``.
    """
    if spikes.ndim == 5:  # (T, N, C, H, W) -> Lava's (W, H, C, steps)
        T, N, C, H, W = spikes.shape
        data = np.zeros((W, H, C, N * T + n_layers), dtype=np.int32)
        data[..., : N * T] = spikes.transpose(4, 3, 2, 1, 0).reshape(W, H, C, N * T)
        return data
    T, N, F = spikes.shape
    data = np.zeros((F, N * T + n_layers), dtype=np.int32)
    data[:, : N * T] = spikes.transpose(2, 1, 0).reshape(F, N * T)
    return data


def output_spikes(raster: np.ndarray, T: int, N: int, n_layers: int, dtype=np.uint8) -> np.ndarray:
    """Per-sample output spikes ``(T, N, C)`` (``dtype``: uint8 for 0/1 spikes, int32 for the graded
    spikes of a sigma-delta network) from the sink's raster ``(C, N*T + L)``: step ``j`` of sample
    ``k`` is raster column ``k*T + L + j``."""
    window = raster[:, n_layers : n_layers + N * T]
    return np.ascontiguousarray(window.reshape(raster.shape[0], N, T).transpose(2, 1, 0)).astype(dtype)


def output_counts(raster: np.ndarray, T: int, N: int, n_layers: int) -> np.ndarray:
    """Per-sample spike counts ``(N, C)`` from the output raster ``(C, N*T + L)``."""
    return output_spikes(raster, T, N, n_layers).sum(axis=0).astype(np.int64)


def build(ir: NetworkIR, data: np.ndarray, precision: str = "fixed", record_hidden: bool = False,
          record_dir: Optional[str] = None, hidden_steps: Optional[int] = None):
    """Lava processes for an IR fed by ``data``.

    Args:
        ir: the network; quantised for ``precision="fixed"``.
        data: input spikes ``(F, steps)`` laid out by :func:`input_schedule`; with current encoding
            the analog samples ``(N, F)`` instead (:func:`~dpap_deploy.export.quantize.analog_input`),
            which become layer 0's per-sample bias (no source, ``N*T + delays(ir)`` steps).
        precision: ``"fixed"`` (integers for ``select_tag="fixed_pt"``, the deployed network)
            or ``"float"`` (Norse's float parameters for ``select_tag="floating_pt"``: weights
            ``dt/tau_mem * w``, ``du = dt/tau_syn``, ``dv = dt/tau_mem``, ``vth = v_th``; a current-encoded
            layer 0's bias ``dt/tau_mem * W x``), which reproduces Norse's spikes and so checks the
            wiring, delays and resets apart from quantisation.
        record_hidden: also connect a sink to every hidden population.
        record_dir: folder for the sinks' ``.npy`` files (:func:`sinks`; None: a new temporary
            folder, which the caller removes).
        hidden_steps: steps the hidden sinks keep (the first ones; None: every step), e.g.
            ``n*T + delays(ir)`` for the first ``n`` samples.

    Returns:
        ``(source, [(synapses, neurons), ...], sink, hidden_sinks)``; ``source`` and layer 0's
        ``synapses`` are None with current encoding; the sink (a ``FileSinks``/``FileSink`` process:
        ``sink.read()`` gives ``(C, steps)``) records the output population for every step,
        ``hidden_sinks`` (each with ``read()``; empty unless
        ``record_hidden``) the hidden populations, in Lava's shapes (``(n,)``, or ``(W, H, C)`` for
        conv layers) plus steps.
    """
    import tempfile

    from lava.proc.io.source import RingBuffer as SpikeIn

    if precision not in ("fixed", "float"):
        raise ValueError(f"precision must be 'fixed' or 'float', got {precision!r}")
    T = ir.time_steps
    current = ir.input_encoding == "current"
    if current:
        source, port, steps = None, None, data.shape[0] * T + delays(ir)
    else:
        source = SpikeIn(data=data)
        port, steps = source.s_out, data.shape[-1]
    chain, hidden_sinks = [], []
    record_dir = record_dir or tempfile.mkdtemp(prefix="dpap-lava-")
    hidden_steps = min(hidden_steps or steps, steps)
    weights = iter(sparse_weights(ir) if precision == "fixed" else [None] * len(ir.layers))
    i, bias_port = -1, None
    for node in ir.nodes:
        if node.kind == "flatten":  # torch's (C, H, W) order from Lava's (W, H, C)
            port = port.transpose([2, 1, 0]).flatten()
            continue
        i += 1
        layer, w = node, next(weights)
        gate_mask = lava_time_mask(layer, T)
        hold = gate_mask if holds(layer) and gate_mask is not None else None  # holds() checks every layer
        if layer.activation == "sdnn":
            syn, lif, shape = _sigma_delta_population(ir, i, layer, w, precision)
            port.connect(syn.s_in)
            syn.a_out.connect(lif.a_in)
        elif current and i == 0:
            syn, lif, shape = None, _bias_population(ir, layer, data, precision, hold), (layer.n_out,)
        else:
            syn, lif, shape = _population(ir, i, layer, w, precision, hold)
            port.connect(syn.s_in)
            syn.a_out.connect(lif.a_in)
        if getattr(layer, "recurrent", None) is not None:
            _recurrent_loop(ir, i, layer, lif, precision)
        if getattr(layer, "input_bias", None) is not None:
            bias_port = _always_on() if bias_port is None else bias_port
            _bias_axon(ir, layer, lif, shape, precision, bias_port)
        port = lif.s_out
        if gate_mask is not None and hold is None:  # "drop": drop the spikes of silenced (neuron, step) pairs
            from dpap_deploy.export.gate import SpikeGate

            gate = SpikeGate(shape, gate_mask, phase=i + first_step(ir), name=f"{layer.name}_time_gate")
            port.connect(gate.s_in)
            port = gate.s_out
        chain.append((syn, lif))
        if record_hidden and i < len(ir.layers) - 1:
            hidden_sinks.append((port, shape))
    if ir.layers[-1].kind == "conv":  # a conv output layer: its neurons in torch's (C, H, W) order, as the emulator
        port = port.transpose([2, 1, 0]).flatten()
    dtype = np.int32 if is_sigma_delta(ir) else np.int8  # graded spikes: up to message_bits bits
    sink, hidden_sinks = sinks(port, (ir.layers[-1].n_out,), steps, hidden_sinks, hidden_steps, record_dir, dtype)
    return source, chain, sink, hidden_sinks


#: bits of a graded input value into a sigma-delta network's first ``Sparse`` (``num_message_bits``; lava-dl
#: netx takes it as ``hdf5.Network(input_message_bits=...)``, default 0: 0/1 spikes)
SDNN_INPUT_MESSAGE_BITS = 16


def _sigma_delta_population(ir: NetworkIR, i: int, layer, w: sp.csr_matrix, precision: str):
    """``Sparse`` + ``SigmaDelta`` of sigma-delta layer ``i`` as lava-dl netx builds them
    (``lava/lib/dl/netx/hdf5.py``: ``get_neuron_params``, ``create_dense``; ``netx/blocks/process.py``: ``Dense``).

    The ``Sparse`` has the layer's integer weights ``w`` ``(n_out, n_in)`` (weight_exp 0, 8 bits: netx's
    ``optimize_weight_bits`` gives the same products for lava-dl's 8-bit weights) and ``num_message_bits`` =
    the previous layer's ``message_bits`` (layer 0: :data:`SDNN_INPUT_MESSAGE_BITS`), so it sends
    ``weights.dot(s_in)`` of graded input (``lava/proc/sparse/models.py``). ``SigmaDelta``
    (``lava/proc/sdn/process.py``, ``models.py: PySigmaDeltaModelFixed``) gets ``vth = vThMant`` (the process
    scales it by ``2**(spike_exp + state_exp)``), ``spike_exp``/``state_exp`` of the layer (netx: 6, 6),
    ``ActivationMode.RELU``, no bias, ``cum_error`` False and no reset (netx ignores ``reset_interval`` for
    SDNN: state carries from one sample to the next). Per step: ``sigma += a_in``, ``act = max(sigma, 0)``,
    ``delta = act - act_prev + residue``, ``s = delta if |delta| >= vth << 12 else 0``, ``residue = delta - s``,
    out ``s >> state_exp``.

    Returns:
        ``(synapses, neurons, (n_out,))``.

    Raises:
        UnsupportedLayerError: ``precision`` other than ``"fixed"`` (names the layer).
    """
    from lava.proc.sdn.process import ActivationMode, SigmaDelta
    from lava.proc.sparse.process import Sparse

    from dpap_deploy.errors import UnsupportedLayerError

    if precision != "fixed":
        raise UnsupportedLayerError(f'sigma-delta layer "{layer.name}": runs in fixed point only (as lava-dl netx)')
    sd = layer.sigma_delta
    bits = SDNN_INPUT_MESSAGE_BITS if i == 0 else ir.layers[i - 1].sigma_delta.message_bits
    syn = Sparse(weights=w, weight_exp=int(layer.fixed.weight_exp), num_weight_bits=8, num_message_bits=int(bits),
                 name=f"{layer.name}_synapses")
    neurons = SigmaDelta(shape=(layer.n_out,), vth=int(sd.vth), act_mode=ActivationMode.RELU, cum_error=False,
                         spike_exp=int(sd.spike_exp), state_exp=int(sd.state_exp), name=f"{layer.name}_neurons")
    return syn, neurons, (layer.n_out,)


def sinks(out_port, out_shape: tuple, steps: int, hidden: list, hidden_steps: int, record_dir: str,
          dtype=np.int8):
    """Connect the output port and the ``hidden`` ``(port, shape)`` pairs to sinks that write ``.npy`` files
    in ``record_dir``: one :class:`~dpap_deploy.export.gate.FileSinks` process for all of them when
    they are at most ``MAX_PORTS`` (Lava's cost is per process and step), else one
    :class:`~dpap_deploy.export.gate.FileSink` each; ``dtype`` of the files: ``int8`` for 0/1 spikes,
    ``int32`` for graded ones.

    Returns:
        ``(sink, hidden_sinks)``: ``sink`` is a Lava process (``run``, ``stop``) whose ``read()`` gives the
        output ``(C, steps)``; ``hidden_sinks`` one object with ``read()`` (``shape + (hidden_steps,)``) each.
    """
    from dpap_deploy.export.gate import MAX_PORTS, FileSink, FileSinks, Recording

    ports = [(out_port, out_shape, steps, "output")] + [(p, sh, hidden_steps, f"hidden{i}")
                                                       for i, (p, sh) in enumerate(hidden)]
    paths = [os.path.join(record_dir, f"{name}.npy") for *_, name in ports]
    if len(ports) <= MAX_PORTS:
        group = FileSinks(shapes=[sh for _, sh, _, _ in ports], steps=[n for _, _, n, _ in ports], paths=paths,
                          dtype=dtype, name="sinks")
        for k, (p, *_) in enumerate(ports):
            p.connect(group.port(k))
        return group, [Recording(group, k) for k in range(1, len(ports))]
    one = []
    for (p, sh, n, name), path in zip(ports, paths):
        one.append(FileSink(shape=sh, steps=n, path=path, dtype=dtype, name=f"{name}_sink"))
        p.connect(one[-1].a_in)
    return one[0], one[1:]


def _bias_population(ir: NetworkIR, layer, samples: np.ndarray, precision: str, hold: Optional[np.ndarray] = None):
    """Layer 0 of a current-encoded network: a :class:`~dpap_deploy.export.gate.BiasScheduleLIF` whose
    bias during sample ``k`` is the host's ``W x_k`` (fixed: ``current_bias()``; float:
    ``dt/tau_mem * W x_k``, Lava's float LIF adds ``bias_mant`` as it is), reset at the first step
    of each sample (:func:`first_step`). With ``hold`` (a ``"hold"`` layer's mask ``(n, T)``, see
    :func:`lava_time_mask`) a :class:`~dpap_deploy.export.gate.GatedBiasScheduleLIF` whose threshold
    test the mask switches off (step offset :func:`first_step`, the population's reset phase)."""
    from dpap_deploy.export.gate import BiasScheduleLIF, GatedBiasScheduleLIF

    T, n = ir.time_steps, layer.neurons
    a_v = ir.dt_s / n.tau_mem_s
    common = dict(shape=(layer.n_out,), reset_interval=T, first_step=first_step(ir), name=f"{layer.name}_neurons")
    neurons = BiasScheduleLIF
    if hold is not None:
        neurons = functools.partial(GatedBiasScheduleLIF, mask=hold, step_offset=first_step(ir))
    if precision == "fixed":
        mant, exp = current_bias(layer, samples)
        f = layer.fixed
        return neurons(bias_table=mant.T.astype(np.int32), bias_exp=exp, du=int(f.du), dv=int(f.dv),
                       vth=int(f.vth), **common)
    table = a_v * (samples @ layer.masked_weight().astype(np.float64).T)
    return neurons(bias_table=np.ascontiguousarray(table.T), du=ir.dt_s / n.tau_syn_s, dv=a_v,
                   vth=float(n.v_th), **common)


def _recurrent_loop(ir: NetworkIR, i: int, layer, lif, precision: str) -> None:
    """``lif.s_out -> SpikeGate -> Sparse(R) -> lif.a_in``: the recurrent weights of weight layer ``i``.

    Lava's ``Sparse`` sends at step ``t`` what it received at ``t - 1`` (``a_buff``), so a spike of
    step ``t`` reaches the population's input at ``t + 1``, the IR's recurrence. ``LIFReset`` clears
    ``u`` and ``v`` at each sample's first step but not that buffer: the gate drops the spikes of each
    sample's last step (within-sample step ``T - 1``, phase ``i + first_step(ir)``) on this path only,
    so no sample feeds the next. Fixed point: ``fixed.recurrent_weight`` with the layer's
    ``weight_exp``; float: ``dt/tau_mem * recurrent`` (as the feed-forward weights)."""
    from lava.proc.sparse.process import Sparse

    from dpap_deploy.export.gate import SpikeGate

    T, n = ir.time_steps, layer.n_out
    mask = np.ones((n, T), np.int32)
    mask[:, T - 1] = 0
    gate = SpikeGate((n,), mask, phase=i + first_step(ir), name=f"{layer.name}_recurrent_gate")
    if precision == "fixed":
        rec = Sparse(weights=sp.csr_matrix(layer.fixed.recurrent_weight), weight_exp=int(layer.fixed.weight_exp),
                     num_weight_bits=8, name=f"{layer.name}_recurrent")
    else:
        a_v = layer.neurons.step_factors(ir.dt_s)[2]
        rec = Sparse(weights=sp.csr_matrix(a_v * layer.recurrent.astype(np.float64)), name=f"{layer.name}_recurrent")
    lif.s_out.connect(gate.s_in)
    gate.s_out.connect(rec.s_in)
    rec.a_out.connect(lif.a_in)


def _always_on():
    """The output port of a one-neuron source that spikes at every Lava step (a ``RingBuffer`` of one
    column of ones, replayed), the bias axon of every layer with an input bias."""
    from lava.proc.io.source import RingBuffer as SpikeIn

    return SpikeIn(data=np.ones((1, 1), np.int32)).s_out


def _bias_axon(ir: NetworkIR, layer, lif, shape: tuple, precision: str, port) -> None:
    """``port`` (spikes at every step) ``-> Sparse (n_out, 1) -> lif.a_in``: the layer's input bias.

    Fixed point: the weights are ``fixed.input_bias`` (conv: each channel's over its map, in Lava's
    ``(W, H, C)`` order) with the layer's ``weight_exp``, so ``a_in`` gets ``b << weight_exp`` at every
    step like any weight (``export/quantize.py``); float: ``dt/tau_mem * input_bias``. The ``Sparse``
    delivers from Lava step 2 on (one step of delay behind the source's first spike at step 1), and
    every population's first window starts at step ``i + first_step(ir) >= 2``: the bias is there at
    every step of every sample, including the step of the ``LIFReset`` (which clears ``u`` and ``v``
    before adding ``a_in``). Spikes it causes before a population's first window are cleared by the
    next population's first reset, as any input before a window is (module docstring)."""
    from lava.proc.sparse.process import Sparse

    if precision == "fixed":
        b, kw = layer.fixed.input_bias.astype(np.int32), dict(weight_exp=int(layer.fixed.weight_exp), num_weight_bits=8)
    else:
        b, kw = layer.neurons.step_factors(ir.dt_s)[2] * layer.input_bias.astype(np.float64), {}
    col = np.broadcast_to(b, shape).reshape(-1, 1)  # conv: (W, H, C) with C last, the channel's bias
    syn = Sparse(weights=sp.csr_matrix(col), name=f"{layer.name}_bias_axon", **kw)
    port.connect(syn.s_in)
    (syn.a_out if len(shape) == 1 else syn.a_out.reshape(shape)).connect(lif.a_in)


def _population(ir: NetworkIR, i: int, layer, w, precision: str, hold: Optional[np.ndarray] = None):
    """The synapses (``Sparse`` or ``Conv``) and ``LIFReset`` neurons of weight layer ``i``, and the
    population's shape in Lava's layout (``(n,)``, conv ``(W, H, C)``). With ``hold`` (a ``"hold"``
    layer's mask in Lava's shape plus ``T``, :func:`lava_time_mask`) the neurons are a
    :class:`~dpap_deploy.export.gate.GatedLIFReset` with step offset ``i + first_step(ir)``, the
    phase of its reset offset."""
    from lava.proc.conv.process import Conv
    from lava.proc.lif.process import LIFReset
    from lava.proc.sparse.process import Sparse

    neurons = LIFReset
    if hold is not None:
        from dpap_deploy.export.gate import GatedLIFReset

        neurons = functools.partial(GatedLIFReset, mask=hold, step_offset=i + first_step(ir))

    T = ir.time_steps
    conv = layer.kind == "conv"
    if conv:
        c_out, h_out, w_out = layer.out_shape
        shape = (w_out, h_out, c_out)  # Lava's (W, H, C)
    else:
        shape = (layer.n_out,)
    common = dict(shape=shape, reset_interval=T, reset_offset=(i + first_step(ir)) % T,
                  name=f"{layer.name}_neurons", **lava_bias(layer, shape, precision))
    n = layer.neurons
    a_v = n.step_factors(ir.dt_s)[2]  # float input gain: dt / tau_mem, 1 for the IF variant (tau_mem = inf)
    sparse = Sparse if layer.delay is None else functools.partial(delayed_synapses, layer)
    if conv:
        c_in, h_in, w_in = layer.in_shape
        kernel = layer.masked_weight(fixed=True) if precision == "fixed" else a_v * layer.masked_weight()
        syn = Conv(weight=lava_conv_weight(kernel), input_shape=(w_in, h_in, c_in), padding=layer.padding,
                   stride=layer.stride, dilation=layer.dilation, groups=layer.groups, name=f"{layer.name}_synapses")
    elif precision == "fixed":
        syn = sparse(weights=w, weight_exp=int(layer.fixed.weight_exp), num_weight_bits=8, name=f"{layer.name}_synapses")
    else:
        syn = sparse(weights=sp.csr_matrix(a_v * layer.masked_weight().astype(np.float64)), name=f"{layer.name}_synapses")
    if precision == "fixed":
        f = layer.fixed
        lif = neurons(du=int(f.du), dv=int(f.dv), vth=int(f.vth), **common)
    else:
        lif = neurons(du=ir.dt_s / n.tau_syn_s, dv=ir.dt_s / n.tau_mem_s, vth=float(n.v_th), **common)  # IF: dv 0
    return syn, lif, shape


def _lava_input(ir: NetworkIR, x: np.ndarray) -> Tuple[np.ndarray, int]:
    """What :func:`build` takes for input ``x``, and ``N``: the source's schedule ``(F, N*T + L)``
    of spikes ``(T, N, F)`` (or ``(T, N, C, H, W)``), or the analog samples ``(N, F)`` of a
    current-encoded network (``x`` ``(T, N, F)`` constant over ``T``, or ``(N, F)``)."""
    if ir.input_encoding == "current":
        samples = analog_input(ir, x, "loihi-sim")
        return samples, samples.shape[0]
    T, N = x.shape[:2]
    F = int(np.prod(x.shape[2:]))
    if T != ir.time_steps or F != ir.input_size:
        raise ExportValidationError(
            f"input spikes have T={T}, F={F}; network {ir.name!r} expects T={ir.time_steps}, F={ir.input_size}"
        )
    # the source sends what the first node takes: a (C, H, W) map (a conv or a flatten first), else a vector
    return input_schedule(x.reshape(T, N, *(ir.input_shape or (F,))), len(ir.layers)), N


def run(ir: NetworkIR, spikes: np.ndarray, progress: bool = False, chunk: int = 2000,
        precision: str = "fixed", run_cfg: str = "sim", record_hidden: bool = False,
        hidden_samples: Optional[int] = None) -> Tuple[np.ndarray, dict]:
    """Run a test split through the exported network in Lava's simulator, as one long run.

    ``precision="fixed"`` (default) runs the quantised network with ``select_tag="fixed_pt"``
    (Loihi's integers); ``"float"`` runs Norse's float parameters with ``"floating_pt"``.
    ``run_cfg="hw"`` runs on a Loihi 2 chip (``Loihi2HwCfg``; needs Intel's lava-loihi).
    Every population leaves Lava through a :class:`~dpap_deploy.export.gate.FileSink` (a ``.npy``
    file per sink, read whole after the run), not through Lava's per-element ``get_var``.

    A sigma-delta network (:func:`is_sigma_delta`) takes graded integer input (4096 = 1.0: ``2**(spike_exp + state_exp)``,
    netx's 6 + 6, the units of the layers' graded spikes) and gives graded output spikes: ``output_spikes`` is int32 and ``counts`` their sum per
    sample; its state is not reset between samples (as in lava-dl netx, whose ``SigmaDelta`` has no reset).

    Args:
        spikes: input spikes ``(T, N, F)`` 0/1 (``(T, N, C, H, W)`` for a network starting with a
            convolution), graded integers for a sigma-delta network; with current encoding the analog
            samples, ``(T, N, F)`` with the same values at every step (what the ``current`` encoding gives) or ``(N, F)``.
        record_hidden: also record every hidden population.
        hidden_samples: record the hidden populations for the first this many samples only (None: all).

    Returns:
        ``(counts, info)``: output spike counts ``(N, C)`` and facts of the run
        (``steps``, ``synapses_per_layer`` counted from the ``Sparse`` processes (current encoding:
        layer 0's from the integer weights the host multiplies), ``seconds``,
        ``output_spikes`` ``(T, N, C)``: the output population's spikes per sample and step;
        with ``record_hidden`` also ``hidden_spikes``: per hidden layer ``(T, n, n_l)`` for the first
        ``n = min(N, hidden_samples)`` samples, neurons in torch's ``(C, H, W)`` order for conv layers).

    Raises:
        ExportValidationError: the input's ``T`` or ``F`` differ from the network's; current-encoded
            input that changes over ``T``.
        UnsupportedLayerError: current encoding with ``run_cfg="hw"`` (the bias switch is a CPU model).
    """
    import tempfile

    if precision == "fixed" and not ir.quantized:
        ir = quantize(ir)
    check_supported(ir)
    if run_cfg == "hw" and ir.input_encoding == "current":
        from dpap_deploy.errors import UnsupportedLayerError

        raise UnsupportedLayerError(f'layer "{ir.layers[0].name}": current encoding runs as a per-sample bias '
                                    "switched by a CPU process model; it runs in Lava's simulator only (loihi-sim)")
    T = ir.time_steps
    t0 = time.perf_counter()
    data, N = _lava_input(ir, np.asarray(spikes))
    n_rec = N if hidden_samples is None else max(1, min(N, int(hidden_samples)))
    with tempfile.TemporaryDirectory(prefix="dpap-lava-") as record_dir:
        source, chain, sink, hidden_sinks = build(ir, data, precision, record_hidden, record_dir=record_dir,
                                                  hidden_steps=n_rec * T + delays(ir))
        synapses = {l.name: (int(np.count_nonzero(l.masked_weight(fixed=l.fixed is not None))) if syn is None else
                             (int(np.count_nonzero(syn.weight.init)) if l.kind == "conv" else int(syn.weights.init.nnz))
                             // (l.pool_fold ** 2)) for l, (syn, _) in zip(ir.layers, chain)}
        t1 = time.perf_counter()
        steps = N * T + delays(ir)
        _run_steps(sink, steps, _run_config(run_cfg, precision), chunk, progress)
        raster = sink.read()
        hidden_rasters = [h.read() for h in hidden_sinks]
    t2 = time.perf_counter()
    out = output_spikes(raster, T, N, delays(ir), np.int32 if is_sigma_delta(ir) else np.uint8)
    counts = out.sum(axis=0).astype(np.int64)
    info = {"steps": steps, "synapses_per_layer": synapses, "seconds": {"build": t1 - t0, "run": t2 - t1},
            "output_spikes": out}
    if record_hidden:
        info["hidden_spikes"] = hidden_spikes(ir, hidden_rasters, n_rec)
    return counts, info


def _run_config(run_cfg: str, precision: str):
    """Lava's run configuration: ``Loihi2SimCfg`` with the precision's tag, or ``Loihi2HwCfg``."""
    if run_cfg == "hw":  # pragma: no cover - Intel's lava-loihi only
        from lava.magma.core.run_configs import Loihi2HwCfg

        return Loihi2HwCfg()
    from lava.magma.core.run_configs import Loihi2SimCfg

    return Loihi2SimCfg(select_tag="fixed_pt" if precision == "fixed" else "floating_pt")


def _run_steps(sink, steps: int, cfg, chunk: int, progress: bool) -> None:
    """Run the network of ``sink`` for ``steps`` steps in chunks of ``chunk`` (a progress bar between
    chunks), then stop it; the sinks' files are complete when this returns."""
    from lava.magma.core.run_conditions import RunSteps
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="lava", unit="step", disable=not progress, leave=False)
    done = 0
    try:
        while done < steps:
            n = min(chunk, steps - done)
            sink.run(condition=RunSteps(num_steps=n), run_cfg=cfg)
            done += n
            bar.update(n)
    finally:
        sink.stop()
        bar.close()


def hidden_spikes(ir: NetworkIR, rasters: List[np.ndarray], n: int) -> List[np.ndarray]:
    """Per hidden layer the spikes ``(T, n, n_l)`` uint8 (int32 graded spikes: sigma-delta) of the first ``n`` samples from the hidden
    sinks' rasters (``(n_l, steps)``, conv ``(W, H, C, steps)``; neurons returned in torch's
    ``(C, H, W)`` order): layer ``i``'s step ``j`` of sample ``k`` is column ``k*T + i + first_step(ir) - 1 + j``."""
    hidden = []
    lag = first_step(ir) - 1
    for i, r in enumerate(rasters):
        if r.ndim == 4:  # (W, H, C, steps) -> (C*H*W, steps), torch order
            r = r.transpose(2, 1, 0, 3).reshape(-1, r.shape[-1])
        hidden.append(output_spikes(r, ir.time_steps, n, i + lag, np.int32 if is_sigma_delta(ir) else np.uint8))
    return hidden


@register_target("loihi-sim")
def export_loihi_sim(ir: NetworkIR, out_dir: str, spikes: Optional[np.ndarray] = None,
                     progress: bool = False, probe_samples: int = 0, **_) -> ExportResult:
    """Quantise ``ir`` (unless it is already: a netx file's network keeps its integers), write
    ``out_dir/network.npz`` (the fixed-point IR Lava runs) and, if ``spikes`` ``(T, N, F)`` are
    given (current encoding: the analog input, see :func:`run`), run them in Lava's fixed-point simulator. With ``probe_samples > 0`` the same run also records
    every hidden population for the first ``probe_samples`` samples (``result.hidden_spikes``,
    per hidden layer ``(T, n, n_l)``), which the ``measure`` stage uses instead of a second run.

    The processes are built from the saved file's contents, so what is verified is what was written.
    """
    check_supported(ir)
    q = ir if ir.quantized else quantize(ir)  # a netx file's network keeps the integers it was written with
    path = os.path.join(out_dir, "network.npz")
    q.save(path)
    q = NetworkIR.load(path)
    result = ExportResult(target="loihi-sim", network=q)
    result.extra["synapses_counted_from"] = "lava Sparse process weights (non-zero)"
    if q.input_encoding == "current":
        result.extra["synapses_counted_from"] += (f"; layer {q.layers[0].name!r}: the integer weights the host "
                                                  "multiplies by each analog sample (its W x is the population's bias)")
    if spikes is not None:
        counts, info = run(q, spikes, progress=progress, record_hidden=probe_samples > 0,
                           hidden_samples=probe_samples or None)
        result.hidden_spikes = info.get("hidden_spikes")
        result.counts = counts
        result.synapses_per_layer = info["synapses_per_layer"]
        result.seconds = info["seconds"]
        result.extra["lava_steps"] = info["steps"]
        result.output_spikes = info["output_spikes"]
        result.files.append({"path": path, "verified_by": "lava-nc Loihi2SimCfg(select_tag='fixed_pt')"})
    else:
        result.synapses_per_layer = {l.name: layer_synapses(l) for l in q.layers}
        result.files.append({"path": path, "verified_by": None})
    result.extra["fixed_point"] = [
        {"layer": l.name, "weight_exp": l.fixed.weight_exp, "du": l.fixed.du, "dv": l.fixed.dv, "vth": l.fixed.vth,
         **({"bias_exp": l.fixed.bias_exp} if l.fixed.bias_exp is not None else {})}
        for l in q.layers
    ]
    return result
