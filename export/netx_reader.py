"""Reading a lava-dl netx HDF5 file (``.net``), ours or a third party's, into the IR.

What this relies on about lava-dl 0.6.0's format (docs/deployment.md sec. 7): the writer is each
``slayer`` block's ``export_hdf5`` (``lava/lib/dl/slayer/block/base.py``), the runner
``lava.lib.dl.netx.hdf5.Network`` (``lava/lib/dl/netx/hdf5.py``, ``netx/blocks/process.py``):

* group ``layer`` holds ``"0"``, ``"1"``, ... in order. ``"0"`` may be an ``input`` (``shape``
  ``[F]`` or ``[C, H, W]``); a file may also start with its first dense layer (lava-dl's tutorials).
  An ``input`` group with a ``neuron`` group (a slayer ``Input`` block with neurons; keys
  ``weight``, ``bias``) is not run by netx: its ``Input`` process has no model Lava can compile and
  never connects its input port to the neurons; lava-dl's own tutorials load such files with
  ``skip_layers=1``, which drops those neurons. :func:`read_netx` refuses it unless asked to do the
  same (``skip_input_neurons=True``).
* ``dense``: ``weight (n_out, n_in)``, ``shape [n_out]``, ``inFeatures``/``outFeatures`` (checked
  against the weight), optional ``bias`` and ``delay``; ``conv``: ``weight (C_out, C_in/groups, kH,
  kW)`` (torch layout), ``shape [C, H, W]``, ``stride``/``padding``/``dilation`` (one integer or a
  ``(y, x)`` pair), ``groups``, ``inChannels``/``outChannels``/``kernelSize`` (checked), optional
  ``bias``/``delay``; ``flatten`` (optional ``shape``); ``pool`` and ``average`` are written by
  lava-dl (``average`` only up to its ``type``: the block's writer fails after it) but netx raises
  ``NotImplementedError`` for both, so they are refused by name.
* ``bias`` (a slayer ``MeanOnlyBatchNorm``'s bias: ``-running_mean`` in weight units): netx makes it
  the neurons' ``bias_mant`` (``astype(int32)``: truncated toward zero) with ``bias_exp = 6``, one per
  neuron (dense) or per channel (conv), added to ``v`` every step.
* ``delay``: netx gives a dense layer's synapses delays (``DelaySparse``/``DelayDense``): a scalar for
  all, a vector of ``n_out`` entries per *postsynaptic* neuron (one row each; checked before ``n_in``
  when ``n_out == n_in``), of ``n_in`` per presynaptic neuron (one column each), or a matrix; values
  above 62 it clamps (this reader refuses them). slayer writes its block's output (axonal) delay
  there. A conv layer's ``delay`` netx ignores.
* ``neuron``: ``CUBA``/``LOIHI`` (netx's LIF: ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``;
  netx ignores ``refDelay`` and ``gradedSpike``, so values our LIF does not have are refused), or
  ``SDNN`` (``vThMant``, ``activation``: Lava's ``SigmaDelta``), read as ``activation = "sdnn"``
  (``loihi-sim`` runs them as netx does: ``export/lava_sim.py``, ``_sigma_delta_population``).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from dpap_deploy.ir import NetworkIR

_LAYER_KEYS = {"type", "shape", "weight", "neuron", "bias", "delay"}
_DENSE_KEYS = _LAYER_KEYS | {"inFeatures", "outFeatures"}
_CONV_KEYS = _LAYER_KEYS | {"stride", "padding", "dilation", "groups", "inChannels", "outChannels", "kernelSize"}
#: ``weight_exp`` is written by a slayer ``WgtScaleBatchNorm``; netx ignores it, so does this reader
_LIF_KEYS = {"type", "iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike", "weight_exp"}
_SDNN_KEYS = {"type", "vThMant", "activation"}
MAX_DELAY = 62  # lava-dl netx: larger delays are clamped (netx/hdf5.py create_dense, max_delay=62)
#: layer types lava-dl writes but netx 0.6.0 cannot run (``Network._create`` raises NotImplementedError)
NOT_RUN_BY_NETX = ("pool", "average", "convT", "unpool", "concat")


def _unsupported():
    from dpap_deploy.errors import UnsupportedLayerError

    return UnsupportedLayerError


class _NetxFile:
    """Typed access to the groups and datasets of one open netx file; every failure is a
    :class:`NetworkFileError` naming the file and the group/key."""

    def __init__(self, path: str, f):
        self.path, self.f = path, f

    def fail(self, where: str, what: str, kind=None):
        from dpap_deploy.errors import NetworkFileError

        raise (kind or NetworkFileError)(f"{self.path}: {where}: {what}")

    def _child(self, parent, key: str, where: str, group: bool):
        """``parent[key]``, which must exist and be a group (``group``) or a dataset."""
        import h5py

        if key not in parent:
            self.fail(where, f"missing {'group' if group else 'key'} {key!r}")
        c = parent[key]
        if isinstance(c, h5py.Group) != group:
            self.fail(f"{where}/{key}", "is a dataset; expected a group" if group else "is a group; expected a dataset")
        return c

    def group(self, parent, key: str, where: str):
        return self._child(parent, key, where, True)

    def value(self, g, key: str, where: str):
        return self._child(g, key, where, False)[()]

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

    def flag(self, g, key: str, where: str) -> int:
        """A 0/1 flag: a bool (lava-dl's writer) or an integer 0 or 1 (ours)."""
        v = np.asarray(self.value(g, key, where))
        if v.dtype.kind == "b" and v.size == 1:
            return int(bool(v.reshape(-1)[0]))
        return self.scalar(g, key, where, 0, 1)

    def pair(self, g, key: str, where: str, lo: int) -> int:
        """One integer, or lava-dl's ``(y, x)`` pair with equal entries (our IR has one per layer)."""
        v = self.integers(g, key, where)
        if v.size == 2 and v.reshape(-1)[0] != v.reshape(-1)[1]:
            self.fail(f"{where}/{key}", f"= {v.tolist()}; this reader takes the same {key} in both directions",
                      _unsupported())
        if v.size not in (1, 2) or v.reshape(-1)[0] < lo:
            self.fail(f"{where}/{key}", f"= {v.tolist()}; expected one integer >= {lo} (or two equal ones)")
        return int(v.reshape(-1)[0])

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


def read_netx(path: str, skip_input_neurons: bool = False) -> NetworkIR:
    """Read a netx HDF5 file (our :func:`~dpap_deploy.export.netx.write_netx`'s or lava-dl's own) into a
    quantised IR, as lava-dl netx would run it (module docstring).

    The file's integer parameters become each layer's :class:`~dpap_deploy.ir.FixedPoint`
    (``weight`` ``(n_out, n_in)`` or ``(C_out, C_in/groups, kH, kW)`` int32, ``weight_exp = 0``,
    ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``, ``bias_mant`` with ``bias_exp = 6``); the float
    side is derived from them: ``tau_syn = 4096 dt / iDecay`` and ``tau_mem = 4096 dt / vDecay`` (s),
    ``v_th = vth / scale``, ``bias = bias_mant / scale`` and ``weight = w_int / (scale * dt / tau_mem)``
    (Norse units). ``delay`` becomes the layer's ``(n_out, n_in)`` integer delays (time steps). SDNN
    layers get ``activation = "sdnn"`` and :class:`~dpap_deploy.ir.SigmaDeltaNeurons`. ``scale``, layer
    names, ``dense_shape``, ``pool_fold``, ``time_steps`` and ``dt_s`` come from our attributes when the
    file has them (third-party files: ``scale = 1``, names ``fc<k>``/``conv<k>``, the dense shape is the
    file's, ``T = 1``, ``dt = 1 ms``). The mask is the non-zero weights.

    Args:
        skip_input_neurons: drop the neurons of an ``input`` group that has them, as lava-dl's
            ``Network(..., skip_layers=1)`` does (default: refuse such a file).

    Raises:
        NetworkFileError: the file is missing, not HDF5, truncated, lacks a group or key, has
            a wrong shape or dtype, or layer sizes that do not chain (names file and group/key).
        UnsupportedLayerError: a layer or neuron type, a key or a value this reader (or netx) does not
            handle (names the group, the key and what is supported).
    """
    import h5py

    from dpap_deploy.errors import DpapError, NetworkFileError, UnsupportedLayerError

    if not os.path.isfile(path):
        raise NetworkFileError(f"{path}: netx file does not exist")
    where = ["/"]  # the group being read, for messages
    try:
        with h5py.File(path, "r") as f:
            return _read_netx_file(_NetxFile(path, f), f, path, where, skip_input_neurons)
    except DpapError as exc:
        if isinstance(exc, (NetworkFileError, UnsupportedLayerError)):
            raise
        raise NetworkFileError(f"{path}: {where[0]}: {exc}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py on truncated/foreign files
        raise NetworkFileError(f"{path}: {where[0]}: not a readable netx HDF5 file ({type(exc).__name__}: {exc})") from None


def _layer_groups(r: _NetxFile, f) -> list:
    """The groups of ``layer/`` in order, checked to be numbered ``0..n-1``."""
    layers_g = r.group(f, "layer", "/")
    keys = list(layers_g.keys())
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        r.fail("layer", f"groups {sorted(keys)[:8]} are not numbered 0..{len(keys) - 1}")
    if not keys:
        r.fail("layer", "has no groups; expected at least one layer")
    return [r.group(layers_g, str(k), "layer") for k in range(len(keys))]


def _input_shape(r: _NetxFile, groups: list, skip_input_neurons: bool) -> tuple:
    """``(in_shape or None, first layer index)``: the ``input`` group's shape, or None when the file starts
    with a layer (its input size then comes from that layer's weight)."""
    g0 = groups[0]
    if r.text(g0, "type", "layer/0") != "input":
        return None, 0
    if "neuron" in g0 and not skip_input_neurons:
        r.fail("layer/0/neuron", "an input layer with neurons is not supported: lava-dl netx cannot run it (its "
               "Input block never feeds the input to those neurons; lava-dl loads such files with skip_layers=1); "
               "dpap-report --skip-input-neurons (read_netx(..., skip_input_neurons=True)) drops them the same way",
               _unsupported())
    extra = sorted(set(g0.keys()) - {"type", "shape", "neuron", "weight", "bias"})
    if extra:
        r.fail("layer/0", f"key {extra[0]!r} of an input layer is not supported (keys it takes: type, shape)",
               _unsupported())
    in_shape = tuple(int(v) for v in r.integers(g0, "shape", "layer/0", ndim=1))
    if len(in_shape) not in (1, 3) or min(in_shape) < 1:
        r.fail("layer/0/shape", f"= {list(in_shape)}; expected [F] or [C, H, W] of positive sizes")
    if len(groups) < 2:
        r.fail("layer", "has only the input group; expected at least one layer")
    return in_shape, 1


def _read_netx_file(r: _NetxFile, f, path: str, where: list, skip_input_neurons: bool = False) -> NetworkIR:
    """The network of an open netx file (see :func:`read_netx`); ``where[0]`` follows the group read."""
    from dpap_deploy.ir import Flatten

    T = r.attr(f, "time_steps", "/", int, 1)
    dt = r.attr(f, "dt_s", "/", float, 1e-3)
    name = r.attr(f, "name", "/", str, os.path.splitext(os.path.basename(path))[0])
    groups = _layer_groups(r, f)
    where[0] = "layer/0"
    in_shape, first = _input_shape(r, groups, skip_input_neurons)
    shape, nodes, flattened = in_shape, [], False
    for k in range(first, len(groups)):
        where[0] = f"layer/{k}"
        g = groups[k]
        kind = r.text(g, "type", where[0])
        if kind == "flatten":
            if shape is None or len(shape) != 3:
                r.fail(where[0], f"flatten after a layer of shape {list(shape or [])}; expected a [C, H, W] map")
            nodes.append(Flatten("flatten", shape))  # named after the layer it feeds, below
            shape, flattened = (int(np.prod(shape)),), True
            continue
        if kind in NOT_RUN_BY_NETX:
            r.fail(where[0], f"layer type {kind!r} is not supported: lava-dl netx cannot run it (it raises "
                   "NotImplementedError); this reader takes input, dense, conv and flatten", _unsupported())
        if kind not in ("dense", "conv"):
            r.fail(where[0], f"layer type {kind!r} is not supported; this reader takes input, dense, conv and "
                   "flatten", _unsupported())
        if flattened and kind == "conv":
            r.fail(where[0], "conv layer after a flatten; expected conv layers first")
        if shape is None and kind == "conv":
            r.fail(where[0], "a conv layer first without an input group: the input's [C, H, W] is unknown "
                   "(lava-dl netx cannot infer it either)")
        node = _read_netx_layer(r, g, where[0], kind, shape, sum(n.kind != "flatten" for n in nodes) + 1, dt)
        if shape is None:
            in_shape = shape = (node.n_in,)
        if nodes and nodes[-1].kind == "flatten":
            nodes[-1] = Flatten(f"{node.name}_flatten", nodes[-1].in_shape)
        nodes.append(node)
        shape = node.out_shape if kind == "conv" else (node.n_out,)
    if nodes and nodes[-1].kind == "flatten":
        r.fail(where[0], "the file ends with a flatten; expected a last dense or conv layer")
    names = [n.name for n in nodes if n.kind != "flatten"]
    if len(set(names)) != len(names):
        r.fail("layer", f"layer names {names} are not unique")
    where[0] = "/"
    return NetworkIR(name=name, input_size=int(np.prod(in_shape)), time_steps=T, dt_s=dt, nodes=nodes,
                     metadata={"read_from": path, "format": "netx",
                               **({"input_neurons_skipped": True} if first and "neuron" in groups[0] else {})},
                     input_shape=in_shape if len(in_shape) == 3 else None)


def _check_keys(r: _NetxFile, g, where: str, allowed: set, what: str) -> None:
    extra = sorted(set(g.keys()) - allowed)
    if extra:
        r.fail(where, f"key {extra[0]!r} of {what} is not supported (keys it takes: {', '.join(sorted(allowed))})",
               _unsupported())


def _check_count(r: _NetxFile, g, key: str, where: str, want: int) -> None:
    """lava-dl's informative size keys (``inFeatures`` ...) must agree with the weight."""
    if key in g and r.scalar(g, key, where, 0) != want:
        r.fail(f"{where}/{key}", f"= {r.scalar(g, key, where, 0)}; the weight gives {want}")


def _dense_weight(r: _NetxFile, g, where: str, shape: Optional[tuple]) -> np.ndarray:
    """A dense group's integer weight ``(n_out, n_in)``, checked against ``shape``, its input."""
    _check_keys(r, g, where, _DENSE_KEYS, "a dense layer")
    w = r.integers(g, "weight", where, ndim=2)
    n_in = w.shape[1] if shape is None else int(np.prod(shape))
    if w.shape[1] != n_in:
        r.fail(f"{where}/weight", f"has shape {w.shape}: takes {w.shape[1]} inputs but the layer before gives {n_in}")
    out_shape = tuple(int(v) for v in r.integers(g, "shape", where, ndim=1))
    if int(np.prod(out_shape)) != w.shape[0] or len(out_shape) not in (1, 3):
        r.fail(f"{where}/shape", f"= {list(out_shape)}; the weight {w.shape} gives [{w.shape[0]}]")
    _check_count(r, g, "inFeatures", where, w.shape[1])
    _check_count(r, g, "outFeatures", where, w.shape[0])
    return w


def _conv_weight(r: _NetxFile, g, where: str, shape: tuple) -> tuple:
    """A conv group's integer kernel, geometry ``{stride, padding, dilation, groups}`` and output shape
    ``(C, H, W)``, checked."""
    _check_keys(r, g, where, _CONV_KEYS, "a conv layer")
    w = r.integers(g, "weight", where, ndim=4)
    geo = {"stride": r.pair(g, "stride", where, 1), "padding": r.pair(g, "padding", where, 0),
           "dilation": r.pair(g, "dilation", where, 1) if "dilation" in g else 1,
           "groups": r.scalar(g, "groups", where, 1) if "groups" in g else 1}
    if len(shape) != 3 or w.shape[1] * geo["groups"] != shape[0] or w.shape[0] % geo["groups"]:
        r.fail(f"{where}/weight", f"has shape {w.shape}: takes {w.shape[1]} channels x {geo['groups']} groups but "
               f"the layer before gives {list(shape)}")
    d = geo["dilation"]
    want = (w.shape[0],) + tuple((shape[1 + a] + 2 * geo["padding"] - d * (w.shape[2 + a] - 1) - 1) // geo["stride"] + 1
                                 for a in (0, 1))
    out_shape = tuple(int(v) for v in r.integers(g, "shape", where, ndim=1))
    if min(want) < 1 or out_shape != want:
        r.fail(f"{where}/shape", f"= {list(out_shape)}; a {w.shape} kernel with stride {geo['stride']}, padding "
               f"{geo['padding']}, dilation {d} on {list(shape)} gives {list(want)}")
    _check_count(r, g, "inChannels", where, shape[0])
    _check_count(r, g, "outChannels", where, w.shape[0])
    if "kernelSize" in g and tuple(r.integers(g, "kernelSize", where).reshape(-1).tolist()) not in (
            tuple(w.shape[2:]), (w.shape[2],) * (w.shape[2] == w.shape[3])):
        r.fail(f"{where}/kernelSize", f"= {r.integers(g, 'kernelSize', where).tolist()}; the weight gives "
               f"{list(w.shape[2:])}")
    return w, geo, want


def _bias(r: _NetxFile, g, where: str, n: int) -> Optional[np.ndarray]:
    """``bias`` as netx's ``bias_mant`` ``(n,)`` int64 (``astype(int32)``: truncated toward zero; one value
    broadcast), or None."""
    if "bias" not in g:
        return None
    v = np.asarray(r.value(g, "bias", where))
    if v.dtype.kind not in "iuf" or not np.all(np.isfinite(v)) or v.size not in (1, n):
        r.fail(f"{where}/bias", f"has shape {v.shape}, dtype {v.dtype}; expected {n} finite numbers (one per neuron "
               "or channel) or one")
    if np.abs(v).max(initial=0) >= 2 ** 12:
        r.fail(f"{where}/bias", f"values up to {np.abs(v).max():g} exceed Lava's 13-bit bias_mant (|b| < 4096)")
    return np.broadcast_to(np.trunc(v).astype(np.int64).reshape(-1), (n,)).copy()


def _dense_delay(r: _NetxFile, g, where: str, w: np.ndarray) -> Optional[np.ndarray]:
    """``delay`` of a dense group as netx expands it: ``(n_out, n_in)`` int64 time steps (module docstring)."""
    if "delay" not in g:
        return None
    d = r.integers(g, "delay", where)
    n_out, n_in = w.shape
    if d.size and (d.min() < 0 or d.max() > MAX_DELAY):
        r.fail(f"{where}/delay", f"values {d.min()}..{d.max()}; expected 0..{MAX_DELAY} time steps (netx clamps "
               "larger ones, Loihi 2 synapses hold 6 bits)")
    if d.size == 1:
        return np.full(w.shape, int(d.reshape(-1)[0]), np.int64)
    if d.ndim == 1 and d.size == n_out:  # netx checks this first: one delay per postsynaptic neuron (a row)
        return np.repeat(d.reshape(-1, 1), n_in, axis=1)
    if d.ndim == 1 and d.size == n_in:  # one per presynaptic neuron (a column)
        return np.repeat(d.reshape(1, -1), n_out, axis=0)
    if d.shape != w.shape:
        r.fail(f"{where}/delay", f"has shape {d.shape}; netx takes one value, [{n_out}] (per neuron), [{n_in}] (per "
               f"input) or {list(w.shape)}")
    return d


def _conv_delay(r: _NetxFile, g, where: str, out_shape: tuple) -> Optional[np.ndarray]:
    """``delay`` of a conv group, ``(C, H, W)`` int64 per output neuron (one per channel broadcast), or None.
    netx ignores it; the IR keeps it so the simulators refuse the layer instead of dropping it."""
    if "delay" not in g:
        return None
    d = r.integers(g, "delay", where)
    if d.size and d.min() < 0:
        r.fail(f"{where}/delay", f"values {d.min()}..{d.max()}; expected time steps >= 0")
    if d.size == out_shape[0]:
        return np.broadcast_to(d.reshape(-1, 1, 1), out_shape).astype(np.int64)
    if d.size != int(np.prod(out_shape)):
        r.fail(f"{where}/delay", f"has {d.size} values; expected {out_shape[0]} (per channel) or "
               f"{int(np.prod(out_shape))} (per neuron)")
    return d.reshape(out_shape)


def _neuron(r: _NetxFile, g, where: str):
    """The ``neuron`` group: ``("lif", (iDecay, vDecay, vThMant))`` for CUBA/LOIHI, ``("sdnn", SigmaDeltaNeurons)``."""
    from dpap_deploy.ir import SigmaDeltaNeurons

    nw = where + "/neuron"
    n = r.group(g, "neuron", where)
    ntype = r.text(n, "type", nw)
    if ntype == "SDNN":
        _check_keys(r, n, nw, _SDNN_KEYS, "an SDNN neuron")
        act = r.text(n, "activation", nw) if "activation" in n else "relu"
        return "sdnn", SigmaDeltaNeurons(vth=r.scalar(n, "vThMant", nw, 0, 2**31 - 1), activation=act)
    if ntype not in ("CUBA", "LOIHI"):
        r.fail(nw, f"neuron type {ntype!r} is not supported; this reader takes CUBA, LOIHI and SDNN", _unsupported())
    _check_keys(r, n, nw, _LIF_KEYS, f"a {ntype} neuron")
    for key, want_v in (("refDelay", 1), ("gradedSpike", 0)):  # netx ignores both: refuse what our LIF lacks
        got = (r.flag if key == "gradedSpike" else lambda *a: r.scalar(*a, 0))(n, key, nw) if key in n else want_v
        if got != want_v:
            r.fail(f"{nw}/{key}", f"= {got}; our LIF has {key} {want_v} only (lava-dl netx would ignore it and run "
                   "a different neuron)", _unsupported())
    return "lif", (r.scalar(n, "iDecay", nw, 1, 4096), r.scalar(n, "vDecay", nw, 1, 4096),
                   r.scalar(n, "vThMant", nw, 1, 2**31 - 1))


def _read_netx_layer(r: _NetxFile, g, where: str, kind: str, shape: Optional[tuple], n_layer: int, dt: float):
    """One ``dense`` or ``conv`` group and its ``neuron`` group as an IR layer with its fixed point."""
    from dpap_deploy.ir import ConvLayer, FCLayer, FixedPoint, LIFNeurons

    lname = r.attr(g, "name", where, str, f"{'fc' if kind == 'dense' else 'conv'}{n_layer}")
    if kind == "dense":
        w = _dense_weight(r, g, where, shape)
        delay, geo, n_bias = _dense_delay(r, g, where, w), {}, w.shape[0]
    else:
        w, geo, out_shape = _conv_weight(r, g, where, shape)
        delay, n_bias = _conv_delay(r, g, where, out_shape), w.shape[0]
    bias_mant = _bias(r, g, where, n_bias)
    activation, params = _neuron(r, g, where)
    scale = r.attr(g, "scale", where, float, 1.0)
    dense_shape = r.attr(g, "dense_shape", where, tuple, tuple(w.shape[:2]))
    pool_fold = r.attr(g, "pool_fold", where, int, 1)
    if activation == "lif":
        i_decay, v_decay, vth = params
        neurons, sd = LIFNeurons(tau_syn_s=4096 * dt / i_decay, tau_mem_s=4096 * dt / v_decay, v_th=vth / scale), None
        fixed = FixedPoint(weight=w.astype(np.int32), weight_exp=0, du=i_decay - 1, dv=v_decay, vth=vth, scale=scale)
        w_float = w / (scale * v_decay / 4096)
    else:  # sigma-delta: no decays; the weights stay in the file's units
        neurons, sd, w_float = None, params, w.astype(np.float64)
        fixed = FixedPoint(weight=w.astype(np.int32), weight_exp=0, du=0, dv=0, vth=params.vth, scale=scale)
    if bias_mant is not None:
        fixed = FixedPoint(**{**fixed.__dict__, "bias_mant": bias_mant, "bias_exp": 6})  # netx: bias_exp 6
    common = dict(neurons=neurons, dense_shape=dense_shape, fixed=fixed, pool_fold=pool_fold, activation=activation,
                  sigma_delta=sd, bias=None if bias_mant is None else bias_mant / scale)
    if kind == "dense":
        return FCLayer(lname, w_float, w != 0, delay=delay, **common)
    return ConvLayer(lname, w_float, np.any(w != 0, axis=(2, 3)), in_shape=shape, delay=delay, **geo, **common)
