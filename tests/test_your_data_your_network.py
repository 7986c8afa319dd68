"""A user's own event data set and a user's own Norse network through the whole pipeline: train
with DPAP, export to Lava, simulate, with emulator and Lava output spikes equal, T from the data.

The data set is made here (not the bundled event-digits): *moving bars*, a DVS-style recording of
a bar sweeping across a 10 x 10 sensor in one of three directions (down, right, diagonal), ON
events at the leading edge and OFF events at the trailing edge, with sensor noise and a few
double events per (pixel, step) that the loader must clip and say so.
"""
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from dpap_deploy.cli import main

T, SIZE = 16, 10


def moving_bars(n_per_class: int = 30, seed: int = 0):
    """``x`` ``(N, T, 2, 10, 10)`` event counts, ``y`` ``(N,)`` in {0, 1, 2}."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for label in range(3):
        for _ in range(n_per_class):
            start, speed = rng.uniform(-2, 2), rng.uniform(0.6, 0.8)
            pos = lambda t: start + speed * t  # noqa: E731
            coord = (yy, xx, (yy + xx) / 2)[label]
            frames = np.zeros((T, 2, SIZE, SIZE), np.int16)
            for t in range(T):
                before, now = pos(t), pos(t + 1)
                frames[t, 0] = (coord >= before) & (coord < now)            # ON: the bar arrives
                frames[t, 1] = (coord >= before - 2) & (coord < now - 2)    # OFF: it leaves
            frames += (rng.random(frames.shape) < 0.02).astype(np.int16)   # sensor noise (some doubles)
            xs.append(frames)
            ys.append(label)
    return np.stack(xs), np.array(ys)


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    d = tmp_path_factory.mktemp("bars")
    x, y = moving_bars()
    assert x.max() == 2  # the loader must clip these
    path = d / "bars.npz"
    np.savez(path, x=x, y=y)
    return str(path)


NET = '''
import torch
import norse.torch as norse


def build(input_shape, n_classes):
    c, h, w = input_shape
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(c, 6, 3, padding=1, bias=False)
    fc = torch.nn.Linear(6 * (h // 2) * (w // 2), n_classes, bias=False)
    with torch.no_grad():  # strong enough to spike from the first batch
        conv.weight.mul_(6.0)
        fc.weight.mul_(6.0)
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.8))
    return norse.SequentialState(conv, norse.LIFCell(p), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                 fc, norse.LIFCell(p))


def with_dropout(input_shape, n_classes):
    c, h, w = input_shape
    return norse.SequentialState(torch.nn.Conv2d(c, 4, 3, padding=1, bias=False), norse.LIFCell(),
                                 torch.nn.MaxPool2d(2), torch.nn.Dropout(0.1), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * (h // 2) * (w // 2), n_classes), norse.LIFCell())


def not_a_network(input_shape, n_classes):
    return 42
'''


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("net") / "mynet.py"
    p.write_text(textwrap.dedent(NET))
    return str(p)


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _report(out_dir):
    with open(os.path.join(out_dir, "report.json")) as f:
        return json.load(f)


COMMON = ["--target", "loihi-sim", "--epochs", "5", "--lr", "0.01", "--batch-size", "4", "--max-test", "18",
          "--quiet"]


def _deployed_like_a_builtin(rep, kinds):
    assert rep["dataset"]["time_steps"] == T and rep["dataset"]["kind"] == "frames"
    assert rep["dataset"]["sample_shape"] == [2, SIZE, SIZE]
    assert any("clipped to one spike per step" in n for n in rep["dataset"]["notes"])
    assert rep["agreement"]["spikes"] == 1.0 and rep["agreement"]["emulator_predictions"] == 1.0
    assert rep["accuracy"]["lava"] == rep["accuracy"]["emulator"]
    assert [l["kind"] for l in rep["model"]["layers"]] == kinds
    assert rep["training"]["pruner"] == "dpap" and rep["training"]["epochs"] == 5


def test_a_users_event_data_with_a_conv_family(tmp_path, capsys, bars):
    out = tmp_path / "cnn"
    code, _, err = _run(capsys, *COMMON, "--model", "snn-cnn", "--channels", "6", "--hidden", "16", "--data", bars,
                        "--out", out)
    assert code == 0, err
    assert "clipped to one spike per step" in err  # said on the terminal too
    rep = _report(out)
    _deployed_like_a_builtin(rep, ["conv", "fc", "fc"])
    assert rep["accuracy"]["norse"] > 0.5  # three easy classes: trained, not chance (1/3)


def test_a_users_norse_network_from_a_file(tmp_path, capsys, bars, net_file):
    out = tmp_path / "mine"
    code, _, err = _run(capsys, *COMMON, "--model", f"{net_file}:build", "--data", bars, "--out", out)
    assert code == 0, err
    rep = _report(out)
    _deployed_like_a_builtin(rep, ["conv", "fc"])
    assert rep["training"]["family"] == f"{net_file}:build"
    from dpap_deploy.ir import NetworkIR

    ir = NetworkIR.load(str(out / "network.npz"))
    assert [n.kind for n in ir.nodes] == ["conv", "flatten", "fc"]
    assert ir.layers[0].neurons.v_th == pytest.approx(0.8)  # the user's neuron parameters reached the IR
    assert ir.layers[1].pool_fold == 2  # the user's AvgPool2d, folded into the Linear layer's weights


def test_the_users_initial_weights_are_the_ones_trained(tmp_path, net_file):
    import importlib.util

    from dpap_deploy.train.user_model import load_user_model

    spec = importlib.util.spec_from_file_location("mynet_ref", net_file)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    theirs = ref.build((2, SIZE, SIZE), 3)
    ours = load_user_model(f"{net_file}:build", (2, SIZE, SIZE), 3)
    np.testing.assert_array_equal(ours.layers[0].weight.detach().numpy(), theirs[0].weight.detach().numpy())
    np.testing.assert_array_equal(ours.layers[1].weight.detach().numpy(), theirs[4].weight.detach().numpy())
    # and it computes what their SequentialState computes, step by step
    import torch

    x = torch.from_numpy((np.random.default_rng(0).random((16, 3, 2, SIZE, SIZE)) < 0.5).astype(np.float32))
    state, counts = None, 0
    with torch.no_grad():
        for t in range(16):
            z, state = theirs(x[t], state)
            counts = counts + z
        mine, _ = ours(x)
    torch.testing.assert_close(mine, counts, rtol=0, atol=0)
    assert counts.sum() > 0


def test_a_layer_we_cannot_deploy_is_named_with_what_is_supported(tmp_path, capsys, bars, net_file):
    code, _, err = _run(capsys, *COMMON, "--model", f"{net_file}:with_dropout", "--data", bars, "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err
    line = [l for l in err.splitlines() if ": error: " in l][0]
    for needle in ("layers we cannot deploy", "#2 MaxPool2d", "#3 Dropout", "#5 Linear (bias=True; use bias=False)",
                   "Supported: torch.nn.Linear(bias=False)", "norse.torch.LIFCell"):
        assert needle in line, (needle, line)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


@pytest.mark.parametrize("spec,needle", [
    ("{f}:nothing_here", "has no function 'nothing_here'"),
    ("{f}:not_a_network", "expected a norse.torch.SequentialState or torch.nn.Sequential, got int"),
    ("{d}/absent.py:build", "absent.py' does not exist"),
    ("mynet:build", "unknown model family 'mynet:build'"),
])
def test_bad_model_files(tmp_path, capsys, bars, net_file, spec, needle):
    spec = spec.format(f=net_file, d=tmp_path)
    code, _, err = _run(capsys, *COMMON, "--model", spec, "--data", bars, "--out", tmp_path / "o")
    assert code == 2 and needle in err and "Traceback" not in err


def test_an_mlp_family_flattens_each_frame(tmp_path, capsys, bars):
    out = tmp_path / "mlp"
    code, _, err = _run(capsys, *COMMON, "--model", "snn-mlp", "--hidden", "24", "--data", bars, "--out", out)
    assert code == 0, err
    rep = _report(out)
    _deployed_like_a_builtin(rep, ["fc", "fc"])
    assert rep["model"]["layers"][0]["n_in"] == 2 * SIZE * SIZE


@pytest.mark.parametrize("args,needle", [
    (["--model", "snn-cnn", "--data", "digits"], "--model snn-cnn takes frames data; data 'digits' is static (N, 64)"),
    (["--model", "ann-mlp", "--target", "onnx", "--data", "{bars}"], "--model ann-mlp takes static data"),
    (["--model", "snn-cnn", "--data", "{bars}", "--time-steps", "12"],
     "--time-steps 12, but data 'bars.npz' has T = 16 steps per sample"),
    (["--model", "snn-mlp", "--data", "{bars}", "--encoding", "current"],
     "--encoding current drives a spiking network with static features; data 'bars.npz' is frames"),
])
def test_data_a_family_cannot_take_is_refused(tmp_path, capsys, bars, args, needle):
    args = [a.format(bars=bars) for a in args]
    code, _, err = _run(capsys, *COMMON, *args, "--out", tmp_path / "o")
    assert code == 2 and needle in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_the_python_api_takes_a_model_and_arrays_and_returns_the_report(tmp_path):
    import norse.torch as norse
    import torch

    import dpap_deploy

    x, y = moving_bars(12, seed=4)
    torch.manual_seed(0)
    lin = torch.nn.Linear(2 * SIZE * SIZE, 3, bias=False)
    with torch.no_grad():
        lin.weight.mul_(4.0)
    net = norse.SequentialState(torch.nn.Flatten(), lin, norse.LIFCell())
    rep = dpap_deploy.deploy(model=net, data=(x, y), target="loihi-sim", out=str(tmp_path / "api"), epochs=2,
                             max_test=9)
    assert rep["dataset"]["name"] == "arrays" and rep["dataset"]["time_steps"] == T
    assert rep["agreement"]["spikes"] == 1.0 and rep == _report(tmp_path / "api")
