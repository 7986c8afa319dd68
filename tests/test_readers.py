"""read_netx / read_nir: our own files come back as the IR they were written from (where the
format keeps it), and anything else is a typed error naming the file and the group/node."""
import h5py
import nir
import numpy as np
import pytest
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import NetworkFileError, UnsupportedLayerError
from dpap_deploy.export import get_target
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.netx import read_netx, write_netx
from dpap_deploy.export.nir_export import read_nir, to_nir
from dpap_deploy.export.quantize import quantize
from dpap_deploy.train.compact import compact, to_ir
from dpap_deploy.train.models import SpikingCNN
from test_nir import _pruned_model


@pytest.fixture(scope="module")
def mlp():
    """A DPAP-style pruned, compacted Norse MLP (64-16-12-10) as our float IR, T = 8."""
    return to_ir(_pruned_model(), 8)


@pytest.fixture(scope="module")
def cnn():
    return cnn_ir()


def cnn_ir():
    """A channel-pruned, compacted conv SNN (2x20x20 -> conv 4 -> conv 5 (pool folded) -> fc 16 -> 10), T = 6."""
    torch.manual_seed(0)
    m = SpikingCNN((2, 20, 20), (4, 6), (16,), 10)
    with torch.no_grad():
        for g, layer in zip((2.0, 3.0, 6.0, 5.0), m.layers):
            layer.weight.mul_(g)
        m.masks[1][:, 1] = False
        m.masks[1][5] = False
        m.apply_masks()
    return to_ir(compact(m)[0], 6)


def _same_structure(a, b):
    assert (b.name, b.input_size, b.time_steps, b.dt_s, b.input_shape) == \
        (a.name, a.input_size, a.time_steps, a.dt_s, a.input_shape)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert (lb.name, lb.kind, lb.n_in, lb.n_out, lb.dense_shape, lb.pool_fold) == \
            (la.name, la.kind, la.n_in, la.n_out, la.dense_shape, la.pool_fold)
        if la.kind == "conv":
            assert (lb.in_shape, lb.stride, lb.padding, lb.out_shape) == (la.in_shape, la.stride, la.padding, la.out_shape)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_netx_round_trip(tmp_path, request, which):
    q = quantize(request.getfixturevalue(which), min_vth=1)  # what target netx writes: weight_exp 0
    write_netx(q, str(tmp_path / "n.net"))
    r = read_netx(str(tmp_path / "n.net"))
    _same_structure(q, r)
    assert r.quantized and r.metadata["format"] == "netx"
    for a, b in zip(q.layers, r.layers):
        fa, fb = a.fixed, b.fixed
        np.testing.assert_array_equal(fb.weight, a.masked_weight(fixed=True))  # the integers, exactly
        assert (fb.weight_exp, fb.du, fb.dv, fb.vth) == (fa.weight_exp, fa.du, fa.dv, fa.vth)
        assert fb.scale == pytest.approx(fa.scale, rel=1e-12)
        # the float side from the registers: within their 12-bit / threshold rounding
        assert b.neurons.tau_syn_s == pytest.approx(a.neurons.tau_syn_s, rel=2e-3)
        assert b.neurons.tau_mem_s == pytest.approx(a.neurons.tau_mem_s, rel=2e-3)
        assert b.neurons.v_th == pytest.approx(a.neurons.v_th, rel=1 / fa.vth + 1e-9)
        step = 2 / (fa.scale * fa.dv / 4096)  # one even-integer step in Norse units
        assert np.abs(b.masked_weight() - a.masked_weight()).max() <= step
        kept = a.mask & np.any(a.masked_weight(fixed=True) != 0, axis=(2, 3)) if a.kind == "conv" \
            else a.mask & (fa.weight != 0)
        np.testing.assert_array_equal(b.mask, kept)


def test_netx_read_back_runs_with_the_same_spikes(tmp_path, mlp, digits):
    q = quantize(mlp, min_vth=1)
    write_netx(q, str(tmp_path / "n.net"))
    x = rate_encode(digits.x_test[:20], 8, seed=2)
    want, _ = emulate(q, x)
    got, _ = emulate(read_netx(str(tmp_path / "n.net")), x)
    assert want.sum() > 10, "the test needs output spikes"
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_nir_round_trip(tmp_path, request, which):
    ir = request.getfixturevalue(which)
    get_target("nir")(ir, str(tmp_path))
    r = read_nir(str(tmp_path / "network.nir"))
    _same_structure(ir, r)
    assert not r.quantized and r.metadata["format"] == "nir"
    for a, b in zip(ir.layers, r.layers):
        np.testing.assert_array_equal(b.weight, a.masked_weight())  # float32, exactly
        np.testing.assert_array_equal(b.mask, a.mask if a.kind == "fc" else np.any(a.masked_weight() != 0, axis=(2, 3)))
        for key in ("tau_syn_s", "tau_mem_s", "v_th", "v_leak", "v_reset"):  # float32 in the file
            assert getattr(b.neurons, key) == pytest.approx(getattr(a.neurons, key), rel=1e-7, abs=0)


