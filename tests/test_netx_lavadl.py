"""netx files written by lava-dl's own writer (tests/netx_fixtures.py): read into the IR, mapped, and
(CUBA dense/conv, bias, delay) run in our Lava export, in lava-dl's netx and in the emulator with the
same spikes; what netx itself cannot run is refused by name."""
from dataclasses import replace

import h5py
import numpy as np
import pytest

import netx_fixtures as nf
from dpap_deploy.errors import UnsupportedLayerError
from dpap_deploy.export.netx import read_netx


def _read(path, T):
    return replace(read_netx(str(path)), time_steps=T)


def test_dense_file_with_bias_and_delay_reads_as_netx_builds_it(tmp_path):
    path = nf.dense_net(str(tmp_path / "d.net"), sizes=(6, 5, 3), bias=[30, -20, 0, 50, 10], delay=[0, 1, 2, 3, 4])
    with h5py.File(path) as f:  # what lava-dl wrote: float weights, the norm's bias, the block's delay
        w = f["layer/0/weight"][()]
        assert f["layer/0/inFeatures"][()] == 6 and f["layer/0/bias"].dtype.kind == "f"
    ir = read_netx(path)
    fc1, fc2 = ir.layers
    np.testing.assert_array_equal(fc1.fixed.weight, w.astype(np.int32))
    np.testing.assert_array_equal(fc1.fixed.bias_mant, [30, -20, 0, 50, 10])
    assert fc1.fixed.bias_exp == 6  # netx: bias_exp 6 for CUBA
    assert fc1.delay.shape == (5, 6) and (fc1.delay == np.arange(5)[:, None]).all()  # netx: one per row
    assert fc2.bias is None and fc2.delay is None
    assert fc1.features() == ["bias", "delay"] and fc1.fixed.vth == 64 and fc1.fixed.du == 1024 - 1


def test_conv_file_reads_groups_dilation_and_bias(tmp_path):
    ir = read_netx(nf.conv_net(str(tmp_path / "c.net"), bias=[10, 20, -30, 0], groups=2, dilation=2))
    conv = ir.layers[0]
    assert (conv.groups, conv.dilation, conv.padding, conv.stride) == (2, 2, 2, 1)
    assert conv.weight.shape == (4, 1, 3, 3) and conv.out_shape == (4, 5, 5)
    np.testing.assert_array_equal(conv.fixed.bias_mant, [10, 20, -30, 0])
    assert [n.kind for n in ir.nodes] == ["conv", "flatten", "fc"] and ir.input_shape == (2, 5, 5)


def test_conv_unrolled_with_groups_and_dilation_equals_torch():
    import torch

    from dpap_deploy.ir import ConvLayer, LIFNeurons

    rng = np.random.default_rng(0)
    w = rng.integers(-3, 4, size=(4, 2, 3, 3)).astype(np.float32)
    layer = ConvLayer("c", w, np.ones((4, 2), bool), LIFNeurons(5e-3, 1e-2, 1.0), (4, 7, 6), (4, 2),
                      stride=2, padding=1, groups=2, dilation=2)
    x = rng.random((4, 7, 6)).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w), stride=2, padding=1,
                                      dilation=2, groups=2)[0]
    assert tuple(want.shape) == layer.out_shape
    np.testing.assert_allclose(layer.unrolled() @ x.reshape(-1), want.numpy().reshape(-1), rtol=1e-5, atol=1e-5)


def test_sdnn_file_reads_as_sigma_delta_layers(tmp_path):
    ir = read_netx(nf.sdnn_net(str(tmp_path / "s.net")))
    assert [l.activation for l in ir.layers] == ["sdnn", "sdnn"]
    assert ir.layers[0].sigma_delta.vth == 6 and ir.layers[0].sigma_delta.activation == "relu"  # 0.1 * 64 -> 6
    assert ir.layers[0].neurons is None and ir.layers[0].n_in == 6


