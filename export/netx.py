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
    lava-dl netx has no current bias), naming the layer."""
    biased = [l.name for l in ir.layers if getattr(l, "input_bias", None) is not None]
    if biased:
        raise UnsupportedLayerError(
            f"target netx: layer(s) {', '.join(repr(n) for n in biased)} have an input bias (a constant added to the "
            "synaptic current u every step); lava-dl netx has no current bias (use target loihi-sim, which adds it "
            "through a bias axon)")
    check_layers(ir, "netx", SUPPORTED_KINDS, ("lif",))


def write_netx(ir: NetworkIR, path: str) -> None:
    """Write the quantised ``ir`` as a netx HDF5 file at ``path`` (atomically).

    Besides lava-dl's datasets it stores, as HDF5 attributes that lava-dl ignores, the
    network's ``name``, ``time_steps`` and ``dt_s`` (root) and each layer's ``name``,
    ``scale``, ``dense_shape`` and ``pool_fold``, so :func:`read_netx` gets the IR back.

    Raises:
        UnsupportedLayerError: a current-encoded network (``export.check_input_encoding``).
    """
    import h5py

    from dpap_deploy.export import check_input_encoding

    check_input_encoding(ir, "netx")

    def text(group, key, value):
        group.create_dataset(key, (1,), "S10", [value.encode("ascii")])

    with atomic_path(path, suffix=".net") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["producer"] = "dpap-deploy"
            f.attrs["time_steps"] = int(ir.time_steps)
            f.attrs["dt_s"] = float(ir.dt_s)
            f.attrs["name"] = str(ir.name)
            layers = f.create_group("layer")
            g = layers.create_group("0")
            text(g, "type", "input")
            g.create_dataset("shape", data=np.array(ir.input_shape or [ir.input_size], dtype=np.int64))  # CHW
            for k, l in enumerate(ir.nodes, start=1):
                g = layers.create_group(str(k))
                if l.kind == "flatten":
                    text(g, "type", "flatten")
                    continue
                if l.kind == "conv":  # netx flips the kernel and reorders it to Lava's (out, W, H, in)
                    text(g, "type", "conv")
                    g.create_dataset("shape", data=np.array(l.out_shape, dtype=np.int64))  # CHW
                    g.create_dataset("weight", data=l.masked_weight(fixed=True).astype(np.int32))
                    g.create_dataset("stride", data=np.int64(l.stride))
                    g.create_dataset("padding", data=np.int64(l.padding))
                    g.create_dataset("dilation", data=np.int64(1))
                    g.create_dataset("groups", data=np.int64(1))
                else:
                    text(g, "type", "dense")
                    g.create_dataset("shape", data=np.array([l.n_out], dtype=np.int64))
                    g.create_dataset("weight", data=l.masked_weight(fixed=True).astype(np.int32))
                # our own facts for read_netx (lava-dl reads datasets only, never attributes)
                g.attrs["name"] = l.name
                g.attrs["scale"] = float(l.fixed.scale)
                g.attrs["dense_shape"] = np.array(l.dense_shape, dtype=np.int64)
                g.attrs["pool_fold"] = int(l.pool_fold)
                n = g.create_group("neuron")
                text(n, "type", "CUBA")
                n.create_dataset("iDecay", data=np.int64(l.fixed.du + 1))
                n.create_dataset("vDecay", data=np.int64(l.fixed.dv))
                n.create_dataset("vThMant", data=np.int64(l.fixed.vth))
                n.create_dataset("refDelay", data=np.int64(1))
                n.create_dataset("gradedSpike", data=np.int64(0))


def load_network(path: str, time_steps: int):
    """``lava.lib.dl.netx.hdf5.Network`` for ``path`` with our reset schedule.

    Raises:
        IRError: the file is missing, truncated, or not a netx network (names the file).
    """
    from lava.lib.dl.netx import hdf5

    try:
        return hdf5.Network(net_config=path, reset_interval=int(time_steps), reset_offset=1, sparse_fc_layer=True)
    except Exception as exc:  # h5py OSError/KeyError from a truncated or foreign file
        raise IRError(f"{path}: lava-dl netx cannot load it ({type(exc).__name__}: {exc})") from None


def run_netx(path: str, spikes: np.ndarray, time_steps: int) -> np.ndarray:
    """Run input spikes ``(T, N, F)`` through the netx network in Lava's fixed-point simulator.

    The output leaves Lava through a :class:`~dpap_deploy.export.gate.FileSink` (one ``.npy`` file,
    read whole after the run), not through Lava's per-element ``get_var``.

    Returns:
        The output population's spikes ``(T, N, C)``, aligned like ``loihi-sim``'s.
    """
    import tempfile

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as SpikeIn

    from dpap_deploy.export.gate import FileSink

    net = load_network(path, time_steps)
    L = len(net.layers)
    T, N = spikes.shape[:2]
    data = input_schedule(spikes, L)
    source = SpikeIn(data=data)
    with tempfile.TemporaryDirectory(prefix="dpap-netx-") as d:
        sink = FileSink(shape=net.out.shape, steps=data.shape[-1], path=os.path.join(d, "output.npy"))
        source.s_out.connect(net.inp)
        net.out.connect(sink.a_in)
        try:
            sink.run(condition=RunSteps(num_steps=data.shape[-1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        finally:
            sink.stop()
        raster = sink.read()
    return output_spikes(raster, T, N, L)


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


# -- reading a netx file back into our IR ----------------------------------------------------
_DENSE_KEYS = {"type", "shape", "weight", "neuron"}
_CONV_KEYS = _DENSE_KEYS | {"stride", "padding", "dilation", "groups"}
_NEURON_KEYS = {"type", "iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike"}


class _NetxFile:
    """Typed access to the groups and datasets of one open netx file; every failure is a
    :class:`NetworkFileError` naming the file and the group/key."""

    def __init__(self, path: str, f):
        self.path, self.f = path, f

    def fail(self, where: str, what: str, kind=None):
        from dpap_deploy.errors import NetworkFileError

        raise (kind or NetworkFileError)(f"{self.path}: {where}: {what}")

    def group(self, parent, key: str, where: str):
        import h5py

        if key not in parent:
            self.fail(where, f"missing group {key!r}")
        g = parent[key]
        if not isinstance(g, h5py.Group):
            self.fail(f"{where}/{key}", "is a dataset; expected a group")
        return g

    def value(self, g, key: str, where: str):
        import h5py

        if key not in g:
            self.fail(where, f"missing key {key!r}")
        d = g[key]
        if not isinstance(d, h5py.Dataset):
            self.fail(f"{where}/{key}", "is a group; expected a dataset")
        return d[()]

    def text(self, g, key: str, where: str) -> str:
        v = self.value(g, key, where)
        if isinstance(v, np.ndarray):
            if v.size != 1:
                self.fail(f"{where}/{key}", f"has shape {v.shape}; expected one string")
            v = v.reshape(-1)[0]
        if isinstance(v, (bytes, np.bytes_)):
            try:
                v = bytes(v).decode("ascii")
            except UnicodeDecodeError:
                self.fail(f"{where}/{key}", f"{bytes(v)[:20]!r} is not an ASCII string")
        if not isinstance(v, str):
            self.fail(f"{where}/{key}", f"has type {type(v).__name__}; expected a string")
        return v

    def integers(self, g, key: str, where: str, ndim=None) -> np.ndarray:
        """An integer array (integral floats accepted), within int32, of ``ndim`` dims if given."""
        v = np.asarray(self.value(g, key, where))
        if v.dtype.kind not in "iuf" or v.dtype.kind == "b":
            self.fail(f"{where}/{key}", f"has dtype {v.dtype}; expected integers")
        if ndim is not None and v.ndim != ndim:
            self.fail(f"{where}/{key}", f"has shape {v.shape}; expected {ndim} dimension(s)")
        if v.dtype.kind == "f" and not (np.all(np.isfinite(v)) and np.all(v == np.round(v))):
            self.fail(f"{where}/{key}", "holds non-integer values; expected integers")
        if v.size and (v.min() < -2**31 or v.max() >= 2**31):
            self.fail(f"{where}/{key}", f"values {v.min():g}..{v.max():g} exceed the 32-bit integer range")
        return v.astype(np.int64)

    def scalar(self, g, key: str, where: str, lo: int, hi: Optional[int] = None) -> int:
        v = self.integers(g, key, where)
        if v.size != 1:
            self.fail(f"{where}/{key}", f"has shape {v.shape}; expected one integer")
        v = int(v.reshape(-1)[0])
        if v < lo or (hi is not None and v > hi):
            self.fail(f"{where}/{key}", f"= {v}; expected {lo}..{hi if hi is not None else 'inf'}")
        return v

    def attr(self, obj, key: str, where: str, kind, default):
        if key not in obj.attrs:
            return default
        v = obj.attrs[key]
        if kind is str:
            v = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            if not isinstance(v, str) or not v:
                self.fail(where, f"attribute {key!r} = {v!r}; expected a non-empty string")
            return v
        arr = np.asarray(v)
        if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)):
            self.fail(where, f"attribute {key!r} = {v!r}; expected finite numbers")
        if kind is tuple:
            if arr.ndim != 1 or not np.all(arr >= 1) or not np.all(arr == np.round(arr)):
                self.fail(where, f"attribute {key!r} = {v!r}; expected positive integers")
            return tuple(int(a) for a in arr)
        if arr.size != 1:
            self.fail(where, f"attribute {key!r} has shape {arr.shape}; expected one number")
        x = kind(arr.reshape(-1)[0])
        if x <= 0 or (kind is int and x != arr.reshape(-1)[0]):
            self.fail(where, f"attribute {key!r} = {v!r}; expected a positive {kind.__name__}")
        return x


def read_netx(path: str) -> NetworkIR:
    """Read a netx HDF5 file of the structure :func:`write_netx` writes back into a quantised IR.

    The file's integer parameters become each layer's :class:`~dpap_deploy.ir.FixedPoint`
    (``weight`` ``(n_out, n_in)`` or ``(C_out, C_in, kH, kW)`` int32, ``weight_exp = 0``,
    ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``); the float side is derived from them:
    ``tau_syn = 4096 dt / iDecay`` and ``tau_mem = 4096 dt / vDecay`` (s), ``v_th = vth / scale``
    and ``weight = w_int / (scale * dt / tau_mem)`` (Norse units), so the float weights are the
    quantised ones. ``scale``, layer names, ``dense_shape``, ``pool_fold``, ``time_steps`` and
    ``dt_s`` come from our attributes when the file has them (third-party files: ``scale = 1``,
    names ``fc<k>``/``conv<k>``, the dense shape is the file's, ``T = 1``, ``dt = 1 ms``).
    The mask is the non-zero weights (conv: channel pairs with any non-zero kernel weight).

    Raises:
        NetworkFileError: the file is missing, not HDF5, truncated, lacks a group or key, has
            a wrong shape or dtype, or layer sizes that do not chain (names file and group/key).
        UnsupportedLayerError: a layer or neuron type, or a key, this reader does not handle
            (names the group and the type).
    """
    import h5py

    from dpap_deploy.errors import DpapError, NetworkFileError, UnsupportedLayerError

    if not os.path.isfile(path):
        raise NetworkFileError(f"{path}: netx file does not exist")
    where = ["/"]  # the group being read, for messages
    try:
        with h5py.File(path, "r") as f:
            return _read_netx_file(_NetxFile(path, f), f, path, where)
    except DpapError as exc:
        if isinstance(exc, (NetworkFileError, UnsupportedLayerError)):
            raise
        raise NetworkFileError(f"{path}: {where[0]}: {exc}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py on truncated/foreign files
        raise NetworkFileError(f"{path}: {where[0]}: not a readable netx HDF5 file ({type(exc).__name__}: {exc})") from None


def _read_netx_file(r: _NetxFile, f, path: str, where: list) -> NetworkIR:
    """The network of an open netx file (see :func:`read_netx`); ``where[0]`` follows the group read."""
    from dpap_deploy.errors import UnsupportedLayerError
    from dpap_deploy.ir import Flatten

    T = r.attr(f, "time_steps", "/", int, 1)
    dt = r.attr(f, "dt_s", "/", float, 1e-3)
    name = r.attr(f, "name", "/", str, os.path.splitext(os.path.basename(path))[0])
    layers_g = r.group(f, "layer", "/")
    keys = list(layers_g.keys())
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        r.fail("layer", f"groups {sorted(keys)[:8]} are not numbered 0..{len(keys) - 1}")
    if len(keys) < 2:
        r.fail("layer", f"has {len(keys)} group(s); expected an input group '0' and at least one layer")
    where[0] = "layer/0"
    g0 = r.group(layers_g, "0", "layer")
    if r.text(g0, "type", where[0]) != "input":
        r.fail(where[0], f"type is {r.text(g0, 'type', where[0])!r}; expected 'input'")
    in_shape = tuple(int(v) for v in r.integers(g0, "shape", where[0], ndim=1))
    if len(in_shape) not in (1, 3) or min(in_shape) < 1:
        r.fail(f"{where[0]}/shape", f"= {list(in_shape)}; expected [F] or [C, H, W] of positive sizes")
    shape, nodes, flattened = in_shape, [], False
    for k in range(1, len(keys)):
        where[0] = f"layer/{k}"
        g = r.group(layers_g, str(k), "layer")
        kind = r.text(g, "type", where[0])
        if kind == "flatten":
            if len(shape) != 3:
                r.fail(where[0], f"flatten after a layer of shape {list(shape)}; expected a [C, H, W] map")
            nodes.append(Flatten("flatten", shape))  # named after the layer it feeds, below
            shape, flattened = (int(np.prod(shape)),), True
            continue
        if kind not in ("dense", "conv"):
            r.fail(where[0], f"layer type {kind!r} is not supported; this reader takes input, dense, conv and "
                   "flatten", UnsupportedLayerError)
        if flattened and kind == "conv":
            r.fail(where[0], "conv layer after a flatten; expected conv layers first")
        node = _read_netx_layer(r, g, where[0], kind, shape, sum(n.kind != "flatten" for n in nodes) + 1, dt)
        if nodes and nodes[-1].kind == "flatten":
            nodes[-1] = Flatten(f"{node.name}_flatten", nodes[-1].in_shape)
        nodes.append(node)
        shape = node.out_shape if kind == "conv" else (node.n_out,)
    names = [n.name for n in nodes if n.kind != "flatten"]
    if len(set(names)) != len(names):
        r.fail("layer", f"layer names {names} are not unique")
    where[0] = "/"
    return NetworkIR(name=name, input_size=int(np.prod(in_shape)), time_steps=T, dt_s=dt, nodes=nodes,
                     metadata={"read_from": path, "format": "netx"},
                     input_shape=in_shape if len(in_shape) == 3 else None)


def _read_netx_layer(r: _NetxFile, g, where: str, kind: str, shape: tuple, n_layer: int, dt: float):
    """One ``dense`` or ``conv`` group and its ``neuron`` group as an IR layer with its fixed point."""
    from dpap_deploy.errors import UnsupportedLayerError
    from dpap_deploy.ir import ConvLayer, FCLayer, FixedPoint, LIFNeurons

    extra = sorted(set(g.keys()) - (_DENSE_KEYS if kind == "dense" else _CONV_KEYS))
    if extra:
        r.fail(where, f"key {extra[0]!r} of a {kind} layer is not supported (keys it takes: "
               f"{', '.join(sorted(_DENSE_KEYS if kind == 'dense' else _CONV_KEYS))})", UnsupportedLayerError)
    lname = r.attr(g, "name", where, str, f"{'fc' if kind == 'dense' else 'conv'}{n_layer}")
    out_shape = tuple(int(v) for v in r.integers(g, "shape", where, ndim=1))
    stride = padding = None
    if kind == "dense":
        w = r.integers(g, "weight", where, ndim=2)
        n_in = int(np.prod(shape))
        if w.shape[1] != n_in:
            r.fail(f"{where}/weight", f"has shape {w.shape}: takes {w.shape[1]} inputs but the layer before gives {n_in}")
        if out_shape != (w.shape[0],):
            r.fail(f"{where}/shape", f"= {list(out_shape)}; the weight {w.shape} gives [{w.shape[0]}]")
    else:
        w = r.integers(g, "weight", where, ndim=4)
        if len(shape) != 3 or w.shape[1] != shape[0]:
            r.fail(f"{where}/weight", f"has shape {w.shape}: takes {w.shape[1]} channels but the layer before gives "
                   f"{list(shape)}")
        stride = r.scalar(g, "stride", where, 1)
        padding = r.scalar(g, "padding", where, 0)
        for key in ("dilation", "groups"):
            if r.scalar(g, key, where, 1) != 1:
                r.fail(f"{where}/{key}", f"= {r.scalar(g, key, where, 1)}; this reader takes 1 only", UnsupportedLayerError)
        want = (w.shape[0], (shape[1] + 2 * padding - w.shape[2]) // stride + 1,
                (shape[2] + 2 * padding - w.shape[3]) // stride + 1)
        if min(want) < 1 or out_shape != want:
            r.fail(f"{where}/shape", f"= {list(out_shape)}; a {w.shape} kernel with stride {stride}, padding "
                   f"{padding} on {list(shape)} gives {list(want)}")
    nw = where + "/neuron"
    n = r.group(g, "neuron", where)
    ntype = r.text(n, "type", nw)
    if ntype != "CUBA":
        r.fail(nw, f"neuron type {ntype!r} is not supported; this reader takes CUBA", UnsupportedLayerError)
    extra = sorted(set(n.keys()) - _NEURON_KEYS)
    if extra:
        r.fail(nw, f"key {extra[0]!r} is not supported (keys it takes: {', '.join(sorted(_NEURON_KEYS))})",
               UnsupportedLayerError)
    i_decay = r.scalar(n, "iDecay", nw, 1, 4096)
    v_decay = r.scalar(n, "vDecay", nw, 1, 4096)
    vth = r.scalar(n, "vThMant", nw, 1, 2**31 - 1)
    for key, want_v in (("refDelay", 1), ("gradedSpike", 0)):
        if key in n and r.scalar(n, key, nw, 0) != want_v:
            r.fail(f"{nw}/{key}", f"= {r.scalar(n, key, nw, 0)}; our LIF has {key} {want_v} only", UnsupportedLayerError)
    scale = r.attr(g, "scale", where, float, 1.0)
    dense_shape = r.attr(g, "dense_shape", where, tuple, tuple(w.shape[:2]))
    pool_fold = r.attr(g, "pool_fold", where, int, 1)
    neurons = LIFNeurons(tau_syn_s=4096 * dt / i_decay, tau_mem_s=4096 * dt / v_decay, v_th=vth / scale)
    fixed = FixedPoint(weight=w.astype(np.int32), weight_exp=0, du=i_decay - 1, dv=v_decay, vth=vth, scale=scale)
    w_float = w / (scale * v_decay / 4096)
    if kind == "dense":
        return FCLayer(lname, w_float, w != 0, neurons, dense_shape, fixed=fixed, pool_fold=pool_fold)
    return ConvLayer(lname, w_float, np.any(w != 0, axis=(2, 3)), neurons, shape, dense_shape, stride=stride,
                     padding=padding, fixed=fixed, pool_fold=pool_fold)