def test_nir_file_without_our_metadata(tmp_path, mlp):
    """A third party's graph of the same structure: dt from tau_syn / w_in, T = 1, names from the nodes."""
    g = to_nir(mlp)
    g.metadata = {}
    nir.write(str(tmp_path / "theirs.nir"), g)
    r = read_nir(str(tmp_path / "theirs.nir"))
    assert r.dt_s == pytest.approx(mlp.dt_s, rel=1e-6) and r.time_steps == 1 and r.name == "theirs"
    assert [l.name for l in r.layers] == ["fc1", "fc2", "fc3"]
    assert [l.dense_shape for l in r.layers] == [l.weight.shape for l in mlp.layers]


# -- netx: what is wrong, where ---------------------------------------------------------------
NETX_CASES = [
    (lambda f: f.__delitem__("layer/1/weight"), NetworkFileError, "layer/1: missing key 'weight'"),
    (lambda f: f.__delitem__("layer/2/neuron"), NetworkFileError, "layer/2: missing group 'neuron'"),
    (lambda f: f.__delitem__("layer"), NetworkFileError, "/: missing group 'layer'"),
    (lambda f: f.move("layer/2", "layer/7"), NetworkFileError, "are not numbered 0..3"),
    (lambda f: _replace(f, "layer/1/weight", f["layer/1/weight"][()] + 0.5), NetworkFileError,
     "layer/1/weight: holds non-integer values; expected integers"),
    (lambda f: _replace(f, "layer/2/weight", f["layer/2/weight"][()][:, :-1]), NetworkFileError,
     "layer/2/weight: has shape (12, 15): takes 15 inputs but the layer before gives 16"),
    (lambda f: _replace(f, "layer/1/weight", f["layer/1/weight"][()][None]), NetworkFileError,
     "layer/1/weight: has shape (1, 16, 64); expected 2 dimension(s)"),
    (lambda f: _replace(f, "layer/3/shape", np.array([11])), NetworkFileError, "layer/3/shape: = [11]; the weight (10, 12)"),
    (lambda f: _replace(f, "layer/1/weight", np.full((16, 64), b"ab")), NetworkFileError,
     "layer/1/weight: has dtype |S2; expected integers"),
    (lambda f: _replace(f, "layer/1/neuron/iDecay", np.int64(0)), NetworkFileError, "layer/1/neuron/iDecay: = 0; expected 1..4096"),
    (lambda f: _replace(f, "layer/1/neuron/type", np.array([b"SDNN"])), UnsupportedLayerError,
     "layer/1/neuron: key 'gradedSpike' of an SDNN neuron is not supported"),
    (lambda f: _replace(f, "layer/1/neuron/type", np.array([b"ALIF"])), UnsupportedLayerError,
     "layer/1/neuron: neuron type 'ALIF' is not supported; this reader takes CUBA, LOIHI and SDNN"),
    (lambda f: _replace(f, "layer/2/type", np.array([b"average"])), UnsupportedLayerError,
     "layer/2: layer type 'average' is not supported: lava-dl netx cannot run it"),
    (lambda f: _replace(f, "layer/2/type", np.array([b"recurrent"])), UnsupportedLayerError,
     "layer/2: layer type 'recurrent' is not supported"),
    (lambda f: f["layer/1"].create_dataset("delay", data=np.zeros(7)), NetworkFileError,
     "layer/1/delay: has shape (7,); netx takes one value, [16] (per neuron), [64] (per input) or [16, 64]"),
    (lambda f: f["layer/1"].create_dataset("delay", data=np.full(16, 63)), NetworkFileError,
     "layer/1/delay: values 63..63; expected 0..62 time steps"),
    (lambda f: f["layer/1"].create_dataset("bias", data=np.zeros(3)), NetworkFileError,
     "layer/1/bias: has shape (3,), dtype float64; expected 16 finite numbers"),
    (lambda f: f["layer/1"].create_dataset("recurrent", data=np.zeros(3)), UnsupportedLayerError,
     "layer/1: key 'recurrent' of a dense layer is not supported (keys it takes: bias, delay, inFeatures"),
    (lambda f: _replace(f, "layer/1/neuron/refDelay", np.int64(3)), UnsupportedLayerError,
     "layer/1/neuron/refDelay: = 3; our LIF has refDelay 1 only"),
    (lambda f: f.attrs.__setitem__("dt_s", -1.0), NetworkFileError, "/: attribute 'dt_s' = -1.0; expected a positive float"),
]