@pytest.mark.parametrize("make,message", [
    (nf.pool_net, "layer/1: layer type 'pool' is not supported: lava-dl netx cannot run it"),
    (nf.average_net, "layer/1: layer type 'average' is not supported: lava-dl netx cannot run it"),
    (nf.input_neuron_net, "layer/0/neuron: an input layer with neurons is not supported"),
    (lambda p: nf.sdnn_net(p, with_input=True), "layer/0/neuron: an input layer with neurons is not supported"),
])
def test_what_netx_cannot_run_is_refused_naming_the_group(tmp_path, make, message):
    path = make(str(tmp_path / "x.net"))
    with pytest.raises(UnsupportedLayerError) as e:
        read_netx(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_input_neurons_can_be_skipped_as_lava_dl_does(tmp_path):
    ir = read_netx(nf.input_neuron_net(str(tmp_path / "i.net")), skip_input_neurons=True)
    assert ir.metadata["input_neurons_skipped"] and ir.input_size == 6 and len(ir.layers) == 1


def test_a_neuron_value_our_lif_lacks_is_refused_naming_key_and_value(tmp_path):
    path = nf.dense_net(str(tmp_path / "r.net"), neuron={**nf.CUBA})
    with h5py.File(path, "r+") as f:  # lava-dl's CUBA has refDelay 1; a LOIHI neuron may carry another
        del f["layer/1/neuron/refDelay"]
        f["layer/1/neuron/refDelay"] = np.int64(3)
    with pytest.raises(UnsupportedLayerError, match=r"layer/1/neuron/refDelay: = 3; our LIF has refDelay 1 only"):
        read_netx(path)


def test_consumers_that_cannot_take_a_feature_name_the_layer(tmp_path):
    from dpap_deploy.export import get_target

    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    ir = read_netx(nf.dense_net(str(tmp_path / "d.net"), bias=[1, 2, 3, 4, 5], delay=[0, 1, 0, 1, 0]))
    with pytest.raises(UnsupportedLayerError, match=r"target nir takes input_bias, recurrent, if, li; unsupported: fc1 \(bias, delay\)"):
        get_target("nir")(ir, str(tmp_path / "nir"))
    sd = read_netx(nf.sdnn_net(str(tmp_path / "s.net")))
    for target in ("loihi2", "netx", "nir"):  # loihi-sim runs it (test_sdnn_files_run_in_loihi_sim_as_in_lava_dl_netx)
        with pytest.raises(UnsupportedLayerError, match=r"unsupported: fc1 \(fc, sdnn\), fc2 \(fc, sdnn\)"):
            get_target(target)(sd, str(tmp_path / target))
    with pytest.raises(UnsupportedLayerError, match=r"target emulator .*unsupported: fc1 \(fc, sdnn\)"):
        emulate(sd, np.zeros((1, 1, 6), np.uint8))
    conv_delayed = read_netx(nf.conv_net(str(tmp_path / "c.net"), delay=[0, 1, 2, 3]))  # lava-dl: one per channel
    assert conv_delayed.layers[0].delay.shape == (4, 5, 5) and (conv_delayed.layers[0].delay[:, 2, 3] == [0, 1, 2, 3]).all()
    for run in (lambda: get_target("loihi-sim")(conv_delayed, str(tmp_path / "cl")),
                lambda: get_target("netx")(conv_delayed, str(tmp_path / "cn")),
                lambda: emulate(conv_delayed, np.zeros((1, 1, 2, 5, 5), np.uint8))):
        with pytest.raises(UnsupportedLayerError, match='layer "conv1" has synaptic delays on a convolution'):
            run()
    with pytest.raises(UnsupportedLayerError, match="the mapper takes synaptic delays on fully connected layers only; "
                                                    "conv layers with delays: conv1"):
        map_network(conv_delayed, load_profile("loihi2"))


def test_our_netx_writer_round_trips_bias_delay_groups_and_dilation(tmp_path):
    """read lava-dl's file, write it with our writer: lava-dl's netx runs both files with the same spikes
    and reading ours back gives the same integers."""
    from dpap_deploy.export.netx import run_netx, write_netx

    T = 10
    for name, path in (("d", nf.dense_net(str(tmp_path / "d.net"), bias=[30, -20, 0, 50, 10], delay=[0, 1, 2, 3, 4])),
                       ("c", nf.conv_net(str(tmp_path / "c.net"), bias=[10, 20, -30, 0], groups=2, dilation=2))):
        ir = _read(path, T)
        ours = str(tmp_path / f"{name}_ours.net")
        write_netx(ir, ours)
        back = read_netx(ours)
        for a, b in zip(ir.layers, back.layers):
            np.testing.assert_array_equal(a.fixed.weight, b.fixed.weight)
            np.testing.assert_array_equal(a.fixed.bias_mant, b.fixed.bias_mant)
            assert (a.delay is None) == (b.delay is None) and (a.delay is None or np.array_equal(a.delay, b.delay))
            assert getattr(a, "groups", 1) == getattr(b, "groups", 1)
        x = nf.random_spikes((T, 2) + (ir.input_shape or (ir.input_size,)), seed=4)
        theirs = run_netx(path, x, T)
        assert theirs.sum() >= 10
        np.testing.assert_array_equal(run_netx(ours, x, T), theirs)


# -- simulation: our Lava export == lava-dl's netx == the emulator, spike for spike ---------------------
SIM_CASES = {
    "dense_bias_delay": (nf.dense_net, dict(bias=[30, -20, 0, 50, 10], delay=[0, 1, 2, 3, 4])),
    "dense_delay": (nf.dense_net, dict(sizes=(8, 6, 3), delay=[2, 0, 5, 1, 3, 4], seed=3)),
    "dense_bias": (nf.dense_net, dict(bias=[30, -20, 0, 50, 10], seed=2)),
    "conv_bias": (nf.conv_net, dict(bias=[10, 20, -30, 0])),
    "conv_groups_dilation": (nf.conv_net, dict(groups=2, dilation=2, seed=2)),
}


@pytest.mark.parametrize("case", sorted(SIM_CASES))
def test_lava_run_equals_lava_dl_netx_and_the_emulator(tmp_path, case):
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.netx import run_netx

    make, kw = SIM_CASES[case]
    T, N = 12, 3
    path = make(str(tmp_path / f"{case}.net"), **kw)
    ir = _read(path, T)
    x = nf.random_spikes((T, N) + (ir.input_shape or (ir.input_size,)), seed=1)
    theirs = run_netx(path, x, T)  # lava-dl's own Network(net_config=..., reset_interval=T, reset_offset=1)
    _, info = lava_sim.run(ir, x)
    assert 0.1 < theirs.mean() < 0.9, "the test needs output spikes, not every step"
    np.testing.assert_array_equal(info["output_spikes"], theirs)
    for engine in ("numba", "torch"):
        counts, _ = emulate(ir, x, engine=engine)
        np.testing.assert_array_equal(counts, theirs.sum(axis=0))


def test_bias_and_delay_change_the_spikes(tmp_path):
    """The fields are not ignored: without them netx's spikes differ (so the equality above can fail)."""
    from dpap_deploy.export.emulator import emulate

    T = 12
    ir = _read(nf.dense_net(str(tmp_path / "d.net"), bias=[30, -20, 0, 50, 10], delay=[0, 1, 2, 3, 4]), T)
    x = nf.random_spikes((T, 3, 6), seed=1)
    base, _ = emulate(ir, x)
    fc1 = ir.layers[0]
    for stripped in (replace(fc1, bias=None, fixed=replace(fc1.fixed, bias_mant=None)), replace(fc1, delay=None)):
        other, _ = emulate(ir.with_layers([stripped, ir.layers[1]]), x)
        assert not np.array_equal(base, other)


def _one_neuron(delay):
    """2 inputs -> 1 neuron that fires on any one input spike in the step it arrives: du = 4095 (the
    current lasts one step), dv = 0 (no leak), weight 200 * 64 > vth 100 * 64."""
    from dpap_deploy.ir import FCLayer, FixedPoint, LIFNeurons, NetworkIR

    fixed = FixedPoint(weight=np.array([[200, 200]], np.int32), weight_exp=0, du=4095, dv=0, vth=100, scale=1.0)
    layer = FCLayer("fc1", np.array([[200.0, 200.0]]), np.ones((1, 2), bool), LIFNeurons(1e-3, 1.0, 100.0), (1, 2),
                    fixed=fixed, delay=None if delay is None else np.array([delay]))
    return NetworkIR("one", 2, 16, 1e-3, [layer])


@pytest.mark.parametrize("delay,expected", [(None, [0, 5]), ([0, 0], [0, 5]), ([3, 3], [3, 8]), ([3, 1], [3, 6])])
def test_a_delay_of_d_steps_moves_the_output_spike_by_d_steps(delay, expected):
    """Input 0 spikes at step 0, input 1 at step 5; each alone fires the neuron in its arrival step, so the
    output spikes at 0 + delay[0] and 5 + delay[1] (Lava: delay 0 is a plain Sparse's one step)."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate

    ir = _one_neuron(delay)
    x = np.zeros((16, 1, 2), np.uint8)
    x[0, 0, 0] = x[5, 0, 1] = 1
    _, info = lava_sim.run(ir, x)
    assert np.flatnonzero(info["output_spikes"][:, 0, 0]).tolist() == expected
    for engine in ("numba", "torch"):
        _, rasters = emulate(ir, x, record=True, engine=engine)
        assert np.flatnonzero(rasters[0][:, 0, 0]).tolist() == expected


def test_a_delay_past_the_window_arrives_in_the_next_sample_in_lava_and_the_emulator():
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate

    ir = replace(_one_neuron([3, 3]), time_steps=6)
    x = np.zeros((6, 2, 2), np.uint8)
    x[4, 0, 0] = 1  # sample 0, step 4 + 3 = sample 1, step 1
    _, info = lava_sim.run(ir, x)
    assert info["output_spikes"][:, :, 0].T.tolist() == [[0] * 6, [0, 1, 0, 0, 0, 0]]
    for engine in ("numba", "torch"):
        counts, _ = emulate(ir, x, engine=engine)
        assert counts[:, 0].tolist() == [0, 1]


# -- mapping: what a delay and a bias cost on a core -----------------------------------------------------
def _fc(n_out, n_in, delay=None, bias_mant=None):
    from dpap_deploy.ir import FCLayer, FixedPoint, LIFNeurons, NetworkIR

    w = np.full((n_out, n_in), 2, np.int32)
    fixed = FixedPoint(weight=w, weight_exp=0, du=1023, dv=123, vth=64, scale=1.0,
                       bias_mant=None if bias_mant is None else np.full(n_out, bias_mant), bias_exp=6)
    layer = FCLayer("fc1", w.astype(np.float32), np.ones((n_out, n_in), bool), LIFNeurons(4e-3, 3e-2, 64.0),
                    (n_out, n_in), fixed=fixed, bias=None if bias_mant is None else np.full(n_out, float(bias_mant)),
                    delay=None if delay is None else np.full((n_out, n_in), delay))
    return NetworkIR("fc", n_in, 8, 1e-3, [layer])


def test_a_delayed_layer_pays_the_delay_bits_per_synapse():
    """loihi2: 8 weight bits, 6 delay bits (estimate), 10 header bits, 64-bit words; 2 inputs x 10 neurons,
    dense format (cheaper here): per input axon ceil((10 * 8 + 10) / 64) words = 2 words = 128 bits without
    delays, ceil((10 * (8 + 6) + 10) / 64) = 3 words = 192 bits with them; 2 axons: 256 and 384 bits."""
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    p = load_profile("loihi2")
    assert (p.synapse_cost.delay_bits, p.numerics.weight_bits, p.synapse_cost.group_header_bits) == (6, 8, 10)
    plain, delayed = (map_network(_fc(10, 2, delay=d), p).to_report()["per_layer"][0] for d in (None, 3))
    assert plain["synaptic_memory_bits"] == 256 and delayed["synaptic_memory_bits"] == 384


def test_a_bias_is_one_register_per_neuron_and_is_range_checked():
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    p = load_profile("loihi2")
    report = map_network(_fc(10, 2, bias_mant=-4095), p).to_report()
    assert report["per_layer"][0]["bias_registers"] == 10 and report["per_core"][0]["bias_registers"] == 10
    assert report["fits"]
    too_big = map_network(_fc(10, 2, bias_mant=4096), p)  # 13-bit signed mantissa: -4096..4095
    assert too_big.violations == ['layer "fc1": bias_mant up to 4096 needs more than the 13 signed bits loihi2 has']


def test_delays_beyond_the_chip_and_profiles_without_figures_are_violations():
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    assert map_network(_fc(4, 2, delay=63), load_profile("loihi2")).fits  # 63 + 1 = 64 steps: the 6-bit field
    over = map_network(_fc(4, 2, delay=64), load_profile("loihi2"))
    assert over.violations == ['layer "fc1": synaptic delay of 64 steps beyond the first; loihi2 delays a spike by '
                               "at most 64 steps in all"]
    xylo = map_network(_fc(4, 2, delay=1, bias_mant=3), load_profile("xylo-audio2"))
    assert any("delays a spike by at most 1 steps" in v for v in xylo.violations)
    assert any('layer "fc1": has a bias; xylo-audio2 gives no neuron bias figure' in v for v in xylo.violations)


def test_lava_dl_files_map_with_their_costs(tmp_path):
    """fc1: 6 inputs x 5 neurons, every weight non-zero, delays: dense format, per axon
    ceil((5 * (8 + 6) + 10) / 64) = 2 words = 128 bits, 6 axons = 768 bits; 5 bias registers."""
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    ir = read_netx(nf.dense_net(str(tmp_path / "d.net"), bias=[2, 2, 0, 4, 6], delay=[0, 1, 2, 3, 4], seed=2))
    assert np.count_nonzero(ir.layers[0].fixed.weight) == 30
    fc1 = map_network(ir, load_profile("loihi2")).to_report()["per_layer"][0]
    assert (fc1["synaptic_memory_bits"], fc1["bias_registers"], fc1["synapses"]) == (768, 5, 30)
    sd = map_network(read_netx(nf.sdnn_net(str(tmp_path / "s.net"))), load_profile("loihi2"))
    assert sd.fits and sum(c.neurons for c in sd.cores) == 4 + 3
    assert any('layer "fc1": sigma-delta neurons' in n for n in sd.notes)
    conv = read_netx(nf.conv_net(str(tmp_path / "c.net"), groups=2, dilation=2))
    m = map_network(conv, load_profile("loihi2"))  # unrolled synapses of the grouped, dilated kernel
    assert sum(ch.synapses for c in m.cores for ch in c.chunks if ch.layer == "conv1") == conv.layers[0].unrolled().nnz


def test_dpap_report_on_lava_dl_files(tmp_path):
    import json
    import os
    import subprocess
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "dpap-report")  # the installed console script

    def report(path, *args):
        return subprocess.run([cli, path, *args], capture_output=True, text=True, timeout=300)

    ok = report(nf.dense_net(str(tmp_path / "d.net"), bias=[2, 2, 0, 4, 6], delay=[0, 1, 2, 3, 4]), "--json")
    assert ok.returncode == 0, ok.stderr
    res = json.loads(ok.stdout)
    assert res["per_core"][0]["layer"] == "fc1+fc2" and res["per_core"][0]["bias_registers"] == 5
    bad = report(nf.pool_net(str(tmp_path / "p.net")))
    assert bad.returncode == 2
    assert "layer/1: layer type 'pool' is not supported: lava-dl netx cannot run it" in bad.stderr
    assert "this reader takes input, dense, conv and flatten" in bad.stderr
    sd = nf.sdnn_net(str(tmp_path / "s.net"), with_input=True)  # lava-dl's SDNN files start with Delta neurons
    refused = report(sd)
    assert refused.returncode == 2 and "layer/0/neuron: an input layer with neurons is not supported" in refused.stderr
    assert "dpap-report --skip-input-neurons" in refused.stderr
    skipped = report(sd, "--skip-input-neurons", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert [e["neurons"] for e in json.loads(skipped.stdout)["per_layer"]] == [4, 3]
    (tmp_path / "x.nir").write_bytes(b"")
    nir_file = report(str(tmp_path / "x.nir"), "--skip-input-neurons")
    assert nir_file.returncode == 2 and "option 'skip_input_neurons' does not apply to a .nir file" in nir_file.stderr


def test_requantising_keeps_the_bias_in_threshold_units(tmp_path):
    """quantize() rebuilds FixedPoint from the floats: the bias mantissa must follow the new scale
    (bias_mant / vth = bias / v_th), with netx's bias_exp 6, and too large a bias is refused by name."""
    from dpap_deploy.errors import QuantizationError
    from dpap_deploy.export.quantize import quantize

    ir = read_netx(nf.dense_net(str(tmp_path / "d.net"), bias=[30, -20, 0, 50, 10]))
    q = quantize(ir).layers[0]
    assert q.fixed.bias_exp == 6
    np.testing.assert_allclose(q.fixed.bias_mant / q.fixed.vth, np.array([30, -20, 0, 50, 10]) / 64, atol=0.5 / q.fixed.vth)
    huge = ir.with_layers([replace(ir.layers[0], bias=np.full(5, 1e6, np.float32)), ir.layers[1]])
    with pytest.raises(QuantizationError, match="layer 'fc1': bias_mant up to"):
        quantize(huge)


def test_a_biased_layer_before_a_delayed_one_matches_lava_from_the_first_step():
    """Layer b's bias alone (120 << 6 > vth 100 << 6) fires it at every step, also at Lava steps 1 and 2,
    before its first reset (offset 3). Those spikes reach c through delay 3 at steps 6 and 7, after c's first
    reset (offset 4): within-sample steps 1 and 2 of sample 0, so d fires at sample 0's step 1 only
    because of them. The emulator's prologue reproduces that."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.ir import FCLayer, FixedPoint, LIFNeurons, NetworkIR

    def layer(name, bias=None, delay=None, n_out=2):
        w = np.full((n_out, 2), 200, np.int32)
        fx = FixedPoint(weight=w, weight_exp=0, du=4095, dv=0, vth=100, scale=1.0,
                        bias_mant=None if bias is None else np.full(n_out, bias), bias_exp=6)
        return FCLayer(name, w.astype(np.float32), np.ones((n_out, 2), bool), LIFNeurons(1e-3, 1.0, 100.0), (n_out, 2),
                       fixed=fx, bias=None if bias is None else np.full(n_out, float(bias)),
                       delay=None if delay is None else np.full((n_out, 2), delay))

    ir = NetworkIR("pre", 2, 8, 1e-3, [layer("a"), layer("b", bias=120), layer("c", delay=3), layer("d", n_out=1)])
    x = np.zeros((8, 2, 2), np.uint8)
    _, info = lava_sim.run(ir, x)
    assert info["output_spikes"][1, 0, 0] == 1 and info["output_spikes"][0, 0, 0] == 0
    for engine in ("numba", "torch"):
        _, rasters = emulate(ir, x, record=True, engine=engine)
        np.testing.assert_array_equal(rasters[-1], info["output_spikes"])


def test_ir_format_4_saves_and_loads_the_new_fields(tmp_path):
    from dpap_deploy.ir import IR_FORMAT, NetworkIR

    ir = read_netx(nf.conv_net(str(tmp_path / "c.net"), bias=[1, 2, 3, 4], groups=2, dilation=2))
    d = read_netx(nf.dense_net(str(tmp_path / "d.net"), bias=[2, 2, 0, 4, 6], delay=[0, 1, 2, 3, 4]))
    s = read_netx(nf.sdnn_net(str(tmp_path / "s.net")))
    for net, name in ((ir, "c"), (d, "d"), (s, "s")):
        net.save(str(tmp_path / f"{name}.npz"))
        back = NetworkIR.load(str(tmp_path / f"{name}.npz"))
        for a, b in zip(net.layers, back.layers):
            assert a.features() == b.features() and a.sigma_delta == b.sigma_delta and a.activation == b.activation
            for key in ("bias", "delay"):
                assert (getattr(a, key) is None) == (getattr(b, key) is None)
                if getattr(a, key) is not None:
                    np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
            assert (a.fixed.bias_mant is None) == (b.fixed.bias_mant is None) and a.fixed.bias_exp == b.fixed.bias_exp
    assert IR_FORMAT == "dpap-deploy-ir/4"


def test_ir_rejects_bias_and_delay_of_the_wrong_shape_naming_the_layer():
    from dpap_deploy.errors import IRError
    from dpap_deploy.ir import FCLayer, LIFNeurons

    common = dict(weight=np.ones((3, 2)), mask=np.ones((3, 2), bool), neurons=LIFNeurons(1e-3, 1e-2, 1.0),
                  dense_shape=(3, 2))
    with pytest.raises(IRError, match=r"layer 'fc9': bias \(2,\) must be finite of shape \(3,\)"):
        FCLayer("fc9", bias=np.zeros(2), **common)
    with pytest.raises(IRError, match=r"layer 'fc9': delay \(3, 2\) float64 must be integer time steps >= 0"):
        FCLayer("fc9", delay=np.zeros((3, 2)), **common)
    with pytest.raises(IRError, match=r"layer 'fc9': delay \(3, 2\) int64 must be integer time steps >= 0"):
        FCLayer("fc9", delay=-np.ones((3, 2), np.int64), **common)


def test_a_loihi_neuron_group_reads_as_cuba_and_graded_spikes_are_refused(tmp_path):
    path = nf.dense_net(str(tmp_path / "l.net"))
    cuba = read_netx(path)
    with h5py.File(path, "r+") as f:  # relabel lava-dl's CUBA group as the older LOIHI type netx also takes
        del f["layer/0/neuron/type"]
        f["layer/0/neuron/type"] = b"LOIHI"
    loihi = read_netx(path)
    a, b = loihi.layers[0].fixed, cuba.layers[0].fixed
    assert np.array_equal(a.weight, b.weight) and (a.du, a.dv, a.vth) == (b.du, b.dv, b.vth) == (1023, 123, 64)
    with h5py.File(path, "r+") as f:
        del f["layer/0/neuron/gradedSpike"]
        f["layer/0/neuron/gradedSpike"] = True
    with pytest.raises(UnsupportedLayerError, match=r"layer/0/neuron/gradedSpike: = 1; our LIF has gradedSpike 0 only"):
        read_netx(path)


def test_synaptic_operation_counts_take_groups(tmp_path):
    """conv 2 -> 4 channels in 2 groups, 3x3, stride 1: an input pixel reaches the 2 output channels of its
    group at 3 * 3 positions, 18 in the dense count; the pruned count is the unrolled synapses it has."""
    from dpap_deploy.energy import dense_fan_out, fan_out

    ir = read_netx(nf.conv_net(str(tmp_path / "c.net"), groups=2, dilation=2))
    assert set(dense_fan_out(ir)[0].tolist()) == {18}
    assert fan_out(ir)[0].sum() == ir.layers[0].unrolled(fixed=True).nnz


# -- sigma-delta (SDNN) networks in loihi-sim, against lava-dl's own netx run --------------------------------

@pytest.mark.parametrize("sizes,seed,T,N", [((6, 4, 3), 1, 10, 3), ((5, 6, 4, 2), 2, 16, 2)])
def test_sdnn_files_run_in_loihi_sim_as_in_lava_dl_netx(tmp_path, sizes, seed, T, N):
    """lava-dl's writer -> our IR -> Lava (Sparse + SigmaDelta) equals lava-dl netx's Network on the same
    file, graded value for graded value, over the whole run (the state carries across samples in both)."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.netx import run_netx

    path = nf.sdnn_net(str(tmp_path / "s.net"), sizes=sizes, seed=seed)
    ir = _read(path, T)
    x = np.random.default_rng(seed).integers(-2048, 2049, size=(T, N, sizes[0])).astype(np.int32)  # graded, signed, 4096 = 1.0
    counts, info = lava_sim.run(ir, x)
    ref = run_netx(path, x, T, input_message_bits=lava_sim.SDNN_INPUT_MESSAGE_BITS)
    ours = info["output_spikes"]
    assert ours.dtype == np.int32 and ours.shape == ref.shape == (T, N, sizes[-1])
    assert np.count_nonzero(ref) >= 3 and len(np.unique(ref)) > 2  # graded, not 0/1 and not silent
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(counts, ref.sum(axis=0))


def _sdnn_ir(weight: int, vth: int, T: int):
    from dpap_deploy.ir import FCLayer, FixedPoint, NetworkIR, SigmaDeltaNeurons

    w = np.array([[weight]], np.int32)
    fx = FixedPoint(weight=w, weight_exp=0, du=0, dv=0, vth=vth, scale=1.0)
    layer = FCLayer("sd", w.astype(np.float64), np.ones((1, 1), bool), None, (1, 1), fixed=fx, activation="sdnn",
                    sigma_delta=SigmaDeltaNeurons(vth=vth))
    return NetworkIR("one", 1, T, 1e-3, [layer])


def test_one_sigma_delta_neuron_by_hand():
    """Lava's PySigmaDeltaModelFixed (lava/proc/sdn/models.py) with w = 64, vThMant 1 (threshold 1 << 12 = 4096):
    a_in = 64 x; sigma += a_in; act = max(sigma, 0); delta = act - act_prev + residue; s = delta if
    |delta| >= 4096 else 0; residue = delta - s; out = s >> 6.
    x = 100: sigma 6400, delta 6400 -> out 100.      x = 0: delta 0 -> 0.
    x = 50: sigma 9600, delta 3200 < 4096 -> 0, residue 3200.
    x = 30: sigma 11520, delta 1920 + 3200 = 5120 -> out 80.
    x = -200: sigma -1280, act 0, delta -11520 -> out -180 (arithmetic shift).   x = 0: 0."""
    from dpap_deploy.export import lava_sim

    x = np.array([100, 0, 50, 30, -200, 0], np.int32).reshape(6, 1, 1)
    counts, info = lava_sim.run(_sdnn_ir(64, 1, 6), x)
    assert info["output_spikes"][:, 0, 0].tolist() == [100, 0, 0, 80, -180, 0]
    assert counts.tolist() == [[0]]


def test_sdnn_mixes_not_verified_are_refused_naming_the_layer(tmp_path):
    from dpap_deploy.export import get_target
    from dpap_deploy.export.emulator import emulate

    sd = _read(nf.sdnn_net(str(tmp_path / "s.net"), sizes=(6, 4, 3)), 4)
    lif = read_netx(nf.dense_net(str(tmp_path / "d.net"), sizes=(6, 4, 3)))
    mixed = sd.with_layers([sd.layers[0], lif.layers[1]])
    with pytest.raises(UnsupportedLayerError, match=r"target loihi-sim .*unsupported: fc1 \(fc, sdnn\)"):
        get_target("loihi-sim")(mixed, str(tmp_path / "m"))
    unit = sd.with_layers([replace(sd.layers[0], sigma_delta=replace(sd.layers[0].sigma_delta, activation="unit")),
                           sd.layers[1]])
    with pytest.raises(UnsupportedLayerError, match='sigma-delta layer "fc1" has activation \'unit\'; lava-dl netx runs ReLU'):
        get_target("loihi-sim")(unit, str(tmp_path / "u"))
    with pytest.raises(UnsupportedLayerError, match=r"target emulator .*unsupported: fc1 \(fc, sdnn\)"):
        emulate(sd, np.zeros((1, 1, 6), np.int32))
    (tmp_path / "ok").mkdir()
    res = get_target("loihi-sim")(sd, str(tmp_path / "ok"), spikes=np.full((4, 2, 6), 64, np.int32))
    assert res.output_spikes.dtype == np.int32 and res.counts.shape == (2, 3)



def test_verify_skips_the_emulator_for_sigma_delta_saying_why_and_netx_reference_is_graded(tmp_path):
    """verify (dpap_deploy/stages.py) asks the emulator first: a sigma-delta network is skipped with the
    emulator's refusal as the reason, a LIF one is not; the --from FILE reference (lava-dl netx) of a
    sigma-delta file runs with graded input and equals loihi-sim."""
    from types import SimpleNamespace

    from dpap_deploy import foreign, stages
    from dpap_deploy.export import lava_sim

    path = nf.sdnn_net(str(tmp_path / "s.net"), sizes=(6, 4, 3), seed=1)
    sd = _read(path, 6)
    ctx = SimpleNamespace(exported=sd, agreement={})
    assert not stages._emulator_models(ctx)
    assert "target emulator" in ctx.agreement["emulator_skipped"] and "fc1 (fc, sdnn)" in ctx.agreement["emulator_skipped"]
    lif = SimpleNamespace(exported=read_netx(nf.dense_net(str(tmp_path / "d.net"))), agreement={})
    assert stages._emulator_models(lif) and lif.agreement == {}
    x = np.random.default_rng(4).integers(0, 65, size=(6, 2, 6)).astype(np.int32)
    counts, ref = foreign._run_netx(path, sd, x)
    _, info = lava_sim.run(sd, x)
    assert ref.dtype == np.int32 and np.count_nonzero(ref) > 0
    np.testing.assert_array_equal(ref, info["output_spikes"])
    np.testing.assert_array_equal(counts, ref.sum(axis=0))


def test_dpap_export_runs_a_sigma_delta_file_against_lava_dl_netx(tmp_path):
    """``dpap-export --target loihi-sim --from s.net --data digits``: the whole pipeline on a sigma-delta file
    from lava-dl's writer: lava-dl netx's graded output equals ours at every step, the emulator is skipped
    saying why, and synaptic operations count graded events (not their values)."""
    import json
    import os
    import subprocess
    import sys

    path = nf.sdnn_net(str(tmp_path / "s.net"), sizes=(64, 16, 10), seed=3)
    cli = os.path.join(os.path.dirname(sys.executable), "dpap-export")
    r = subprocess.run([cli, "--target", "loihi-sim", "--from", path, "--data", "digits", "--time-steps", "8",
                        "--out", str(tmp_path / "run"), "--max-test", "12", "--quiet"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    ag = report["agreement"]
    assert ag["compared"] == "lava_dl_netx vs lava" and ag["reference_spikes"] == 1.0 and ag["predictions"] == 1.0
    assert "spikes" not in ag and "unsupported: fc1 (fc, sdnn), fc2 (fc, sdnn)" in ag["emulator_skipped"]
    assert "emulator" not in report["accuracy"]
    ops = report["energy"]["synops_per_sample"]["lava"]
    assert 0 < ops <= 8 * (964 + 16 * 10)  # at most every synapse at every step: events, not graded values
