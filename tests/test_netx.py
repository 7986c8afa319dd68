"""netx HDF5 export: lava-dl loads the file unchanged and it runs with loihi-sim's spikes."""
from dataclasses import replace

import h5py
import numpy as np
import pytest

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import IRError, UnsupportedLayerError
from dpap_deploy.export import get_target, lava_sim
from dpap_deploy.export.netx import load_network, write_netx
from test_lava import _network


@pytest.mark.parametrize("density", [1.0, 0.4])
def test_netx_file_runs_in_lava_dl_with_the_same_spikes(tmp_path, digits, density):
    ir = _network([64, 24, 16, 10], T=12, gains=[12.0, 10.0, 10.0], density=density, seed=2)
    x = rate_encode(digits.x_test[:10], 12, seed=6)
    res = get_target("netx")(ir, str(tmp_path), spikes=x)
    _, info = lava_sim.run(ir, x)
    assert info["output_spikes"].sum() > 10, "the test needs output spikes"
    np.testing.assert_array_equal(res.output_spikes, info["output_spikes"])
    assert "lava.lib.dl.netx" in res.files[0]["verified_by"]


def test_netx_layout_is_what_lava_dl_reads(tmp_path):
    ir = _network([64, 12, 10], T=8, gains=[10.0, 10.0], density=0.5)
    path = str(tmp_path / "n.net")
    write_netx(ir, path)
    with h5py.File(path) as f:
        assert [f["layer"][k]["type"][0].decode() for k in ("0", "1", "2")] == ["input", "dense", "dense"]
        l1 = f["layer/1"]
        assert l1["weight"].dtype.kind == "i" and l1["weight"].shape == (12, 64)
        assert (l1["weight"][()][~ir.layers[0].mask] == 0).all()
        assert l1["neuron/iDecay"][()] == ir.layers[0].fixed.du + 1  # netx: du = iDecay - 1
        assert l1["neuron/vDecay"][()] == ir.layers[0].fixed.dv and l1["neuron/vThMant"][()] == ir.layers[0].fixed.vth
    net = load_network(path, 8)
    assert len(net.layers) == 2 and net.out.shape == (10,)


def test_netx_rejects_what_it_cannot_express_and_bad_files(tmp_path):
    ir = _network([64, 12, 10], T=8, gains=[10.0, 10.0], density=0.5)
    l1 = ir.layers[0]
    shifted = ir.with_layers([replace(l1, fixed=replace(l1.fixed, weight_exp=-1))] + ir.layers[1:])
    with pytest.raises(UnsupportedLayerError, match='target netx: layer "fc1" needs weight_exp -1'):
        get_target("netx")(shifted, str(tmp_path))
    bad = tmp_path / "cut.net"
    write_netx(ir, str(bad))
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(IRError, match="cut.net: lava-dl netx cannot load it"):
        load_network(str(bad), 8)


def test_conv_snn_netx_file_runs_with_loihi_sim_spikes(tmp_path):
    from dpap_deploy.data.event_digits import load_event_digits
    from dpap_deploy.export.quantize import quantize
    from dpap_deploy.train.compact import to_ir
    from test_conv_export import _frames, _model

    ev = load_event_digits(time_steps=6, limit=100)
    ir = to_ir(_model(ev, prune=True), 6)
    x = _frames(ev, 16)
    res = get_target("netx")(ir, str(tmp_path), spikes=x)
    q = quantize(ir, min_vth=1)  # what the netx target writes: weight_exp 0 everywhere
    assert all(l.fixed.weight_exp == 0 for l in q.layers)
    _, info = lava_sim.run(q, x)
    assert info["output_spikes"].sum() >= 10
    np.testing.assert_array_equal(res.output_spikes, info["output_spikes"])
    with h5py.File(tmp_path / "network.net") as f:
        types = [f["layer"][str(k)]["type"][0].decode() for k in range(len(f["layer"]))]
    assert types == ["input", "conv", "conv", "flatten", "dense", "dense"]
