"""ONNX export of a DPAP-pruned ANN: checker, onnxruntime equal to torch, removed neurons gone."""
import numpy as np
import onnx
import pytest
import torch

from dpap_deploy.errors import IRError, UnsupportedLayerError
from dpap_deploy.export import get_target
from dpap_deploy.export.onnx_export import run_onnx, to_onnx
from dpap_deploy.train.compact import to_ir
from dpap_deploy.train.dpap import PRESETS
from dpap_deploy.train.loop import TrainConfig, train
from dpap_deploy.train.models import ANNMLP, SpikingMLP


@pytest.fixture(scope="module")
def pruned_ann(digits):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=12, lr=1e-2, seed=0)
    rc = PRESETS["cifar-snn"]
    from dataclasses import replace

    res = train(digits, cfg, replace(rc, e0=2, r_init=3.0), progress=False, model=ANNMLP([64, 64, 32, 10]))
    return res.model


def test_onnx_of_a_pruned_ann_matches_torch_on_the_test_split(pruned_ann, digits, tmp_path):
    model = pruned_ann
    assert model.widths()[0] < 64, "DPAP should have removed some neurons"
    ir = to_ir(model)
    res = get_target("onnx")(ir, str(tmp_path), spikes=digits.x_test)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(digits.x_test))
    assert np.abs(res.counts - logits.numpy()).max() < 1e-5
    assert (res.counts.argmax(1) == digits.y_test).mean() > 0.85
    m = onnx.load(str(tmp_path / "network.onnx"))
    onnx.checker.check_model(m)
    shapes = {i.name: tuple(i.dims) for i in m.graph.initializer}
    assert shapes["fc1.weight"] == (64, model.widths()[0])  # removed neurons are gone from the graph
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # dynamic batch: one sample and the whole split give the same logits
    np.testing.assert_allclose(run_onnx(str(tmp_path / "network.onnx"), digits.x_test[:1]), res.counts[:1], atol=1e-6)


def test_onnx_rejects_spiking_networks_and_bad_files(tmp_path):
    with pytest.raises(UnsupportedLayerError, match=r"target onnx exports ANNs.*fc1 \(fc, lif\)"):
        to_onnx(to_ir(SpikingMLP([64, 8, 10]), 4))
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(IRError, match="x.onnx: onnxruntime cannot load it"):
        run_onnx(str(bad), np.zeros((1, 64), np.float32))


def test_onnx_of_a_channel_pruned_ann_cnn(tmp_path, digits):
    from dpap_deploy.train.compact import to_ir, compact
    from dpap_deploy.train.models import ANNCNN

    torch.manual_seed(0)
    m = ANNCNN((1, 8, 8), (4, 6), (16,), 10)
    with torch.no_grad():  # channel 2 of conv1 removed, and filter 0 of conv2
        m.masks[0][2] = False
        m.masks[1][0] = False
        m.apply_masks()
    small, _ = compact(m)
    assert small.widths()[:2] == [3, 5]
    x = digits.x_test.reshape(-1, 1, 8, 8)
    res = get_target("onnx")(to_ir(small), str(tmp_path), spikes=x)
    with torch.no_grad():
        ref, _ = m(torch.from_numpy(x))  # the uncompacted, masked model
    assert np.abs(res.counts - ref.numpy()).max() < 1e-5
    model = onnx.load(str(tmp_path / "network.onnx"))
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    assert shapes["conv1.weight"] == (3, 1, 3, 3) and shapes["conv2.weight"][:2] == (5, 3)  # channels gone
    assert [n.op_type for n in model.graph.node][:3] == ["Conv", "Relu", "Conv"]
