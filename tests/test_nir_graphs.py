"""NIR graphs of other frameworks (norse 1.1.0, snnTorch 1.0.0, sinabs 3.1.3; tests/data/nir/README.md):
read into our IR (chains with recurrent loops), run, refused where we cannot take them.

Expected values come from the files themselves (``nir.read``) and NIR's equations, or from
Norse's own reader (``norse.torch.from_nir``), never from the code under test."""
import os

import nir
import numpy as np
import pytest

from dpap_deploy.errors import IRError, NetworkFileError, UnsupportedLayerError
from dpap_deploy.export.float_sim import run_float
from dpap_deploy.export.nir_export import read_nir, run_in_norse
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR

DATA = os.path.join(os.path.dirname(__file__), "data", "nir")


def _braille() -> str:
    import norse

    return os.path.join(os.path.dirname(norse.__file__), "torch", "utils", "test", "braille.nir")


def _path(name: str) -> str:
    return _braille() if name == "braille" else os.path.join(DATA, f"{name}.nir")


def _raw(name: str):
    return nir.read(_path(name), type_check=False)


# file -> per layer (name, kind, neuron variant, recurrent?) and the readout; written down from what each
# writer was given in tests/data/nir/make_files.py (and braille.nir's documented structure)
STRUCTURE = {
    "norse_lif": ([("0", "fc", "lif", False), ("2", "fc", "lif", False)], "spike_count"),
    "norse_cubalif": ([("0", "fc", "cuba_lif", False), ("2", "fc", "cuba_lif", False)], "spike_count"),
    "norse_if": ([("0", "fc", "if", False), ("2", "fc", "if", False)], "spike_count"),
    "norse_li": ([("0", "fc", "lif", False), ("2", "fc", "li", False)], "membrane"),
    "norse_conv": ([("0", "conv", "lif", False), ("2", "conv", "lif", False)], "spike_count"),
    "braille": ([("fc1", "fc", "cuba_lif", True), ("fc2", "fc", "cuba_lif", False)], "spike_count"),
    "snntorch_ff": ([("0", "fc", "lif", False), ("2", "fc", "cuba_lif", False)], "spike_count"),
    "snntorch_rleaky": ([("0", "fc", "lif", True), ("2", "fc", "lif", False)], "spike_count"),
    "snntorch_rsynaptic": ([("0", "fc", "cuba_lif", True), ("2", "fc", "cuba_lif", False)], "spike_count"),
    "snntorch_conv": ([("0", "conv", "lif", False), ("4", "fc", "lif", False)], "spike_count"),
    "snntorch_linear": ([("0", "fc", "lif", True), ("2", "fc", "lif", False)], "spike_count"),
    "sinabs_iaf": ([("0", "fc", "if", False), ("2", "fc", "if", False)], "spike_count"),
    "sinabs_lif": ([("0", "fc", "lif", False), ("2", "fc", "li", False)], "membrane"),
    "sinabs_conv": ([("0", "conv", "if", False), ("4", "fc", "if", False)], "spike_count"),
}


@pytest.mark.parametrize("name", sorted(STRUCTURE))
def test_each_framework_file_reads_as_its_structure(name):
    ir = read_nir(_path(name))
    layers, readout = STRUCTURE[name]
    got = [(l.name, l.kind, l.neurons.model(ir.dt_s), getattr(l, "recurrent", None) is not None) for l in ir.layers]
    assert got == layers and ir.readout == readout
    g = _raw(name)
    for l in ir.layers:  # every layer's synapse node and its weight shape, as the file has it
        assert l.weight.shape[0] == np.asarray(g.nodes[l.name].weight).shape[0]


def test_writers_conventions_give_dt():
    """snnTorch writes dt = 1e-4 s into w_in = tau_syn/dt and r = tau/dt; Norse writes neither (1 ms assumed)."""
    assert read_nir(_path("snntorch_rsynaptic")).dt_s == pytest.approx(1e-4, rel=1e-5)
    assert read_nir(_path("snntorch_rleaky")).dt_s == pytest.approx(1e-4, rel=1e-5)   # LIF only: tau / r
    assert read_nir(_path("braille")).dt_s == pytest.approx(1e-4, rel=1e-5)
    ir = read_nir(_path("norse_lif"))
    assert ir.dt_s == 1e-3 and "assumed" in ir.metadata["dt_from"]


def test_recurrent_cubalif_folds_nir_scaling_into_weights():
    """braille.nir: Affine fc1 -> CubaLIF lif1.lif <-> Affine lif1.w_rec. NIR: tau_syn dI/dt = -I + w_in x,
    tau_mem dv/dt = -v + r I; our current is r*I, so every input into it is scaled by r * w_in * dt / tau_syn."""
    g, ir = _raw("braille"), read_nir(_path("braille"))
    lif = g.nodes["lif1.lif"]
    dt = float(lif.tau_syn[0] / lif.w_in[0])
    factor = float(lif.r[0] * lif.w_in[0] * dt / lif.tau_syn[0])
    assert factor == pytest.approx(10.0, rel=1e-4)  # r = tau_mem / dt = 10 in this file
    fc1 = ir.layers[0]
    np.testing.assert_allclose(fc1.weight, g.nodes["fc1"].weight * factor, rtol=1e-5)
    np.testing.assert_allclose(fc1.recurrent, g.nodes["lif1.w_rec"].weight * factor, rtol=1e-5)
    np.testing.assert_allclose(fc1.input_bias, (g.nodes["fc1"].bias + g.nodes["lif1.w_rec"].bias) * factor,
                               rtol=1e-5, atol=1e-6)
    assert fc1.neurons.tau_mem_s == pytest.approx(float(lif.tau_mem[0]))
    assert fc1.neurons.tau_syn_s == pytest.approx(float(lif.tau_syn[0]))


