"""Target ``netx``: a lava-dl netx HDF5 file (``DIR/network.net``) that lava-dl loads unchanged.

Layout (``lava/lib/dl/netx/hdf5.py``, ``utils.py``; docs/deployment.md sec. 7):
group ``layer/`` with children ``"0"`` (``type = input``, ``shape = [F]`` or ``[C, H, W]``, no
neuron: it gives netx the input size) and ``"1"``, ``"2"``, ... one per layer: ``type = dense``
(``shape = [n_out]``, integer ``weight (n_out, n_in)``, pruned synapses 0) or ``type = conv``
(``shape = [C, H, W]``, integer ``weight (out, in, kH, kW)`` in torch's layout, which netx flips
and reorders for Lava's ``Conv``, ``stride``, ``padding``, ``dilation``, ``groups``), a
``flatten`` group between the last conv and the first dense layer, and for each layer
``neuron/``: ``type = CUBA``, ``iDecay = du + 1``, ``vDecay = dv``, ``vThMant = vth``,
``refDelay = 1``, ``gradedSpike = 0``.

``lava.lib.dl.netx.hdf5.Network(net_config, reset_interval=T, reset_offset=1,
sparse_fc_layer=True)`` rebuilds it as ``Sparse`` + ``LIFReset`` blocks: it sets
``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant`` and staggers the blocks' reset
offsets by one per layer starting at ``reset_offset + 1`` (``Network._create``), which with
``reset_offset = 1`` are exactly the offsets ``(l + 2) % T`` of our own ``loihi-sim``
processes, so the same input schedule gives the same output spikes. netx derives each
layer's weight exponent from the weights (``netx/utils.py: optimize_weight_bits``); it
reproduces ours only when our ``weight_exp`` is 0, so other layers are rejected by name.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from dpap_deploy.errors import IRError, UnsupportedLayerError
from dpap_deploy.export import ExportResult, check_layers, register_target
from dpap_deploy.export.lava_sim import input_schedule, layer_synapses, output_spikes
from dpap_deploy.export.quantize import quantize
from dpap_deploy.fileio import atomic_path
from dpap_deploy.ir import NetworkIR

SUPPORTED_KINDS = ("fc", "conv", "flatten")


def check_supported(ir: NetworkIR) -> None:
    """Raise :class:`UnsupportedLayerError` for layers netx cannot express (named)."""
    check_kinds(ir)
    for l in ir.layers:
        if l.fixed.weight_exp != 0:
            raise UnsupportedLayerError(
                f'target netx: layer "{l.name}" needs weight_exp {l.fixed.weight_exp}; netx derives the exponent '
                "from the weights and reproduces only weight_exp 0 (use target loihi-sim)")


def check_kinds(ir: NetworkIR) -> None:
    """Raise :class:`UnsupportedLayerError` for layer kinds netx has no block for, timestep masks and
    current encoding (a per-sample bias; netx has spike input and one static bias per layer), and input
    biases (``input_bias``: a constant into the current ``u``, which loihi-sim realises as a bias axon;
    lava-dl netx has no current bias), naming the layer. A static bias, fully connected delays and conv
    groups/dilation are written (netx runs them); a conv layer's delay (which netx ignores) and a bias
    exponent other than netx's 6 are refused."""
    from dpap_deploy.export.lava_sim import check_delays_and_bias

    biased = [l.name for l in ir.layers if getattr(l, "input_bias", None) is not None]
    if biased:
        raise UnsupportedLayerError(
            f"target netx: layer(s) {', '.join(repr(n) for n in biased)} have an input bias (a constant added to the "
            "synaptic current u every step); lava-dl netx has no current bias (use target loihi-sim, which adds it "
            "through a bias axon)")
    check_layers(ir, "netx", SUPPORTED_KINDS, ("lif",), features=("bias", "delay", "groups", "dilation"))
    check_delays_and_bias(ir, "netx")
    for l in ir.layers:
        if l.bias is not None and l.fixed is not None and l.fixed.bias_exp != 6:
            raise UnsupportedLayerError(f'target netx: layer "{l.name}" has bias_exp {l.fixed.bias_exp}; netx runs '
                                        "a layer's bias with bias_exp 6 only")


