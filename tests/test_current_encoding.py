"""Current encoding (issue 13): the first population's per-sample bias in Lava, the emulator and the mapper.

With ``input_encoding == "current"`` the first layer's neurons integrate ``W x`` of the analog
sample (Norse's ``lif_current_encoder``); ``loihi-sim`` realises it as the population's bias
(``export/quantize.py: current_bias``, ``export/gate/bias_lif.py``), the emulator adds the same
integers, the mapper places the layer without synapses, and netx / nir refuse it by name.
"""
from dataclasses import replace

import numpy as np
import pytest

from dpap_deploy.data.encoding import current_encode
from dpap_deploy.errors import ExportValidationError, QuantizationError, UnsupportedLayerError
from dpap_deploy.export import lava_sim
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.quantize import BIAS_VTH_MAX, bias_exponent, current_bias, quantize
from dpap_deploy.ir import FCLayer, FixedPoint, LIFNeurons, NetworkIR
from reference_sim import simulate

NEURONS = LIFNeurons(tau_syn_s=5e-3, tau_mem_s=10e-3, v_th=1.0)


def _fc(name, w, mask=None, fixed=None):
    w = np.asarray(w, dtype=np.float64)
    m = np.ones(w.shape, bool) if mask is None else mask
    return FCLayer(name, w * m, m, NEURONS, w.shape, fixed=fixed)