def test_snntorch_rleaky_recurrent_lif():
    """RLeaky: LIF with r = tau/dt = 10 (beta 0.9, dt 1e-4): weights times r, no synaptic memory (tau_syn = dt)."""
    g, ir = _raw("snntorch_rleaky"), read_nir(_path("snntorch_rleaky"))
    l = ir.layers[0]
    np.testing.assert_allclose(l.recurrent, g.nodes["1.w_rec"].weight * 10.0, rtol=1e-4)
    np.testing.assert_allclose(l.weight, g.nodes["0"].weight * 10.0, rtol=1e-4)
    assert l.neurons.tau_mem_s == pytest.approx(1e-4 / (1 - 0.9), rel=1e-4)
    assert l.neurons.tau_syn_s == pytest.approx(ir.dt_s)


def test_linear_nodes_and_a_linear_recurrent_loop():
    """snnTorch writes bias-free layers as Linear and a diagonal RLeaky's V as a Linear loop diag(V);
    r = 10 (beta 0.9, dt 1e-4) scales both."""
    g, ir = _raw("snntorch_linear"), read_nir(_path("snntorch_linear"))
    assert type(g.nodes["0"]).__name__ == type(g.nodes["1.w_rec"]).__name__ == "Linear"
    l = ir.layers[0]
    np.testing.assert_allclose(l.recurrent, np.diag([0.5, -0.3, 0.8, 0.2]) * 10.0, rtol=1e-5)
    assert l.input_bias is None and ir.layers[1].input_bias is None


def test_pooling_folds_into_the_next_layer():
    """sinabs SumPool2d(2) and snnTorch AvgPool2d(2) over a (3, 6, 6) map, then Flatten, then Affine (4, 27):
    one FC layer on the unpooled 108 neurons, each weight on its 2x2 pixels (x1 sum, /4 average)."""
    for name, per_pixel in (("sinabs_conv", 1.0), ("snntorch_conv", 0.25)):
        g, ir = _raw(name), read_nir(_path(name))
        fc = ir.layers[1]
        r = float(np.asarray(g.nodes["5"].r).reshape(-1)[0])
        w = g.nodes["4"].weight.reshape(4, 3, 3, 3)
        assert fc.weight.shape == (4, 108) and fc.pool_fold == 2
        big = fc.weight.reshape(4, 3, 6, 6)
        np.testing.assert_allclose(big[:, :, 2 * 1 + 1, 2 * 2], w[:, :, 1, 2] * per_pixel * r, rtol=1e-5)
        assert [n.kind for n in ir.nodes] == ["conv", "flatten", "fc"]


FEED_FORWARD = ["norse_lif", "norse_cubalif", "norse_if", "norse_conv", "sinabs_iaf", "sinabs_conv"]


@pytest.mark.parametrize("name", FEED_FORWARD)
def test_feed_forward_files_give_norse_from_nir_spikes(name):
    """Our reading, run by our float equations, against norse.torch.from_nir of the same file (Norse's
    own reader ignores r of LIF/IF, so the snnTorch files, r = 10, are not comparable this way)."""
    ir = read_nir(_path(name))
    x = (np.random.default_rng(0).random((20, 8, *(ir.input_shape or (ir.input_size,)))) < 0.3).astype(np.float32)
    ours, _, rasters = run_float(ir, x)
    theirs = run_in_norse(_raw(name), x, ir.dt_s).reshape(ours.shape)
    assert 0 < ours.sum() < ours.size * 20 * 0.9, "the test needs output spikes, not saturation"
    np.testing.assert_array_equal(ours, theirs)


def test_leaky_integrator_readout_by_hand():
    """sinabs_lif: LI(tau = 10) last; its membrane after T steps is the score. One step by hand from the
    file: v1 = dt/tau * (W s + b) with the hidden layer silent at t = 0 (v starts at 0, b < threshold)."""
    g, ir = _raw("sinabs_lif"), read_nir(_path("sinabs_lif"))
    x = np.zeros((1, 1, 6), np.float32)
    _, v, rasters = run_float(ir, x)
    assert rasters[0].sum() == 0
    np.testing.assert_allclose(v[0], ir.dt_s / 10.0 * g.nodes["2"].bias, rtol=1e-5)


# -- the IR's new fields ---------------------------------------------------------------------
def _rec_ir(**over):
    n = LIFNeurons(tau_syn_s=1e-3, tau_mem_s=1e-2, v_th=1.0)
    w = np.ones((2, 1), np.float32)
    l = FCLayer("rec", w, w != 0, n, (2, 1), input_bias=np.array([0.5, 0.0]), recurrent=np.array([[0, 0], [3., 0]]))
    return NetworkIR("t", 1, 4, 1e-3, [l], **over)


def test_ir_format_4_saves_and_loads_the_new_fields(tmp_path):
    from dpap_deploy.export.quantize import quantize

    ir = quantize(_rec_ir().with_layers([_rec_ir().layers[0].__class__(
        **{**_rec_ir().layers[0].__dict__, "input_bias": None})]))
    ir.save(str(tmp_path / "n.npz"))
    back = NetworkIR.load(str(tmp_path / "n.npz"))
    np.testing.assert_array_equal(back.layers[0].recurrent, [[0, 0], [3, 0]])
    np.testing.assert_array_equal(back.layers[0].fixed.recurrent_weight, ir.layers[0].fixed.recurrent_weight)
    assert back.layers[0].fixed.input_bias is None  # a file without the fixed bias reads as None
    raw = _rec_ir()
    raw.save(str(tmp_path / "b.npz"))
    np.testing.assert_array_equal(NetworkIR.load(str(tmp_path / "b.npz")).layers[0].input_bias, [0.5, 0])
    q = quantize(raw)  # a_v = 0.1, s = 254 / max(0.1 * 1, 0.1 * 3, 0.1 * 0.5); bias 0.5 -> even(0.05 * 254 / 0.3) = 42
    np.testing.assert_array_equal(q.layers[0].fixed.input_bias, [42, 0])
    q.save(str(tmp_path / "q.npz"))
    np.testing.assert_array_equal(NetworkIR.load(str(tmp_path / "q.npz")).layers[0].fixed.input_bias, [42, 0])
    li = read_nir(_path("sinabs_lif"))
    li.save(str(tmp_path / "li.npz"))
    back = NetworkIR.load(str(tmp_path / "li.npz"))
    assert back.readout == "membrane" and np.isinf(back.layers[-1].neurons.v_th)


