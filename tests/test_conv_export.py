"""Conv SNNs to Lava: pooling folded into the weights, Lava Conv (WHC, flipped kernel), flatten, Sparse.

Checked three ways on event-digits: Lava's float models reproduce the Norse model's output spikes
(so layout, flip, pooling fold, flatten order and delays are right), Lava's fixed-point run equals
the emulator spike for spike (dense and channel-pruned), and the IR round-trips through its file.
"""
import numpy as np
import pytest
import torch

from dpap_deploy.errors import UnsupportedLayerError
from dpap_deploy.data.event_digits import load_event_digits
from dpap_deploy.export import lava_sim
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.quantize import quantize
from dpap_deploy.ir import NetworkIR
from dpap_deploy.mapping import conv_connectivity, map_network
from dpap_deploy.hardware_profiles import load_profile
from dpap_deploy.train.compact import to_ir, compact, fold_pool_into_conv
from dpap_deploy.train.models import SpikingCNN


@pytest.fixture(scope="module")
def events():
    return load_event_digits(time_steps=6, limit=100)


def _model(ds, prune=False, gate="hold"):
    torch.manual_seed(0)
    m = SpikingCNN(ds.x_train.shape[2:], (4, 6), (16,), 10, time_gate=gate)
    with torch.no_grad():
        for g, layer in zip((2.0, 3.0, 6.0, 5.0), m.layers):
            layer.weight.mul_(g)
        if prune:  # conv2 loses input channel 1 of every filter and filter 5 entirely
            m.masks[1][:, 1] = False
            m.masks[1][5] = False
            m.apply_masks()
    return compact(m)[0] if prune else m


def _frames(ds, n=6):
    return np.ascontiguousarray(np.swapaxes(ds.x_test[:n], 0, 1)).astype(np.float32)  # (T, N, C, H, W)


def test_pool_fold_is_exact():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(3, 2, 3, 3))
    z = torch.from_numpy(rng.random((1, 2, 8, 8)))
    ref = torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(z, 2), torch.from_numpy(k), padding=1)
    k2, stride, pad = fold_pool_into_conv(k, 2, 1)
    got = torch.nn.functional.conv2d(z, torch.from_numpy(k2), stride=stride, padding=pad)
    assert k2.shape == (3, 2, 6, 6) and (stride, pad) == (2, 2)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-12)


def test_lava_float_reproduces_norse_on_a_conv_snn(events):
    m = _model(events)
    x = _frames(events)
    ours, records = m(torch.from_numpy(x))
    assert ours.sum() >= 20, "the test needs output spikes"
    counts, info = lava_sim.run(to_ir(m, 6), x, precision="float")
    np.testing.assert_array_equal(counts, ours.detach().numpy())


@pytest.mark.parametrize("prune", [False, True])
def test_lava_fixed_point_conv_equals_the_emulator(events, prune, tmp_path):
    m = _model(events, prune)
    ir = quantize(to_ir(m, 6))
    if prune:  # conv1's channel 1 fed nothing any more: compaction removed it, and filter 5 of conv2
        assert ir.layers[0].out_shape[0] == 3 and ir.layers[1].out_shape[0] == 5
    x = _frames(events, 16)
    counts, info = lava_sim.run(ir, x, record_hidden=True)
    emu, rasters = emulate(ir, x, record=True)
    assert counts.sum() >= 20
    np.testing.assert_array_equal(rasters[-1], info["output_spikes"])
    for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):  # conv populations in (C, H, W) order
        assert lavas.sum() > 0
        np.testing.assert_array_equal(mine, lavas)
    # the file round trip keeps the conv geometry
    ir.save(str(tmp_path / "n.npz"))
    back = NetworkIR.load(str(tmp_path / "n.npz"))
    assert back.input_shape == ir.input_shape and back.layers[1].stride == 2 and back.layers[1].padding == 2
    np.testing.assert_array_equal(emulate(back, x)[0], emu)


def test_conv_layers_map_unrolled(events):
    ir = to_ir(_model(events), 6)
    c1 = ir.layers[0]
    conn = conv_connectivity(c1)
    # 3x3 kernel, padding 1, 2 input channels, 20x20: interior outputs see 18 inputs, corners 8
    per_out = np.diff(conn.indptr).reshape(c1.out_shape)
    assert per_out[0, 10, 10] == 18 and per_out[0, 0, 0] == 8
    m = map_network(ir, load_profile("loihi2"))
    assert m.fits and sum(c.neurons for c in m.cores) == ir.neurons