def write_netx(ir: NetworkIR, path: str) -> None:
    """Write the quantised ``ir`` as a netx HDF5 file at ``path`` (atomically).

    Besides lava-dl's datasets it stores, as HDF5 attributes that lava-dl ignores, the
    network's ``name``, ``time_steps`` and ``dt_s`` (root) and each layer's ``name``,
    ``scale``, ``dense_shape`` and ``pool_fold``, so :func:`read_netx` gets the IR back.

    A layer's ``bias`` is written as its ``bias_mant`` integers, a fully connected layer's ``delay`` as the
    ``(n_out, n_in)`` matrix, a convolution's ``groups`` and ``dilation`` as they are.

    Raises:
        UnsupportedLayerError: a current-encoded network (``export.check_input_encoding``), anything
            :func:`check_kinds` refuses.
    """
    import h5py

    from dpap_deploy.export import check_input_encoding

    check_input_encoding(ir, "netx")
    check_kinds(ir)

    with atomic_path(path, suffix=".net") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["producer"] = "dpap-deploy"
            f.attrs["time_steps"] = int(ir.time_steps)
            f.attrs["dt_s"] = float(ir.dt_s)
            f.attrs["name"] = str(ir.name)
            layers = f.create_group("layer")
            g = layers.create_group("0")
            _text(g, "type", "input")
            g.create_dataset("shape", data=np.array(ir.input_shape or [ir.input_size], dtype=np.int64))  # CHW
            for k, node in enumerate(ir.nodes, start=1):
                _write_node(layers.create_group(str(k)), node)


def _text(group, key: str, value: str) -> None:
    """A length-1 ASCII string dataset, as lava-dl writes ``type``."""
    group.create_dataset(key, (1,), "S10", [value.encode("ascii")])


def _write_node(g, l) -> None:
    """One IR node into its netx group ``g``: a ``flatten``, or a ``conv``/``dense`` layer with its synapse
    datasets, its bias and delays, our attributes and its CUBA ``neuron`` group."""
    if l.kind == "flatten":
        _text(g, "type", "flatten")
        return
    if l.kind == "conv":  # netx flips the kernel and reorders it to Lava's (out, W, H, in)
        _text(g, "type", "conv")
        g.create_dataset("shape", data=np.array(l.out_shape, dtype=np.int64))  # CHW
        g.create_dataset("weight", data=l.masked_weight(fixed=True).astype(np.int32))
        for key in ("stride", "padding", "dilation", "groups"):
            g.create_dataset(key, data=np.int64(getattr(l, key)))
    else:
        _text(g, "type", "dense")
        g.create_dataset("shape", data=np.array([l.n_out], dtype=np.int64))
        g.create_dataset("weight", data=l.masked_weight(fixed=True).astype(np.int32))
        if l.delay is not None:  # (n_out, n_in): netx takes the matrix as it is
            g.create_dataset("delay", data=np.asarray(l.delay, np.int64))
    if l.bias is not None:  # netx: the neurons' bias_mant (bias_exp 6), per neuron or per channel
        g.create_dataset("bias", data=np.asarray(l.fixed.bias_mant, np.int64))
    # our own facts for read_netx (lava-dl reads datasets only, never attributes)
    g.attrs["name"] = l.name
    g.attrs["scale"] = float(l.fixed.scale)
    g.attrs["dense_shape"] = np.array(l.dense_shape, dtype=np.int64)
    g.attrs["pool_fold"] = int(l.pool_fold)
    n = g.create_group("neuron")
    _text(n, "type", "CUBA")
    for key, value in (("iDecay", l.fixed.du + 1), ("vDecay", l.fixed.dv), ("vThMant", l.fixed.vth),
                       ("refDelay", 1), ("gradedSpike", 0)):
        n.create_dataset(key, data=np.int64(value))