def test_ir_shapes_are_checked_naming_the_layer():
    n = LIFNeurons(1e-3, 1e-2, 1.0)
    w = np.ones((2, 3), np.float32)
    with pytest.raises(IRError, match=r"layer 'x': input_bias \(3,\) must be \(2,\)"):
        FCLayer("x", w, w != 0, n, (2, 3), input_bias=np.zeros(3))
    with pytest.raises(IRError, match=r"layer 'x': recurrent weights \(2, 3\) must be \(2, 2\)"):
        FCLayer("x", w, w != 0, n, (2, 3), recurrent=np.zeros((2, 3)))
    li = LIFNeurons(1e-3, 1e-2, float("inf"))
    with pytest.raises(IRError, match="readout 'spike_count' and last layer 'x'"):
        NetworkIR("t", 3, 4, 1e-3, [FCLayer("x", w, w != 0, li, (2, 3))])


@pytest.mark.parametrize("target", ["netx", "loihi2"])  # onnx takes ANNs only, refusing these anyway
def test_exporters_refuse_the_new_fields_naming_the_layer(tmp_path, target):
    from dpap_deploy.export import get_target
    from dpap_deploy.export.quantize import quantize

    with pytest.raises(UnsupportedLayerError, match=r"unsupported: rec \(recurrent"):
        get_target(target)(quantize(_two_neurons()), str(tmp_path))


@pytest.mark.parametrize("name", sorted(STRUCTURE))
def test_our_nir_export_writes_what_we_read(tmp_path, name):
    """Each framework file read, written by our NIR export (Affine for a bias, a NAME_rec loop, LIF/IF/LI
    nodes) and read back: the same layers and, run by our float equations, the same spikes and membrane."""
    from dpap_deploy.export import get_target

    ir = read_nir(_path(name))
    get_target("nir")(ir, str(tmp_path))
    back = read_nir(str(tmp_path / "network.nir"))
    assert [(n.name, n.kind) for n in back.nodes] == [(n.name, n.kind) for n in ir.nodes]
    assert back.readout == ir.readout and back.dt_s == pytest.approx(ir.dt_s, rel=1e-6)
    x = (np.random.default_rng(2).random((10, 3, *(ir.input_shape or (ir.input_size,)))) < 0.3).astype(np.float32)
    (a, va, ra), (b, vb, rb) = run_float(ir, x), run_float(back, x)
    for p, q in zip(ra, rb):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6)


def test_our_recurrent_nir_file_runs_in_norse_from_nir(tmp_path):
    """braille.nir read and written by us (its recurrent bias joins fc1's Affine bias, so it acts from step
    0 in Norse as in our reading): norse.torch.from_nir of our file gives our float spikes."""
    from dpap_deploy.export import get_target

    ir = read_nir(_path("braille"))
    x = (np.random.default_rng(0).random((30, 4, 12)) < 0.3).astype(np.float32)
    res = get_target("nir")(ir, str(tmp_path), spikes=x)
    ours, _, rasters = run_float(ir, x)
    assert rasters[0].sum() > 20 and ours.sum() > 20
    np.testing.assert_array_equal(res.counts, ours)


def test_quantisation_refuses_li_naming_the_layer():
    """An LI output (no spikes) is refused by name; its input bias no longer is (a bias axon)."""
    from dpap_deploy.export.quantize import quantize

    with pytest.raises(UnsupportedLayerError, match=r"unsupported: 2 \(li\)"):
        quantize(read_nir(_path("sinabs_lif")))
    assert quantize(read_nir(_path("norse_if"))).layers[0].fixed.input_bias is not None


# -- graphs we refuse ------------------------------------------------------------------------
def _lif(n):
    return nir.LIF(tau=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def _write(tmp_path, nodes, edges):
    path = tmp_path / "g.nir"
    nir.write(str(path), nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}), **nodes,
                                             "output": nir.Output(output_type={"output": np.array([2])})},
                                      edges=edges, type_check=False))
    return str(path)


def test_skip_connection_and_unsupported_nodes_are_refused_by_name(tmp_path):
    w = np.eye(2, dtype=np.float32)
    skip = _write(tmp_path, {"a": nir.Linear(weight=w), "p": _lif(2), "b": nir.Linear(weight=w), "q": _lif(2)},
                  [("input", "a"), ("a", "p"), ("p", "b"), ("b", "q"), ("q", "output"), ("input", "b")])
    with pytest.raises(UnsupportedLayerError, match=r"node 'input' \(Input\) has two outputs \(a branch\): 'a' and 'b'"):
        read_nir(skip)
    odd = _write(tmp_path, {"a": nir.Linear(weight=w), "p": nir.Threshold(threshold=np.ones(2))},
                 [("input", "a"), ("a", "p"), ("p", "output")])
    with pytest.raises(UnsupportedLayerError, match="node 'p' has type Threshold, which this reader does not handle "
                                                    r"\(it takes Input, Output, Affine"):
        read_nir(odd)