def _current_network(T=10, seed=0, sizes=(6, 20, 12, 5)):
    """A current-encoded MLP whose first layer has strongly positive (saturating), moderate and
    negative drives for inputs in [0, 1]."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0.0, 1.0, (sizes[1], sizes[0]))
    w0[:4] = np.abs(w0[:4]) + 5.0      # W x far above threshold: bias saturates at 4095
    w0[4:8] = -np.abs(w0[4:8]) - 0.5   # W x < 0: negative bias, silent neurons
    w0[8:] *= 0.8
    layers = [_fc("fc1", w0)]
    for i, (a, b) in enumerate(zip(sizes[1:-1], sizes[2:])):
        m = rng.random((b, a)) < 0.7
        layers.append(_fc(f"fc{i + 2}", rng.normal(0.6, 2.0, (b, a)), m))
    return quantize(NetworkIR("current", sizes[0], T, 1e-3, layers, input_encoding="current"))


def _reference(ir, x, record=None):
    mant, exp = current_bias(ir.layers[0], x)
    layers = [dict(w=l.masked_weight(fixed=True), exp=l.fixed.weight_exp, du=l.fixed.du, dv=l.fixed.dv,
                   vth=l.fixed.vth) for l in ir.layers]
    empty = np.zeros((ir.time_steps, x.shape[0], ir.input_size), np.uint8)
    return simulate(layers, empty, bias=mant.astype(np.int64) << exp, record=record)


# -- the bias, by hand ---------------------------------------------------------------------
def test_current_bias_by_hand():
    # vth 300: vth << 6 = 19200 > 4095 << 2 = 16380, < 4095 << 3 = 32760, so bias_exp = 3
    w = np.array([[2, -4], [254, 254], [0, 6]], np.int32)
    layer = _fc("fc1", np.ones((3, 2)), fixed=FixedPoint(w, 1, 818, 410, 300, 1.0))
    assert bias_exponent(300) == 3
    # 64 * 2**weight_exp * (w @ x) / 2**bias_exp = 16 * (w @ x), rounded, clipped to +-4095
    mant, exp = current_bias(layer, np.array([[0.5, 0.25], [1.0, 1.0], [0.0, 1.0], [0.0, 0.3]]))
    assert exp == 3
    np.testing.assert_array_equal(mant, [[0, 3048, 24],       # 16 * (0, 190.5, 1.5)
                                         [-32, 4095, 96],     # 16 * 508 = 8128 saturates
                                         [-64, 4064, 96],     # negative bias
                                         [-19, 1219, 29]])    # 16 * (-1.2, 76.2, 1.8) rounded
    assert mant.dtype == np.int32
    # the exponent is the smallest whose largest bias exceeds the threshold
    assert bias_exponent(255) == 2 and bias_exponent(256) == 3 and bias_exponent(63) == 0
    assert bias_exponent(BIAS_VTH_MAX) == 7 and BIAS_VTH_MAX == 8189
    with pytest.raises(QuantizationError, match="layer 'fc1': threshold vth = 8190 .* current encoding needs "
                                                "vth <= 8189"):
        bias_exponent(8190, "fc1")
    with pytest.raises(QuantizationError, match="layer 'fc1'"):
        current_bias(replace(layer, fixed=replace(layer.fixed, vth=9000)), np.zeros((1, 2)))
    with pytest.raises(ExportValidationError, match="layer 'fc1' takes 2 analog inputs"):
        current_bias(layer, np.zeros((1, 3)))


def test_quantised_bias_is_norses_increment_in_lava_units():
    """One step from rest: Norse's ``v = dt/tau_mem * W x``, Lava's ``v = bias_mant << bias_exp``; they
    agree as ``v_lava = 64 * s * v_norse`` up to the rounding of the weights and of the bias."""
    ir = _current_network()
    first = ir.layers[0]
    f = first.fixed
    x = np.random.default_rng(1).random((40, ir.input_size))
    mant, exp = current_bias(first, x)
    assert exp == f.bias_exp == bias_exponent(f.vth)
    norse = (ir.dt_s / NEURONS.tau_mem_s) * x @ first.masked_weight().astype(np.float64).T
    lava = (mant.astype(np.float64) * 2.0 ** exp) / (64.0 * f.scale)   # back in Norse units
    below = mant < 4095
    tol = (2.0 ** f.weight_exp * x.sum(1, keepdims=True) + 2.0 ** exp / 64.0) / f.scale  # weight and bias rounding
    assert np.all(np.abs(lava - norse)[below] <= np.broadcast_to(tol, lava.shape)[below] + 1e-12)
    assert (mant == 4095).any() and (mant < 0).any(), "the test needs saturated and negative biases"
    assert np.all(norse[~below] > NEURONS.v_th)  # saturated only where Norse fires every step too


def test_quantize_keeps_the_first_threshold_reachable_and_saves_bias_exp(tmp_path):
    small = _fc("fc1", np.full((3, 4), 0.004))      # largest |a_v w| = 4e-4: vth would be 635,000 / 2**k
    out = _fc("fc2", np.ones((2, 3)))
    spikes = quantize(NetworkIR("s", 4, 5, 1e-3, [small, out]))
    current = quantize(NetworkIR("c", 4, 5, 1e-3, [small, out], input_encoding="current"))
    assert spikes.layers[0].fixed.vth > BIAS_VTH_MAX and spikes.layers[0].fixed.bias_exp is None
    f = current.layers[0].fixed
    assert f.vth <= BIAS_VTH_MAX and f.weight_exp < spikes.layers[0].fixed.weight_exp
    assert f.bias_exp == bias_exponent(f.vth) and current.layers[1].fixed.bias_exp is None
    current.save(tmp_path / "n.npz")
    back = NetworkIR.load(str(tmp_path / "n.npz"))
    assert back.input_encoding == "current" and back.layers[0].fixed.bias_exp == f.bias_exp
    assert back.layers[1].fixed.bias_exp is None


# -- Lava, the emulator and the reference, spike for spike ---------------------------------
def test_lava_and_both_emulator_engines_agree_on_every_spike():
    ir = _current_network(T=10)
    x = np.random.default_rng(2).random((14, ir.input_size))
    mant, _ = current_bias(ir.layers[0], x)
    assert (mant == 4095).any() and (mant < 0).any() and ((mant > 0) & (mant < 4095)).any()
    x_t = current_encode(x.astype(np.float32), ir.time_steps)  # (T, N, F), what the pipeline passes
    counts, info = lava_sim.run(ir, x_t, record_hidden=True)
    rec = []
    ref = _reference(ir, x_t[0].astype(np.float64), rec)
    assert info["steps"] == 14 * 10 + len(ir.layers) - 1  # no Sparse before the first population
    assert ref.sum() > 30 and (ref.sum(1) > 0).sum() >= 10, "the test needs output spikes in most samples"
    np.testing.assert_array_equal(info["output_spikes"], rec[-1])
    for mine, lavas in zip(rec[:-1], info["hidden_spikes"]):
        assert lavas.sum() > 0
        np.testing.assert_array_equal(lavas, mine)
    np.testing.assert_array_equal(counts, ref)
    for engine in ("numba", "torch"):
        for inp in (x_t, x_t[0]):  # (T, N, F) constant over T, or (N, F)
            c, rasters = emulate(ir, inp, record=True, engine=engine, batch_size=5)
            np.testing.assert_array_equal(rasters[-1], info["output_spikes"])  # every spike, every step
            for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):
                np.testing.assert_array_equal(mine, lavas)
            np.testing.assert_array_equal(c, counts)
    # samples are independent: the bias switches and u, v reset when each sample starts
    alone, _ = lava_sim.run(ir, x_t[:, 6:7])
    np.testing.assert_array_equal(alone, counts[6:7])
    # layer 0's synapses are the host's integer weights
    assert info["synapses_per_layer"]["fc1"] == int(np.count_nonzero(ir.layers[0].fixed.weight))


@pytest.mark.parametrize("gate", ["drop", "hold"])
def test_timestep_gates_and_one_step_windows_keep_their_phase(gate):
    """Timestep masks (``"drop"``: SpikeGate; ``"hold"``: the biased layer a GatedBiasScheduleLIF, the
    next a GatedLIFReset; phase one step earlier than with spike input) and ``T = 1`` (every step a
    reset and a new bias)."""
    ir = _current_network(T=8, seed=3, sizes=(5, 16, 10, 4))
    rng = np.random.default_rng(4)
    masks = [rng.random((l.n_out, 8)) < 0.7 for l in ir.layers[:2]]
    ir = ir.with_layers([replace(ir.layers[0], time_mask=masks[0], time_gate=gate),
                         replace(ir.layers[1], time_mask=masks[1], time_gate=gate), ir.layers[2]])
    x = rng.random((9, 5))
    counts, info = lava_sim.run(ir, x, record_hidden=True)
    assert counts.sum() > 10, "the test needs output spikes"
    for engine in ("numba", "torch"):
        c, rasters = emulate(ir, x, record=True, engine=engine)
        np.testing.assert_array_equal(rasters[-1], info["output_spikes"])
        for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):
            np.testing.assert_array_equal(mine, lavas)
        for r, m in zip(rasters[:2], masks):  # gated (neuron, step) pairs never spike
            assert not (r.astype(bool) & ~m.T[:, None, :]).any()
    if gate == "hold":  # it held: the same masks dropping give other spikes in the biased layer
        other = emulate(ir.with_layers([replace(l, time_gate="drop") for l in ir.layers]), x, record=True)[1]
        assert not np.array_equal(other[0], rasters[0])
        return  # the one-step windows below have no masks
    one = _current_network(T=1, seed=5, sizes=(4, 12, 3))
    x1 = rng.random((30, 4))
    counts1, info1 = lava_sim.run(one, x1, record_hidden=True)
    c1, r1 = emulate(one, x1, record=True)
    assert r1[0].sum() > 0
    np.testing.assert_array_equal(r1[-1], info1["output_spikes"])
    np.testing.assert_array_equal(r1[0], info1["hidden_spikes"][0])
    np.testing.assert_array_equal(c1, _reference(one, x1))
    single = _current_network(T=6, seed=6, sizes=(4, 5))  # the biased population is the output: no Sparse at all
    counts_s, info_s = lava_sim.run(single, x1)
    assert info_s["steps"] == 30 * 6 and counts_s.sum() > 0
    np.testing.assert_array_equal(counts_s, _reference(single, x1))
    np.testing.assert_array_equal(emulate(single, x1, record=True)[1][-1], info_s["output_spikes"])


def test_analog_input_is_checked():
    ir = _current_network(T=4, sizes=(6, 8, 3))
    x = np.random.default_rng(0).random((4, 3, 6))  # changes over T
    for run in (lambda a: lava_sim.run(ir, a), lambda a: emulate(ir, a), lambda a: emulate(ir, a, engine="torch")):
        with pytest.raises(ExportValidationError, match="must be the same at every time step"):
            run(x)
        with pytest.raises(ExportValidationError, match=r"T=5, F=6; network 'current' expects T=4, F=6"):
            run(np.zeros((5, 3, 6)))
        with pytest.raises(ExportValidationError, match=r"takes \(T, N, 6\) or \(N, 6\)"):
            run(np.zeros((3, 7)))


# -- Norse against Lava ----------------------------------------------------------------------
@pytest.mark.parametrize("gate", [None, "hold", "drop"])
def test_lava_float_reproduces_norse_spike_for_spike(digits, gate):
    """Lava's float LIF with ``bias_mant = dt/tau_mem * W x`` gives Norse's ``lif_current_encoder`` spikes;
    with timestep masks on both layers too (``"hold"``: GatedBiasScheduleLIF and GatedLIFReset float
    models; ``"drop"``: SpikeGates)."""
    import torch

    from dpap_deploy.train.compact import to_ir
    from dpap_deploy.train.models import SpikingMLP

    torch.manual_seed(2)
    model = SpikingMLP([64, 30, 10], init_gain=10.0, input_current=True, time_gate=gate or "hold").double()
    T = 12
    if gate is not None:
        g = torch.Generator().manual_seed(7)
        model.set_time_mask(0, torch.rand(30, T, generator=g) < 0.7)
        model.set_time_mask(1, torch.rand(10, T, generator=g) < 0.8)
    x = current_encode(digits.x_test[:20], T)
    counts_norse, rec = model(torch.from_numpy(x).double())
    counts_norse = counts_norse.detach().numpy().astype(np.int64)
    assert counts_norse.sum() > 40 and rec[0][1].sum() > 0, "test needs an active network"
    ir = to_ir(model, T)
    assert ir.input_encoding == "current" and bool(ir.silenced_inside_window()) == (gate is not None)
    assert [l.time_gate for l in ir.layers] == [gate or "hold"] * 2
    counts_lava, info = lava_sim.run(ir, x, precision="float", record_hidden=True)
    np.testing.assert_array_equal(counts_lava, counts_norse)
    np.testing.assert_array_equal(info["hidden_spikes"][0], rec[0][1].detach().numpy().astype(np.uint8))


def test_trained_network_in_lava_equals_the_emulator_and_predicts_like_norse(digits):
    import torch

    from dpap_deploy.train.compact import to_ir
    from dpap_deploy.train.loop import TrainConfig, classify, predict, train
    from dpap_deploy.train.models import SpikingMLP

    torch.manual_seed(0)
    T = 12
    model = SpikingMLP([64, 32, 10], input_current=True)
    res = train(digits, TrainConfig(epochs=3, time_steps=T, hidden=(32,), lr=1e-2, seed=1, encoding="current"),
                model=model, progress=False)
    assert all(h["fixed_point_accuracy"] is not None for h in res.history)  # the emulator takes analog input
    x = current_encode(digits.x_test[:60], T)
    q = quantize(to_ir(res.model, T))
    lava_counts, info = lava_sim.run(q, x)
    for engine in ("numba", "torch"):
        counts, rasters = emulate(q, x, record=True, engine=engine)
        np.testing.assert_array_equal(rasters[-1], info["output_spikes"])
        np.testing.assert_array_equal(counts, lava_counts)
    pred_norse = classify(predict(res.model, x))
    pred_lava = classify(lava_counts)
    y = digits.y_test[:60]
    assert (pred_norse == y).mean() > 0.6, "the test needs a trained network"
    assert (pred_lava == pred_norse).mean() >= 0.85  # quantisation only
    assert abs((pred_lava == y).mean() - (pred_norse == y).mean()) <= 0.1


# -- everything else refuses or accounts for it ----------------------------------------------
def test_netx_nir_refuse_naming_the_first_layer(tmp_path):
    from dpap_deploy.export import get_target
    from dpap_deploy.export.netx import write_netx
    from dpap_deploy.export.nir_export import to_nir

    ir = _current_network(T=4, sizes=(6, 8, 3))
    raw = ir.with_layers([replace(l, fixed=None) for l in ir.layers])
    want = r'target {}: layer "fc1" is driven by current encoding .* only loihi-sim realises, as a per-sample bias'
    for target in ("netx", "nir"):
        with pytest.raises(UnsupportedLayerError, match=want.format(target)):
            get_target(target)(raw, str(tmp_path), spikes=current_encode(np.zeros((2, 6), np.float32), 4))
    with pytest.raises(UnsupportedLayerError, match=want.format("netx")):
        write_netx(ir, str(tmp_path / "n.net"))
    with pytest.raises(UnsupportedLayerError, match=want.format("nir")):
        to_nir(raw)
    assert not list(tmp_path.iterdir())
    with pytest.raises(UnsupportedLayerError, match='layer "fc1": current encoding .* Lava\'s simulator only'):
        lava_sim.run(ir, np.zeros((2, 6)), run_cfg="hw")
    # the same network with spike input is exported (the refusal is about the encoding)
    to_nir(replace(raw, input_encoding="spikes"))


def test_loihi_sim_export_writes_and_runs_the_bias(tmp_path):
    from dpap_deploy.export import get_target

    ir = _current_network(T=6, sizes=(6, 10, 4))
    raw = ir.with_layers([replace(l, fixed=None) for l in ir.layers])
    x = current_encode(np.random.default_rng(7).random((5, 6)).astype(np.float32), 6)
    for target in ("loihi-sim", "loihi2"):  # loihi2 without lava-loihi verifies in the simulator
        out = tmp_path / target
        out.mkdir()
        res = get_target(target)(raw, str(out), spikes=x)
        saved = NetworkIR.load(str(out / "network.npz"))
        assert saved.input_encoding == "current" and saved.layers[0].fixed.bias_exp is not None
        assert res.extra["fixed_point"][0]["bias_exp"] == saved.layers[0].fixed.bias_exp
        counts, rasters = emulate(saved, x, record=True)
        np.testing.assert_array_equal(rasters[-1], res.output_spikes)
        np.testing.assert_array_equal(counts, res.counts)


def test_mapper_places_the_first_layer_without_input_axons():
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    rng = np.random.default_rng(0)
    layers = [_fc("fc1", rng.normal(0, 1, (40, 64))), _fc("fc2", rng.normal(0, 1, (10, 40)))]
    spikes = quantize(NetworkIR("s", 64, 8, 1e-3, layers))
    current = quantize(NetworkIR("c", 64, 8, 1e-3, layers, input_encoding="current"))
    for name in ("loihi2", "xylo-audio2"):
        profile = load_profile(name)
        ms, mc = map_network(spikes, profile), map_network(current, profile)
        rep_s = {x["layer"]: x for x in ms.to_report()["per_layer"]}
        rep_c = {x["layer"]: x for x in mc.to_report()["per_layer"]}
        assert rep_s["fc1"]["max_input_axons_per_core"] == 64
        assert rep_s["fc1"]["synapses"] == int(np.count_nonzero(spikes.layers[0].fixed.weight)) > 0
        assert rep_c["fc1"]["max_input_axons_per_core"] == 0
        assert rep_c["fc1"]["synapses"] == 0 and rep_c["fc1"]["synaptic_memory_bits"] == 0
        assert rep_c["fc1"]["neurons"] == 40 and rep_c["fc2"] == rep_s["fc2"]
        assert any('layer "fc1": current encoding' in n and "bias_exp" in n for n in mc.notes)
        assert not any("current encoding" in n for n in ms.notes)
    # Xylo takes 16 input channels: spike input is over it; current encoding sends the chip none
    xylo = load_profile("xylo-audio2")
    assert any("64 input channels" in v for v in map_network(spikes, xylo).violations)
    assert not any("input channels" in v for v in map_network(current, xylo).violations)


def test_synaptic_operations_skip_the_host_layer():
    from dpap_deploy.energy import synops_per_sample

    ir = _current_network(T=5, sizes=(6, 8, 3))
    x = current_encode(np.random.default_rng(0).random((4, 6)).astype(np.float32), 5)
    hidden = (np.random.default_rng(1).random((5, 4, 8)) < 0.5).astype(np.uint8)
    fan = np.count_nonzero(ir.layers[1].fixed.weight, axis=0)
    want = float((hidden.sum(0) @ fan).sum()) / 4
    assert synops_per_sample(ir, [x, hidden]) == pytest.approx(want)
    assert synops_per_sample(replace(ir, input_encoding="spikes"), [x, hidden]) > want