def load_network(path: str, time_steps: int, input_message_bits: int = 0):
    """``lava.lib.dl.netx.hdf5.Network`` for ``path`` with our reset schedule; ``input_message_bits`` > 0
    makes the first synapses take graded input (a sigma-delta network's), 0 takes 0/1 spikes.

    Raises:
        IRError: the file is missing, truncated, or not a netx network (names the file).
    """
    from lava.lib.dl.netx import hdf5

    try:
        return hdf5.Network(net_config=path, reset_interval=int(time_steps), reset_offset=1, sparse_fc_layer=True,
                            input_message_bits=int(input_message_bits))
    except Exception as exc:  # h5py OSError/KeyError from a truncated or foreign file
        raise IRError(f"{path}: lava-dl netx cannot load it ({type(exc).__name__}: {exc})") from None


def run_netx(path: str, spikes: np.ndarray, time_steps: int, input_message_bits: int = 0) -> np.ndarray:
    """Run input spikes ``(T, N, F)`` through the netx network in Lava's fixed-point simulator.

    The output leaves Lava through a :class:`~dpap_deploy.export.gate.FileSink` (one ``.npy`` file,
    read whole after the run), not through Lava's per-element ``get_var``. With ``input_message_bits``
    > 0 (a sigma-delta network: ``lava_sim.SDNN_INPUT_MESSAGE_BITS``) the input is graded integers and
    the output graded spikes.

    Returns:
        The output population's spikes ``(T, N, C)``, aligned like ``loihi-sim``'s: uint8 0/1, or int32
        graded values with ``input_message_bits`` > 0.
    """
    import tempfile

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as SpikeIn

    from dpap_deploy.export.gate import FileSink

    net = load_network(path, time_steps, input_message_bits)
    graded = input_message_bits > 0
    L = len(net.layers)
    T, N = spikes.shape[:2]
    data = input_schedule(spikes, L)
    source = SpikeIn(data=data)
    with tempfile.TemporaryDirectory(prefix="dpap-netx-") as d:
        sink = FileSink(shape=net.out.shape, steps=data.shape[-1], path=os.path.join(d, "output.npy"),
                        dtype=np.int32 if graded else np.int8)
        source.s_out.connect(net.inp)
        net.out.connect(sink.a_in)
        try:
            sink.run(condition=RunSteps(num_steps=data.shape[-1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        finally:
            sink.stop()
        raster = sink.read()
    return output_spikes(raster, T, N, L, np.int32 if graded else np.uint8)


@register_target("netx")
def export_netx(ir: NetworkIR, out_dir: str, spikes: Optional[np.ndarray] = None, **_) -> ExportResult:
    """Quantise ``ir``, write ``out_dir/network.net``, load it with lava-dl netx and, with
    ``spikes`` ``(T, N, F)``, run it in Lava's fixed-point simulator (``counts``)."""
    check_kinds(ir)
    # min_vth=1: keep weight_exp at 0 (netx cannot carry another) by accepting a smaller
    # threshold mantissa where loihi-sim would shift the weights up instead
    q = quantize(ir, min_vth=1) if not ir.quantized else ir
    check_supported(q)
    path = os.path.join(out_dir, "network.net")
    write_netx(q, path)
    result = ExportResult(target="netx", network=q)
    result.extra["synapses_counted_from"] = "netx HDF5 weights (non-zero)"
    result.extra["accuracy_key"] = "netx_in_lava"
    result.synapses_per_layer = {l.name: layer_synapses(l) for l in q.layers}
    if spikes is not None:
        t0 = time.perf_counter()
        out = run_netx(path, spikes, q.time_steps)
        result.seconds["run"] = time.perf_counter() - t0
        result.output_spikes = out
        result.counts = out.sum(axis=0).astype(np.int64)
        result.files.append({"path": path, "verified_by": "lava.lib.dl.netx.hdf5.Network, Loihi2SimCfg fixed_pt run"})
    else:
        load_network(path, q.time_steps)
        result.files.append({"path": path, "verified_by": "lava.lib.dl.netx.hdf5.Network (loaded)"})
    return result


# -- reading a netx file (ours or lava-dl's) into our IR: export/netx_reader.py ---------------------------
from dpap_deploy.export.netx_reader import read_netx  # noqa: E402,F401  (dpap_deploy.readers registers it)
