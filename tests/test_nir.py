"""NIR export: units, shapes after pruning, read back by nir and run by norse.torch.from_nir."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import IRError, UnsupportedLayerError
from dpap_deploy.export import get_target
from dpap_deploy.export.nir_export import read_checked, run_in_norse, to_nir
from dpap_deploy.train.compact import compact, to_ir
from dpap_deploy.train.models import SpikingMLP


def _pruned_model():
    torch.manual_seed(0)
    m = SpikingMLP([64, 20, 12, 10])
    with torch.no_grad():
        for layer in m.layers:
            layer.weight.mul_(8.0)
        m.masks[0][5:9] = False          # four fc1 neurons lose every synapse: compaction removes them
        m.masks[1][:6, :3] = False       # and some fc2 synapses go
        m.apply_masks()
    small, _ = compact(m)
    return small


def test_graph_has_seconds_real_shapes_and_zeros_for_pruned_synapses(tmp_path):
    model = _pruned_model()
    ir = to_ir(model, 8)
    g = to_nir(ir)
    assert ir.layers[0].n_out == 16  # 20 - 4 removed neurons
    assert g.nodes["fc1"].weight.shape == (16, 64) and g.nodes["fc2"].weight.shape == (12, 16)
    lif = g.nodes["fc1_lif"]
    # Norse defaults: tau_syn_inv 200 /s, tau_mem_inv 100 /s -> 5 ms and 10 ms (not dt/tau_inv, norse issue 411)
    np.testing.assert_allclose(lif.tau_syn, 0.005)
    np.testing.assert_allclose(lif.tau_mem, 0.010)
    np.testing.assert_allclose(lif.w_in, 5.0)  # tau_syn / dt with dt = 1 ms
    assert lif.tau_syn.shape == (16,)
    assert (g.nodes["fc2"].weight[~ir.layers[1].mask] == 0).all()
    assert ("fc3_lif", "output") in g.edges and ("input", "fc1") in g.edges
    assert g.metadata["dt_s"] == pytest.approx(1e-3) and g.metadata["time_steps"] == 8


def test_file_read_back_and_run_by_norse_gives_our_spikes(tmp_path, digits):
    model = _pruned_model()
    ir = to_ir(model, 16)
    x = rate_encode(digits.x_test[:30], 16, seed=3)
    res = get_target("nir")(ir, str(tmp_path), spikes=x)
    ours, _ = model(torch.from_numpy(x))
    assert ours.sum() > 20, "the test needs output spikes"
    np.testing.assert_array_equal(res.counts, ours.detach().numpy().astype(np.int64))
    assert "norse.torch.from_nir" in res.files[0]["verified_by"]


def test_truncated_or_foreign_files_are_named(tmp_path):
    ir = to_ir(_pruned_model(), 8)
    get_target("nir")(ir, str(tmp_path))
    path = tmp_path / "network.nir"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(IRError, match="network.nir: not a readable NIR graph"):
        read_checked(str(path), ir)
    other = ir.with_layers([replace(ir.layers[0], weight=ir.layers[0].weight * 2)] + ir.layers[1:])
    get_target("nir")(ir, str(tmp_path))
    with pytest.raises(IRError, match="node 'fc1' weight differs"):
        read_checked(str(path), other)


def test_unsupported_layers_are_rejected_by_name():
    ir = to_ir(_pruned_model(), 8)
    ann = ir.with_layers([replace(ir.layers[0], neurons=None, activation="relu")] + ir.layers[1:])
    with pytest.raises(UnsupportedLayerError, match=r"target nir supports .*unsupported: fc1 \(fc, relu\)"):
        to_nir(ann)


def test_conv_snn_to_nir_and_back_through_norse(tmp_path):
    from dpap_deploy.data.event_digits import load_event_digits
    from dpap_deploy.train.compact import to_ir
    from test_conv_export import _frames, _model

    ev = load_event_digits(time_steps=6, limit=100)
    model = _model(ev, prune=True)
    x = _frames(ev, 16)
    res = get_target("nir")(to_ir(model, 6), str(tmp_path), spikes=x)
    ours, _ = model(torch.from_numpy(x))
    assert ours.sum() >= 10
    np.testing.assert_array_equal(res.counts, ours.detach().numpy().astype(np.int64))
    g = read_checked(str(tmp_path / "network.nir"), to_ir(model, 6))
    assert type(g.nodes["conv2"]).__name__ == "Conv2d" and np.all(np.asarray(g.nodes["conv2"].stride) == 2)
    assert type(g.nodes["fc1_flatten"]).__name__ == "Flatten"
    assert g.nodes["conv1_lif"].tau_mem.shape == (3, 20, 20)  # per neuron of the compacted conv population