def test_partial_flatten_is_refused_by_name(tmp_path):
    """sinabs_conv.nir with its Flatten (node "3") made to keep the channel axis: not a chain we take."""
    g = _raw("sinabs_conv")
    g.nodes["3"].start_dim = 1
    path = str(tmp_path / "partial.nir")
    nir.write(path, g)
    with pytest.raises(UnsupportedLayerError, match=r"node '3': Flatten of dims 1..-1 \(NIR dims, no batch axis\)"):
        read_nir(path)


def test_report_on_nir_files(tmp_path, capsys):
    """dpap-report FILE.nir: a per-core report for recurrent and feed-forward files, exit 2 naming the node."""
    from dpap_deploy.cli import report_main

    for name in ("braille", "snntorch_rsynaptic", "norse_conv", "sinabs_conv"):
        assert report_main([_path(name)]) in (0, 3), name
        out = capsys.readouterr().out
        assert "core" in out
    w = np.eye(2, dtype=np.float32)
    odd = _write(tmp_path, {"a": nir.Linear(weight=w), "p": nir.Threshold(threshold=np.ones(2))},
                 [("input", "a"), ("a", "p"), ("p", "output")])
    assert report_main([odd]) == 2
    err = capsys.readouterr().err
    assert "node 'p' has type Threshold" in err and "CubaLIF, LIF, IF, LI" in err


def test_missing_file_is_named(tmp_path):
    with pytest.raises(NetworkFileError, match="x.nir: NIR file does not exist"):
        read_nir(str(tmp_path / "x.nir"))


def test_a_format_3_file_still_loads(tmp_path):
    """An IR written before format /4 (no input bias, recurrence, variants) reads as it did."""
    import json

    n = LIFNeurons(5e-3, 1e-2, 1.0)
    w = np.ones((2, 3), np.float32)
    NetworkIR("old", 3, 4, 1e-3, [FCLayer("fc1", w, w != 0, n, (2, 3))]).save(str(tmp_path / "o.npz"))
    with np.load(tmp_path / "o.npz") as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(bytes(arrays["header"]).decode())
    header["format"] = "dpap-deploy-ir/3"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez_compressed(tmp_path / "o.npz", **arrays)
    back = NetworkIR.load(str(tmp_path / "o.npz"))
    assert back.layers[0].input_bias is None and back.layers[0].recurrent is None and back.readout == "spike_count"


# -- running recurrent layers: emulator (both engines) and Lava, by hand --------------------------
def _two_neurons(T=8):
    """1 input -> 2 neurons; input reaches neuron 0 only, neuron 0 reaches neuron 1 only through the
    recurrent weights. LIF variant (tau_syn = dt) with tau_mem = dt: v is this step's input alone, so
    neuron 0 spikes at each input spike and neuron 1 exactly one step after neuron 0."""
    n = LIFNeurons(tau_syn_s=1e-3, tau_mem_s=1e-3, v_th=1.0)
    w = np.array([[2.0], [0.0]], np.float32)
    l = FCLayer("rec", w, w != 0, n, (2, 1), recurrent=np.array([[0.0, 0.0], [2.0, 0.0]]))
    return NetworkIR("two", 1, T, 1e-3, [l])


def test_recurrence_by_hand_emulator_engines_and_lava_agree():
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    q = quantize(_two_neurons())
    assert q.layers[0].fixed.recurrent_weight[1, 0] == q.layers[0].fixed.weight[0, 0] != 0
    x = np.zeros((8, 2, 1), np.uint8)
    x[[0, 3, 7], 0, 0] = 1  # sample 0: the last step's spike must not reach sample 1
    x[2, 1, 0] = 1
    want = np.zeros((8, 2, 2), np.uint8)
    want[[0, 3, 7], 0, 0] = 1
    want[[1, 4], 0, 1] = 1
    want[2, 1, 0] = want[3, 1, 1] = 1
    for engine in ("numba", "torch"):
        counts, rasters = emulate(q, x, record=True, engine=engine)
        np.testing.assert_array_equal(rasters[0], want, err_msg=engine)
    counts, info = lava_sim.run(q, x)
    np.testing.assert_array_equal(info["output_spikes"], want)
    np.testing.assert_array_equal(counts, [[3, 2], [1, 1]])
    _, info = lava_sim.run(_two_neurons(), x, precision="float")  # Lava's float LIF, the same wiring
    np.testing.assert_array_equal(info["output_spikes"], want)
    np.testing.assert_array_equal(run_float(_two_neurons(), x)[2][0], want)  # our float equations