def test_a_pooling_that_cannot_be_folded_stays_a_node_that_lava_refuses(events):
    """A pooled map whose size is not a multiple of the factor feeds a convolution: folding would
    read pixels the pooling drops, so the IR keeps an AvgPool node; Lava and the mapper refuse it
    naming the node, while NIR and ONNX (which have a pooling) could export it."""
    from dpap_deploy.export.lava_sim import check_supported
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.mapping import map_network

    torch.manual_seed(0)
    m = SpikingCNN((2, 12, 12), (4, 4, 4), (8,), 10)  # 12 -> 6 -> 3: every pooled map a conv reads is even
    m_odd = SpikingCNN((2, 10, 10), (4, 4, 4), (8,), 10)  # 10 -> 5 -> conv3 would read avgpool of a 5x5 map
    assert [n.kind for n in to_ir(m, 4).nodes] == ["conv", "conv", "conv", "flatten", "fc", "fc"]
    odd = to_ir(m_odd, 4)
    assert [(n.kind, tuple(n.in_shape)) for n in odd.nodes[:4]] == [
        ("conv", (2, 10, 10)), ("conv", (4, 10, 10)), ("avgpool", (4, 5, 5)), ("conv", (4, 2, 2))]
    with pytest.raises(UnsupportedLayerError, match=r"unsupported: pool1 \(avgpool\)"):
        check_supported(odd)
    with pytest.raises(UnsupportedLayerError, match=r"the mapper .* unsupported: pool1 \(avgpool\)"):
        map_network(odd, load_profile("loihi2"))


def test_synapse_counts_are_the_models_not_the_folded_copies(events):
    m = _model(events, prune=True)
    ir = to_ir(m, 6)
    # a folded pooling repeats every weight p*p times in the exported layer; counted once
    for layer, w, mask in zip(ir.layers, m.layers, m.masks):
        assert layer.synapses == int(torch.count_nonzero(w.weight * mask)), layer.name
    assert ir.layers[1].pool_fold == 2 and ir.layers[2].pool_fold == 2 and ir.layers[0].pool_fold == 1
    # dense sizes are those of the model before compaction (4-6-16-10 channels/neurons), on pooled inputs
    d = m.dense_widths
    assert [l.synapses_dense for l in ir.layers] == [d[0] * 2 * 9, d[1] * d[0] * 9, d[2] * d[1] * m.flat_hw, d[3] * d[2]]


def test_timestep_masks_of_conv_channels_are_gated_in_lava(events):
    """Spatio-temporal DPAP on a conv SNN with the ``"drop"`` gate (a model saved before ``"hold"``;
    docs/dpap.md sec. 7.4): a conv channel silenced at a step (every pixel of it) and an FC neuron
    silenced at a step are dropped alike by Norse, by Lava's float and fixed-point runs (a
    ``SpikeGate`` per population, mask broadcast over ``(W, H)``) and by both emulator engines.
    The ``"hold"`` gate on conv layers: tests/test_timestep.py."""
    m = _model(events, gate="drop")
    x = _frames(events, 16)
    T = x.shape[0]
    _, rec = m(torch.from_numpy(x))
    silenced = {}
    for l in (0, 1, 2):  # conv1, conv2 (channels) and fc1 (neurons): three (unit, step) pairs each where they spike
        s = rec[l][1].detach().numpy()
        per_unit = s.sum(axis=(1, 3, 4)) if s.ndim == 5 else s.sum(axis=1)  # (T, units)
        pairs = np.argwhere(per_unit[: T - 1] > 0)[[0, len(per_unit) // 2, -1]]
        mask = torch.ones(per_unit.shape[1], T, dtype=torch.bool)
        for t, u in pairs:
            mask[u, t] = False
        m.set_time_mask(l, mask)
        silenced[l] = pairs
    out, rec = m(torch.from_numpy(x))
    for l, pairs in silenced.items():
        for t, u in pairs:
            assert float(rec[l][1][t, :, u].sum()) == 0.0
    ir = to_ir(m, T)
    assert ir.time_steps == T and ir.silenced_inside_window()
    counts, _ = lava_sim.run(ir, x, precision="float")
    np.testing.assert_array_equal(counts, out.detach().numpy())

    qir = quantize(ir)
    counts, info = lava_sim.run(qir, x, record_hidden=True)
    assert counts.sum() >= 20
    for l, pairs in silenced.items():
        lavas = info["hidden_spikes"][l].reshape(T, x.shape[1], qir.layers[l].time_mask.shape[0], -1)
        assert all(lavas[t, :, u].sum() == 0 for t, u in pairs)
    for engine in ("numba", "torch"):
        emu, rasters = emulate(qir, x, record=True, engine=engine)
        np.testing.assert_array_equal(emu, counts)
        for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):
            np.testing.assert_array_equal(mine, lavas)
