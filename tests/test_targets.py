"""Every registered export target runs on a tiny network and verifies what it wrote."""
import os

import numpy as np
import pytest

from dpap_deploy.errors import UnknownTargetError
from dpap_deploy.export import get_target, targets
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR


def _tiny():
    rng = np.random.default_rng(0)
    n = LIFNeurons(5e-3, 10e-3, 1.0)
    m1 = rng.random((6, 8)) < 0.5
    return NetworkIR("tiny", 8, 6, 1e-3, [FCLayer("fc1", rng.normal(1, 1, (6, 8)) * m1, m1, n, (6, 8)),
                                          FCLayer("fc2", rng.normal(1, 1, (3, 6)), np.ones((3, 6), bool), n, (3, 6))])


def _tiny_ann():
    from dataclasses import replace

    ir = _tiny()
    layers = [replace(l, neurons=None, activation=a) for l, a in zip(ir.layers, ("relu", "identity"))]
    return replace(ir.with_layers(layers), time_steps=1, readout="logits")


@pytest.mark.parametrize("name", targets())
def test_every_target_exports_and_verifies(name, tmp_path):
    target = get_target(name)
    if target.takes == "ann":
        ir, x = _tiny_ann(), np.random.default_rng(1).random((3, 8)).astype(np.float32)
    else:
        ir, x = _tiny(), (np.random.default_rng(1).random((6, 3, 8)) < 0.5).astype(np.float32)
    res = target(ir, str(tmp_path), spikes=x)
    assert res.target == name
    assert res.files and all(os.path.isfile(f["path"]) and f["verified_by"] for f in res.files)
    assert set(res.synapses_per_layer) == {"fc1", "fc2"}
    assert res.synapses_per_layer["fc1"] <= int(ir.layers[0].mask.sum())
    assert res.counts.shape == (3, 3)


def test_unknown_target():
    with pytest.raises(UnknownTargetError, match="known targets: loihi-sim"):
        get_target("loihi3")


def test_spiking_targets_reject_an_ann_by_layer_name(tmp_path):
    from dpap_deploy.errors import UnsupportedLayerError

    for name in ("loihi-sim", "netx", "nir"):
        with pytest.raises(UnsupportedLayerError, match=rf"target {name}.*fc1 \(fc, relu\)"):
            get_target(name)(_tiny_ann(), str(tmp_path))


def test_loihi2_target_without_lava_loihi_writes_and_says_why(tmp_path):
    from dpap_deploy.export.loihi2_hw import lava_loihi_available

    assert not lava_loihi_available()  # Intel's lava-loihi is not on PyPI
    x = (np.random.default_rng(1).random((6, 3, 8)) < 0.5).astype(np.float32)
    res = get_target("loihi2")(_tiny(), str(tmp_path), spikes=x)
    assert res.extra["hardware"] is False and "lava-loihi" in res.extra["message"]
    assert (tmp_path / "network.npz").is_file() and res.counts.shape == (3, 3)
    (tmp_path / "sim").mkdir()
    sim = get_target("loihi-sim")(_tiny(), str(tmp_path / "sim"), spikes=x)
    np.testing.assert_array_equal(res.counts, sim.counts)