def _replace(f, key, value):
    del f[key]
    f.create_dataset(key, data=value)


@pytest.mark.parametrize("edit,kind,message", NETX_CASES)
def test_netx_reader_names_what_is_wrong(tmp_path, mlp, edit, kind, message):
    path = tmp_path / "n.net"
    write_netx(quantize(mlp, min_vth=1), str(path))
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(kind) as e:
        read_netx(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_netx_reader_on_files_that_are_not_netx(tmp_path):
    with pytest.raises(NetworkFileError, match="x.net: netx file does not exist"):
        read_netx(str(tmp_path / "x.net"))
    nir.write(str(tmp_path / "x.net"), nir.NIRGraph(nodes={"i": nir.Input(input_type={"input": np.array([2])})},
                                                     edges=[], type_check=False))
    with pytest.raises(NetworkFileError, match="x.net: /: missing group 'layer'"):
        read_netx(str(tmp_path / "x.net"))


# -- NIR: what is wrong, where ----------------------------------------------------------------
def _lif(n, **over):
    p = dict(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n),
             v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.full(n, 5.0))
    p.update(over)
    return nir.CubaLIF(**{k: np.asarray(v, dtype=np.float32) for k, v in p.items()})


def _graph(*middle, edges=None, n_in=4):
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), **dict(middle),
             "output": nir.Output(output_type={"output": np.array([3])})}
    names = list(nodes)
    edges = edges if edges is not None else list(zip(names[:-1], names[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt_s": 1e-3}, type_check=False)


W = np.arange(12, dtype=np.float32).reshape(3, 4) - 5

NIR_CASES = [
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3))), None, None),  # valid: reads
    (_graph(("fc1", nir.Linear(weight=W)), ("lif", nir.Delay(delay=np.ones(3)))),
     UnsupportedLayerError, "node 'lif' has type Delay, which this reader does not handle"),
    (_graph(("fc1", nir.Affine(weight=W, bias=np.ones(2, np.float32))), ("fc1_lif", _lif(3))),
     NetworkFileError, "node 'fc1': bias (2,) must be (3,) finite numbers"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3, tau_mem=[1e-2, 2e-2, 1e-2]))),
     UnsupportedLayerError, "node 'fc1_lif': tau_mem differs between neurons (0.01..0.02)"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3, r=np.zeros(3)))),
     NetworkFileError, "node 'fc1_lif': r = 0, w_in = 5; both must be > 0"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3, tau_syn=np.full(3, np.nan)))),
     NetworkFileError, "node 'fc1_lif': tau_syn is empty or not finite"),
    (_graph(("fc1", nir.Linear(weight=W))), NetworkFileError, "node 'fc1' has no neuron node after it"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3)), n_in=5),
     NetworkFileError, "node 'fc1': weight (3, 4) takes 4 inputs but the node before gives [5]"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3)),
            edges=[("input", "fc1"), ("input", "fc1_lif"), ("fc1", "output")]),
     UnsupportedLayerError, "node 'input' (Input) has two outputs (a branch): 'fc1' and 'fc1_lif'; this reader "
                            "takes a chain"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3)), edges=[("input", "fc1"), ("fc1", "ghost")]),
     NetworkFileError, "names node 'ghost', which the graph does not have"),
    (_graph(("fc1", nir.Linear(weight=W)), ("fc1_lif", _lif(3)), edges=[("input", "fc1"), ("fc1", "fc1_lif")]),
     NetworkFileError, "node 'fc1_lif' has no outgoing edge"),
]


@pytest.mark.parametrize("graph,kind,message", NIR_CASES)
def test_nir_reader_names_what_is_wrong(tmp_path, graph, kind, message):
    path = tmp_path / "g.nir"
    nir.write(str(path), graph)
    if kind is None:
        r = read_nir(str(path))
        np.testing.assert_array_equal(r.layers[0].weight, W)
        assert r.layers[0].neurons.tau_mem_s == pytest.approx(1e-2)
        return
    with pytest.raises(kind) as e:
        read_nir(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