def test_recurrent_files_run_the_same_in_the_emulator_and_lava():
    """snnTorch RSynaptic and Norse's braille.nir (biases set aside, to see the recurrence alone):
    quantised, the emulator's two engines and Lava give the same spikes, and the recurrence changes them."""
    from dataclasses import replace

    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    for name, T in (("snntorch_rsynaptic", 12), ("braille", 6)):
        ir = read_nir(_path(name))
        ir = replace(ir.with_layers([replace(l, input_bias=None) for l in ir.layers]), time_steps=T)
        q = quantize(ir)
        x = (np.random.default_rng(1).random((T, 3, ir.input_size)) < 0.4).astype(np.uint8)
        a, ra = emulate(q, x, record=True)
        b, rb = emulate(q, x, record=True, engine="torch")
        c, info = lava_sim.run(q, x, record_hidden=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(ra[0].transpose(0, 1, 2), info["hidden_spikes"][0])
        assert ra[0].sum() > 0, f"{name}: the test needs hidden spikes"
        plain = quantize(ir.with_layers([replace(ir.layers[0], recurrent=np.zeros_like(ir.layers[0].recurrent))]
                                        + ir.layers[1:]))
        _, rp = emulate(plain, x, record=True)
        assert not np.array_equal(rp[0], ra[0]), f"{name}: the recurrent weights must matter"


# -- mapping cost of recurrence ----------------------------------------------------------------
def test_recurrent_mapping_cost_by_hand(tmp_path):
    """3 inputs -> "rec" (4 neurons, all-to-all input, ring recurrence j -> j+1 mod 4) -> "out" (2 neurons),
    on cores of 2 neurons, one layer per core. By hand: rec's cores hold neurons {0, 1} and {2, 3};
    core {0, 1} receives the 3 inputs and its own neurons' 3 -> 0 and 0 -> 1 (5 input axons, 6 + 2
    synapses) and sends 0 -> 1 (same core), 1 -> 2 (other core) plus one route each to "out" (4 output
    axons); the same for {2, 3} by symmetry; "out" has 4 input axons, 8 synapses and 2 routes to the host."""
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    toml = tmp_path / "two.toml"
    toml.write_text('extends = "loihi1"\nname = "two-neuron-cores"\n[core]\nneurons = 2\n')
    n = LIFNeurons(5e-3, 1e-2, 1.0)
    ring = np.zeros((4, 4))
    for j in range(4):
        ring[(j + 1) % 4, j] = 0.5
    w1, w2 = np.ones((4, 3), np.float32), np.ones((2, 4), np.float32)
    rec = FCLayer("rec", w1, w1 != 0, n, (4, 3), recurrent=ring)
    ir = NetworkIR("ring", 3, 4, 1e-3, [rec, FCLayer("out", w2, w2 != 0, n, (2, 4))])
    m = map_network(ir, load_profile(str(toml)), pack=False)
    got = [(c.layer, c.neurons, c.input_axons, c.output_axons, c.synapses) for c in m.cores]
    assert got == [("rec", 2, 5, 4, 8), ("rec", 2, 5, 4, 8), ("out", 2, 4, 2, 8)]
    plain = map_network(ir.with_layers([FCLayer("rec", w1, w1 != 0, n, (4, 3)), ir.layers[1]]),
                        load_profile(str(toml)), pack=False)
    assert [(c.input_axons, c.output_axons, c.synapses) for c in plain.cores][:2] == [(3, 2, 6), (3, 2, 6)]


def test_recurrent_braille_gives_norse_from_nir_spikes():
    """braille.nir through norse.torch.from_nir (nirtorch runs the loop with a one-step delay) against our
    reading run by our float equations: the same spikes, sample for sample. The recurrent Affine's bias is
    set to 0 here: nirtorch starts the loop from an empty output, so at step 0 it adds no recurrent bias,
    where we add it from step 0 (NIR's continuous Affine has its bias at t = 0; docs/deployment.md 8.5)."""
    import torch
    import norse.torch as norse

    from dpap_deploy.export.nir_graph import GraphReader

    g = _raw("braille")
    g.nodes["lif1.w_rec"].bias = np.zeros_like(g.nodes["lif1.w_rec"].bias)
    ir = GraphReader(g, "braille.nir").read()
    x = (np.random.default_rng(0).random((30, 4, 12)) < 0.3).astype(np.float32)
    ours, _, rasters = run_float(ir, x)
    module, state, total = norse.from_nir(g, dt=ir.dt_s), None, 0
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = module(torch.from_numpy(x[t]), state)
            total = total + out.numpy()
    assert rasters[0].sum() > 20 and 0 < ours.sum() < ours.size * 30
    np.testing.assert_array_equal(ours, total.astype(np.int64))
    without = GraphReader(g, "b.nir").read()
    without = without.with_layers([FCLayer(**{**without.layers[0].__dict__, "recurrent": None})] + without.layers[1:])
    assert not np.array_equal(run_float(without, x)[0], ours), "the recurrent weights must matter"


def test_a_sub_graph_reads_as_its_inlined_nodes(tmp_path):
    """snnTorch's RLeaky is a NIRGraph of its own (Input -> lif <-> w_rec -> Output) before nirtorch
    flattens it into "1.lif", "1.w_rec": nested again, written and read, it gives the same network."""
    g = _raw("snntorch_rleaky")
    n = g.nodes["1.lif"].tau.shape[0]
    sub = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n])}), "lif": g.nodes["1.lif"],
                              "w_rec": g.nodes["1.w_rec"], "output": nir.Output(output_type={"output": np.array([n])})},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                       type_check=False)
    nodes = {k: v for k, v in g.nodes.items() if not k.startswith("1.")}
    nodes["1"] = sub
    edges = [(a, b) for a, b in g.edges if not (a.startswith("1.") and b.startswith("1."))]
    edges = [(a.replace("1.lif", "1"), b.replace("1.lif", "1")) for a, b in edges]
    nir.write(str(tmp_path / "nested.nir"), nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    nested, flat = read_nir(str(tmp_path / "nested.nir")), read_nir(_path("snntorch_rleaky"))
    assert [l.name for l in nested.layers] == [l.name for l in flat.layers]
    np.testing.assert_array_equal(nested.layers[0].recurrent, flat.layers[0].recurrent)
    np.testing.assert_array_equal(nested.layers[1].weight, flat.layers[1].weight)


# -- IF neurons in fixed point --------------------------------------------------------------------
def test_if_neuron_by_hand_in_emulator_and_lava():
    """One IF neuron (no leak), weight 1, threshold 2.5, an input spike every step: v = 1, 2, 3 -> spike,
    reset, ... so spikes at steps 2, 5, 8 (Norse's IAFCell: v <- v + x). Quantised: dv = 0, and the
    emulator's two engines and Lava give exactly those spikes."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    n = LIFNeurons(tau_syn_s=1e-3, tau_mem_s=float("inf"), v_th=2.5)
    w = np.ones((1, 1), np.float32)
    ir = NetworkIR("if", 1, 9, 1e-3, [FCLayer("if", w, w != 0, n, (1, 1))])
    x = np.ones((9, 1, 1), np.uint8)
    want = np.zeros((9, 1, 1), np.uint8)
    want[[2, 5, 8]] = 1
    np.testing.assert_array_equal(run_float(ir, x)[2][0], want)
    q = quantize(ir)
    assert q.layers[0].fixed.dv == 0
    for engine in ("numba", "torch"):
        np.testing.assert_array_equal(emulate(q, x, record=True, engine=engine)[1][0], want, err_msg=engine)
    np.testing.assert_array_equal(lava_sim.run(q, x)[1]["output_spikes"], want)


@pytest.mark.parametrize("name", ["norse_if", "sinabs_conv"])
def test_if_files_run_the_same_in_the_emulator_and_lava(name):
    """Norse's IAFCell and sinabs's IAF graphs (biases set aside), quantised: emulator == Lava."""
    from dataclasses import replace

    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    ir = read_nir(_path(name))
    q = quantize(replace(ir.with_layers([replace(l, input_bias=None) for l in ir.layers]), time_steps=8))
    x = (np.random.default_rng(3).random((8, 3, *(ir.input_shape or (ir.input_size,)))) < 0.4).astype(np.uint8)
    a, ra = emulate(q, x, record=True)
    b, info = lava_sim.run(q, x, record_hidden=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra[0].reshape(8, 3, -1), info["hidden_spikes"][0].reshape(8, 3, -1))
    assert ra[0].sum() > 0 and a.sum() > 0, "the test needs spikes"


# -- input bias as a bias axon (export/quantize.py; docs/deployment.md sec. 8.5) ------------------
def _biased_neuron(T=6, bias=1.0):
    """1 input, 1 neuron: dt 1 ms, tau_syn 4 ms (u keeps 3/4), tau_mem 8 ms (v keeps 7/8, a_v = 1/8),
    weight 1, threshold 1, input bias ``bias``."""
    n = LIFNeurons(tau_syn_s=4e-3, tau_mem_s=8e-3, v_th=1.0)
    w = np.ones((1, 1), np.float32)
    return NetworkIR("bias", 1, T, 1e-3, [FCLayer("b", w, w != 0, n, (1, 1), input_bias=np.array([bias]))])


def test_input_bias_by_hand_in_float_emulator_and_lava():
    """No input spikes, bias 1. Quantised by hand: s = 254 / (a_v * 1) = 2032, so w_int = b_int = 254,
    weight_exp 0, vth = 2032 (vth << 6 = 130048), du = 1023, dv = 512. Lava's equations with a_in = 254
    at every step: u = trunc(3/4 u) + 254*64, v = trunc(7/8 v) + u:
    u = 16256, 28448, 37592, 44450, 49593 and v = 16256, 42672, 74930, 110013, 145854 > 130048: the first
    spike at step 4 (Norse in float too: v = 0.125, 0.328, 0.576, 0.846, 1.12). Two samples: the second
    gives the same spike, so the bias is there at the reset step of each sample too."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    q = quantize(_biased_neuron())
    f = q.layers[0].fixed
    assert (f.input_bias.tolist(), int(f.weight[0, 0]), f.weight_exp, f.vth, f.du, f.dv) == ([254], 254, 0, 2032, 1023, 512)
    u, v, us, vs = 0, 0, [], []
    for _ in range(5):  # Lava's AbstractPyLifModelFixed with positive values: trunc is a floor
        u = (u * (4096 - 1024)) // 4096 + (254 << 6)
        v = (v * (4096 - 512)) // 4096 + u
        us.append(u)
        vs.append(v)
    assert us == [16256, 28448, 37592, 44450, 49593] and vs == [16256, 42672, 74930, 110013, 145854]
    assert [x > 2032 << 6 for x in vs] == [False] * 4 + [True]
    x = np.zeros((6, 2, 1), np.uint8)
    want = np.zeros((6, 2, 1), np.uint8)
    want[4] = 1
    np.testing.assert_array_equal(run_float(_biased_neuron(), x)[2][0], want)
    for engine in ("numba", "torch"):
        np.testing.assert_array_equal(emulate(q, x, record=True, engine=engine)[1][0], want, err_msg=engine)
    np.testing.assert_array_equal(lava_sim.run(q, x)[1]["output_spikes"], want)
    np.testing.assert_array_equal(lava_sim.run(_biased_neuron(), x, precision="float")[1]["output_spikes"], want)
    np.testing.assert_array_equal(emulate(quantize(_biased_neuron(bias=0.0)), x)[0], [[0], [0]])


def test_negative_weight_exp_shifts_the_bias_on_its_own():
    """Integers set by hand: weight_exp -3, weight 4 (4 >> 3 = 0) from an input spiking every step,
    biases 6, 8, 14, 16 (>> 3: 0, 1, 1, 2); IF neurons (dv 0), du 4095 (u is this step's a_in << 6),
    vth 2 (v > 128). Lava shifts the bias axon's Sparse on its own, so neuron 0 gets 0 + 0 (never
    spikes; one Sparse would give (4 + 6) >> 3 = 1), neurons 1, 2: v = 64, 128, 192 -> spikes at
    steps 2 and 5; neuron 3: 128, 256 -> steps 1, 3, 5. Emulator (both engines) and Lava give these."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.ir import FixedPoint

    n = LIFNeurons(tau_syn_s=1e-3, tau_mem_s=float("inf"), v_th=1.0)
    w = np.ones((4, 1), np.float32)
    fixed = FixedPoint(np.full((4, 1), 4, np.int32), -3, 4095, 0, 2, 1.0, input_bias=np.array([6, 8, 14, 16], np.int32))
    q = NetworkIR("neg", 1, 6, 1e-3, [FCLayer("neg", w, w != 0, n, (4, 1), input_bias=np.ones(4), fixed=fixed)])
    x = np.ones((6, 1, 1), np.uint8)
    want = np.zeros((6, 1, 4), np.uint8)
    want[[2, 5], 0, 1] = want[[2, 5], 0, 2] = want[[1, 3, 5], 0, 3] = 1
    for engine in ("numba", "torch"):
        np.testing.assert_array_equal(emulate(q, x, record=True, engine=engine)[1][0], want, err_msg=engine)
    np.testing.assert_array_equal(lava_sim.run(q, x)[1]["output_spikes"], want)


@pytest.mark.parametrize("name", ["norse_cubalif", "snntorch_rleaky", "sinabs_iaf", "snntorch_conv"])
def test_biased_files_run_the_same_in_the_emulator_and_lava(name):
    """Framework files with Affine biases (snnTorch RLeaky: recurrent; snnTorch conv: a conv layer's
    per-channel bias), T = 16, 8 samples of random spikes: the emulator's two engines and Lava give the
    same spikes in every layer, and Lava's output agrees with the float run (export/float_sim.py) on at
    least 95% of (step, sample, neuron) entries (measured 97.1% (rleaky) to 99.5%) and at least 80% of
    the output spikes of either run fall at the same (step, sample, neuron) in both (measured 86.9%
    (rleaky), 90.9% (cubalif), 94.9% (iaf), 97.6% (conv))."""
    from dataclasses import replace

    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    T, N = 16, 8
    ir = replace(read_nir(_path(name)), time_steps=T)
    assert all(l.input_bias is not None for l in ir.layers)
    q = quantize(ir)
    x = (np.random.default_rng(3).random((T, N, *(ir.input_shape or (ir.input_size,)))) < 0.3).astype(np.uint8)
    a, ra = emulate(q, x, record=True)
    b, rb = emulate(q, x, record=True, engine="torch")
    c, info = lava_sim.run(q, x, record_hidden=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    for p, r, h in zip(ra, rb, info["hidden_spikes"]):
        np.testing.assert_array_equal(p, r)
        np.testing.assert_array_equal(p.reshape(T, N, -1), h.reshape(T, N, -1))
    assert all(r.sum() > 0 for r in ra), "the test needs spikes in every layer"
    lo = info["output_spikes"].astype(bool)
    fo = run_float(ir, x.astype(np.float32))[2][-1].reshape(lo.shape).astype(bool)
    assert (fo == lo).mean() >= 0.95 and (fo & lo).sum() >= 0.8 * (fo | lo).sum() > 0
    plain = quantize(ir.with_layers([replace(l, input_bias=None) for l in ir.layers]))
    assert not np.array_equal(emulate(plain, x, record=True)[1][0], ra[0]), "the biases must matter"


def test_dpap_export_runs_a_biased_nir_file_in_loihi_sim(tmp_path):
    """dpap-export --target loihi-sim --from norse_cubalif.nir (biases on both layers) --data six features,
    three classes: exit 0, the written network carries the integer biases, and the emulator's output
    spikes equal Lava's (agreement.spikes, report.json)."""
    import json
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "six.npz", x=rng.random((20, 6)).astype(np.float32), y=np.arange(20) % 3)
    exe = os.path.join(os.path.dirname(sys.executable), "dpap-export")
    r = subprocess.run([exe, "--target", "loihi-sim", "--from", _path("norse_cubalif"), "--data",
                        str(tmp_path / "six.npz"), "--out", str(tmp_path / "run"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["agreement"]["spikes"] == 1.0
    net = NetworkIR.load(str(tmp_path / "run" / "network.npz"))
    assert all(l.fixed.input_bias is not None and np.any(l.fixed.input_bias) for l in net.layers)


def test_bias_axon_mapping_cost_by_hand(tmp_path):
    """3 inputs -> "b" (4 neurons, all-to-all, biases 0.5, 0.5, 0.5, 0) -> "out" (2 neurons), cores of 2
    neurons (loihi1 otherwise: 8-bit weights, 10-bit index, groups of 64 with a 10-bit header in 64-bit
    words), one layer per core. By hand: core {0, 1} has the 3 inputs and the bias axon (4 input
    axons), 6 + 2 synapses; every axon has 2 synapses: dense 2*8 + 10 = 26 -> 64 bits, so 256 bits.
    Core {2, 3}: 4 input axons (neuron 3's bias is 0: no synapse), 6 + 1 synapses; dense 4 * 64 = 256
    (sparse: 3 * 64 + (18 + 10 -> 64) = 256 too). Without biases: 3 axons, 6 synapses, 192 bits."""
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    toml = tmp_path / "two.toml"
    toml.write_text('extends = "loihi1"\nname = "two-neuron-cores"\n[core]\nneurons = 2\n')
    n = LIFNeurons(5e-3, 1e-2, 1.0)
    w1, w2 = np.ones((4, 3), np.float32), np.ones((2, 4), np.float32)
    b = FCLayer("b", w1, w1 != 0, n, (4, 3), input_bias=np.array([0.5, 0.5, 0.5, 0.0]))
    ir = NetworkIR("bias", 3, 4, 1e-3, [b, FCLayer("out", w2, w2 != 0, n, (2, 4))])
    m = map_network(ir, load_profile(str(toml)), pack=False)
    got = [(c.layer, c.neurons, c.input_axons, c.output_axons, c.synapses, c.synaptic_memory_bits) for c in m.cores]
    assert got == [("b", 2, 4, 2, 8, 256), ("b", 2, 4, 2, 7, 256), ("out", 2, 4, 2, 8, 256)]
    plain = map_network(ir.with_layers([FCLayer("b", w1, w1 != 0, n, (4, 3)), ir.layers[1]]),
                        load_profile(str(toml)), pack=False)
    assert [(c.input_axons, c.synapses, c.synaptic_memory_bits) for c in plain.cores][:2] == [(3, 6, 192)] * 2
    # a conv layer: one more input axon on each of its tiles, one synapse per neuron of the tile
    from dataclasses import replace

    conv = read_nir(_path("sinabs_conv"))
    with_b, without = (map_network(x, load_profile("loihi2"), pack=False) for x in
                       (conv, conv.with_layers([replace(l, input_bias=None) for l in conv.layers])))
    tiles = [(c, d) for c, d in zip(with_b.cores, without.cores) if c.layer == conv.layers[0].name]
    bias0 = np.repeat(conv.layers[0].input_bias != 0, conv.layers[0].n_out // conv.layers[0].input_bias.size)
    assert tiles and all(c.input_axons == d.input_axons + 1 for c, d in tiles)
    assert all(c.synapses == d.synapses + int(bias0[c.chunks[0].indices()].sum()) for c, d in tiles)


def test_netx_and_loihi2_refuse_an_input_bias_by_layer(tmp_path):
    """netx has no current bias, loihi2's chip run has no always-on host source checked: both name the layer."""
    from dpap_deploy.export import get_target

    ir = read_nir(_path("norse_cubalif"))
    with pytest.raises(UnsupportedLayerError, match=r"target netx: layer\(s\) '0', '2' have an input bias"):
        get_target("netx")(ir, str(tmp_path))
    with pytest.raises(UnsupportedLayerError, match=r"target loihi2 .*unsupported: 0 \(input_bias\), 2 \(input_bias\)"):
        get_target("loihi2")(ir, str(tmp_path))


def test_input_bias_behind_current_encoding_emulator_equals_lava():
    """Current encoding has no first Sparse: population 1 starts sample 0 at Lava step 2, the first step
    the bias axon's Sparse delivers (its source spikes from step 1). Biases on layers 1 and 2, T = 5, 6
    samples: both emulator engines equal Lava in every layer; a bias on layer 0 is refused by name."""
    from dpap_deploy.errors import QuantizationError
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    rng = np.random.default_rng(4)
    n = LIFNeurons(tau_syn_s=2e-3, tau_mem_s=4e-3, v_th=1.0)
    sizes, layers = (6, 8, 5, 3), []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0.8, 1.5, (b, a)).astype(np.float32)
        layers.append(FCLayer(f"fc{i}", w, w != 0, n, (b, a), input_bias=None if i == 0 else rng.normal(0.8, 1.0, b)))
    ir = NetworkIR("cur", 6, 5, 1e-3, layers, input_encoding="current")
    q = quantize(ir)
    x = rng.random((6, 6))
    c, info = lava_sim.run(q, x, record_hidden=True)
    for engine in ("numba", "torch"):
        counts, rasters = emulate(q, x, record=True, engine=engine)
        np.testing.assert_array_equal(rasters[-1], info["output_spikes"], err_msg=engine)
        for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):
            np.testing.assert_array_equal(mine, lavas, err_msg=engine)
    assert all(r.sum() > 0 for r in rasters), "the test needs spikes in every layer"
    plain = quantize(ir.with_layers(layers[:1] + [FCLayer(**{**l.__dict__, "input_bias": None}) for l in layers[1:]]))
    assert not np.array_equal(emulate(plain, x, record=True)[1][1], rasters[1]), "the biases must matter"
    first = FCLayer(**{**layers[0].__dict__, "input_bias": np.ones(8)})
    with pytest.raises(QuantizationError, match="layer 'fc0': an input bias on the current-encoded first layer"):
        quantize(ir.with_layers([first] + layers[1:]))


def test_bias_axon_synaptic_operations_by_hand():
    """2 inputs -> 3 neurons (all-to-all, biases 1, 0, 2) -> 1 neuron, T = 4, 2 samples. Sample 0: 3 input
    spikes (3 synapses each) and 2 hidden spikes (1 each): 11; sample 1: 1 input spike: 3; mean 7. The bias
    axon spikes at each of the 4 steps into the 2 neurons with a non-zero bias: 8 more, 15 in all."""
    from dpap_deploy.energy import synops_per_sample

    n = LIFNeurons(5e-3, 1e-2, 1.0)
    w1, w2 = np.ones((3, 2), np.float32), np.ones((1, 3), np.float32)
    b = FCLayer("b", w1, w1 != 0, n, (3, 2), input_bias=np.array([1.0, 0.0, 2.0]))
    ir = NetworkIR("bias", 2, 4, 1e-3, [b, FCLayer("out", w2, w2 != 0, n, (1, 3))])
    x, h = np.zeros((4, 2, 2)), np.zeros((4, 2, 3))
    x[0, 0, 0] = x[1, 0, 1] = x[3, 0, 0] = x[2, 1, 1] = 1
    h[1, 0, 2] = h[2, 0, 0] = 1
    assert synops_per_sample(ir, [x, h]) == pytest.approx(15.0)
    plain = ir.with_layers([FCLayer("b", w1, w1 != 0, n, (3, 2)), ir.layers[1]])
    assert synops_per_sample(plain, [x, h]) == pytest.approx(7.0)


def test_a_conv_output_layer_runs_in_lava_in_torch_order():
    """norse_conv.nir ends with a conv population ((2, 1, 1) here; Lava's shape is (W, H, C)): Lava's output
    reaches the sink in torch's (C, H, W) order, so its spikes equal the emulator's neuron for neuron."""
    from dataclasses import replace

    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize

    T, N = 12, 6
    q = quantize(replace(read_nir(_path("norse_conv")), time_steps=T))
    assert q.layers[-1].kind == "conv" and q.layers[-1].out_shape == (2, 1, 1)
    x = (np.random.default_rng(5).random((T, N, *q.input_shape)) < 0.4).astype(np.uint8)
    counts, rasters = emulate(q, x, record=True)
    lava_counts, info = lava_sim.run(q, x)
    assert rasters[-1].sum() > 0, "the test needs output spikes"
    np.testing.assert_array_equal(info["output_spikes"], rasters[-1].reshape(T, N, -1))
    np.testing.assert_array_equal(lava_counts, counts)
