"""README "Using the exported files elsewhere": its ``python`` blocks, taken from README.md as a
user would copy them, run on small networks exported here, and give our results.

The module exports, into ``<tmp>/runs/{netx,nir,onnx}``, what ``dpap-export --target netx|nir|onnx``
writes there (the network file and ``model.safetensors``), changes into ``<tmp>`` and runs each
block with ``exec``. Then it compares what the block computed (its variables) with our own:
lava-dl netx's output spikes with our ``loihi-sim`` Lava processes', ``norse.torch.from_nir``'s
output spikes with our Norse model's, onnxruntime's logits with our torch ANN's. Blocks broken on
purpose (no output shift, a wrong ``dt``) must fail.
"""
import os
import re

import numpy as np
import pytest
import torch

from dpap_deploy.data import load_digits
from dpap_deploy.export import get_target, lava_sim
from dpap_deploy.rundir import save_model
from dpap_deploy.train.compact import compact, to_ir
from dpap_deploy.train.models import ANNMLP, SpikingMLP

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")
SECTION = "## Using the exported files elsewhere"
FILES = {"netx": "runs/netx/network.net", "nir": "runs/nir/network.nir", "onnx": "runs/onnx/network.onnx"}
T = 8  # time steps per sample of the small SNN


def readme_blocks() -> dict:
    """The section's ``python`` blocks by the file they read: ``{name: (code, first line in README)}``."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert text.count(SECTION + "\n") == 1, f"README.md has no single {SECTION!r} section"
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    first = text[:start].count("\n") + 1
    blocks = {}
    for m in re.finditer(r"^```python\n(.*?)^```[ \t]*$", section, re.S | re.M):
        code, line = m.group(1), first + section[: m.start()].count("\n") + 1
        names = [n for n, path in FILES.items() if path in code]
        assert len(names) == 1, f"README.md line {line}: a python block that reads {names or 'none'} of {list(FILES.values())}"
        assert names[0] not in blocks, f"README.md line {line}: a second block for {FILES[names[0]]}"
        blocks[names[0]] = (code, line)
    assert sorted(blocks) == sorted(FILES), f"the section has blocks for {sorted(blocks)}; expected {sorted(FILES)}"
    return blocks


def run_block(name: str, where, replace=None) -> dict:
    """Run README block ``name`` in folder ``where``; returns its variables. ``replace``: ``(old, new)``
    text to break it on purpose (``old`` must be in the block)."""
    code, line = readme_blocks()[name]
    if replace is not None:
        assert replace[0] in code, f"README {name} block no longer contains {replace[0]!r}"
        code = code.replace(replace[0], replace[1])
    namespace = {"__name__": "__readme__"}
    old = os.getcwd()
    os.chdir(where)
    try:  # the blank lines make tracebacks give README.md's line numbers
        exec(compile("\n" * (line - 1) + code, README, "exec"), namespace)
    finally:
        os.chdir(old)
    return namespace


def _snn():
    """A small pruned and compacted 64-16-12-10 SNN that spikes on the digits (as test_nir)."""
    torch.manual_seed(0)
    m = SpikingMLP([64, 20, 12, 10])
    with torch.no_grad():
        for layer in m.layers:
            layer.weight.mul_(8.0)
        m.masks[0][5:9] = False      # four fc1 neurons lose every synapse: compaction removes them
        m.masks[1][:6, :3] = False   # and some fc2 synapses go
        m.apply_masks()
    return compact(m)[0]


def _ann():
    torch.manual_seed(1)
    m = ANNMLP([64, 24, 10])
    with torch.no_grad():
        m.masks[0][:4] = False           # four hidden neurons removed
        m.masks[1][:, 10:14] = False
        m.apply_masks()
    return compact(m)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``<tmp>/runs/{netx,nir,onnx}`` as ``dpap-export`` writes them (network file and model), and our
    networks: ``{"dir", "snn", "netx_ir" (the quantised IR netx wrote), "ann"}``."""
    root = tmp_path_factory.mktemp("interop")
    snn, ann = _snn(), _ann()
    out = {"dir": root, "snn": snn, "ann": ann}
    for target, model, ir in (("netx", snn, to_ir(snn, T)), ("nir", snn, to_ir(snn, T)), ("onnx", ann, to_ir(ann))):
        folder = root / "runs" / target
        folder.mkdir(parents=True)
        res = get_target(target)(ir, str(folder))
        save_model(str(folder / "model.safetensors"), model)
        if target == "netx":
            out["netx_ir"] = res.network
    return out


def check_netx(ns: dict, runs: dict) -> None:
    spikes, out = ns["spikes"], ns["out"]
    assert spikes.shape == (T, 40, 64) and set(np.unique(spikes)) <= {0, 1}
    _, info = lava_sim.run(runs["netx_ir"], spikes)  # our loihi-sim Lava processes
    ours = info["output_spikes"]
    assert ours.sum() > 50 and len(np.unique(ours.sum(0).argmax(1))) > 1, "the check needs output spikes"
    assert out.shape == ours.shape
    np.testing.assert_array_equal(out, ours)
    np.testing.assert_array_equal(ns["counts"], ours.sum(0))


def check_nir(ns: dict, runs: dict) -> None:
    spikes = ns["spikes"]
    digits = load_digits()
    assert tuple(spikes.shape) == (T, len(digits.y_test), 64)
    with torch.no_grad():
        ours, _ = runs["snn"](spikes)  # our Norse model
    assert ours.sum() > 200 and len(torch.unique(ours.argmax(1))) > 1, "the check needs output spikes"
    np.testing.assert_array_equal(ns["counts"].numpy(), ours.numpy())
    np.testing.assert_array_equal(ns["predictions"].numpy(), ours.argmax(1).numpy())


def check_onnx(ns: dict, runs: dict) -> None:
    x = load_digits().x_test
    np.testing.assert_array_equal(ns["x"], x)
    with torch.no_grad():
        ours, _ = runs["ann"](torch.from_numpy(x))  # our torch ANN
    assert ns["logits"].shape == tuple(ours.shape)
    assert np.abs(ns["logits"] - ours.numpy()).max() < 1e-5


CHECKS = {"netx": check_netx, "nir": check_nir, "onnx": check_onnx}


def test_readme_section_has_one_block_per_export():
    blocks = readme_blocks()
    assert "reset_interval=T, reset_offset=1" in blocks["netx"][0] and "sparse_fc_layer=True" in blocks["netx"][0]
    assert "norse.from_nir(" in blocks["nir"][0] and "ort.InferenceSession(" in blocks["onnx"][0]


@pytest.mark.parametrize("name", ["onnx", "nir", "netx"])
def test_readme_block_gives_our_results(runs, name):
    ns = run_block(name, runs["dir"])
    CHECKS[name](ns, runs)


@pytest.mark.parametrize("name, old, new", [
    ("netx", "raster[:, L : L + N * T]", "raster[:, : N * T]"),  # output read without the shift
    ("nir", "norse.from_nir(graph, dt=dt)", "norse.from_nir(graph, dt=1e-4)"),  # snnTorch's dt
])
def test_a_broken_readme_block_fails(runs, name, old, new):
    with pytest.raises(AssertionError):
        ns = run_block(name, runs["dir"], replace=(old, new))
        CHECKS[name](ns, runs)
