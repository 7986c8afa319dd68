"""Issue 13 item 7: run folders and checkpoints are safe to share.

``model.safetensors`` and ``checkpoint.safetensors`` are written and read by
``dpap_deploy/tensorfile.py`` (safetensors tensors + JSON metadata) and loading never unpickles
anything. Here: the codec round-trips every type it takes and refuses every kind of bad file
with one line naming the file and what is wrong; a real Adam state and a real DPAP state come
back as their ``load_state_dict``/``from_state_dict`` take them; and, through the real CLI, a
crafted pickle that would create a marker file when unpickled is refused (exit 2, one line
naming the file) as ``model.pt``, ``model.safetensors``, ``checkpoint.safetensors`` and
``checkpoint.pt``, and the marker file never appears.
"""
import collections
import json
import math
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dpap_deploy.cli import main
from dpap_deploy.errors import CheckpointError, NetworkFileError
from dpap_deploy.rundir import MODEL_FILE, RUN_FILES, load_model, save_model
from dpap_deploy.tensorfile import META_KEY, load_tree, save_tree
from dpap_deploy.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint

CHEAP = ["--epochs", "1", "--hidden", "8,8", "--time-steps", "4", "--max-test", "10", "--quiet"]


# -- helpers ---------------------------------------------------------------------------------
class Evil:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file (no shell needed)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def evil_pickle(marker) -> bytes:
    """A ``model.pt``-style pickle (a dict holding the payload, protocol 2 as torch.save's)."""
    return pickle.dumps({"model_config": {}, "state_dict": Evil(marker)}, protocol=2)


def evil_torch_zip(marker, path) -> bytes:
    """The same payload as ``torch.save`` writes it: a zip archive holding ``data.pkl``."""
    torch.save({"model_config": {}, "state_dict": Evil(marker)}, str(path))
    return path.read_bytes()


def same(a, b, where="tree"):
    """Equal values of exactly the same types (NaN equals NaN; tensors: dtype, shape, values)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.requires_grad) == (b.dtype, b.shape, False), where
        assert torch.equal(a, b) or torch.allclose(a.double(), b.double(), equal_nan=True, rtol=0, atol=0), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def one_line_error(exc_info, path, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# -- the codec round-trips every supported type ----------------------------------------------
def test_every_supported_type_round_trips(tmp_path):
    param = torch.nn.Parameter(torch.randn(3, 2))
    tree = {
        "bool": torch.tensor([True, False, True]),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "int8": torch.tensor([-128, 127], dtype=torch.int8),
        "int16": torch.tensor([-3], dtype=torch.int16),
        "int32": torch.tensor([[1, 2], [3, 4]], dtype=torch.int32),
        "int64": torch.tensor([2 ** 62]),
        "float16": torch.tensor([0.5, -2.0], dtype=torch.float16),
        "bfloat16": torch.tensor([1.5], dtype=torch.bfloat16),
        "float64_0dim": torch.tensor(1.0 / 3.0, dtype=torch.float64),
        "nonfinite_tensor": torch.tensor([math.nan, math.inf, -math.inf]),
        "empty": torch.zeros(0, 4),
        "view": torch.arange(12).reshape(3, 4)[:, ::2],  # not contiguous
        "param": param,  # requires grad: comes back as a plain tensor
        "int_keys": {0: {"step": torch.tensor(3.0)}, 1: "one", "1": "the string one", -5: None},
        "tuple": (1, 2.5, "x", None, (True,)),
        "list": [1, [2, [3, []]], {}],
        "empty_tuple": (),
        "nonfinite": [math.nan, math.inf, -math.inf, -0.0],
        "scalars": [0, -1, 2 ** 70, 1.0, 1e-300, True, False, None, "", "ünïcødé \n \"q\" $tensor"],
        "dollar_keys": {"$tensor": "not a tag", "$dict": [1]},
        "ordered": collections.OrderedDict([("b", torch.ones(1)), ("a", 2)]),
        "np_float32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "np_bool": np.array([[True], [False]]),
        "np_big_endian": np.arange(3, dtype=">i4"),
        "np_0dim": np.array(7, dtype=np.int16),
        "np_scalars": (np.float32(2.5), np.int64(-9), np.bool_(True), np.float64(math.nan)),
        "deep": {"a": [{"b": ({"c": torch.zeros(2, dtype=torch.float64)},)}]},
    }
    path = tmp_path / "t.safetensors"
    save_tree(str(path), tree, "test-tree", 3)
    back = load_tree(str(path), "test-tree", 3)

    want = dict(tree)
    want["param"] = param.detach()
    want["np_big_endian"] = np.arange(3, dtype=np.int32)  # native byte order
    same(want, back)
    assert back["int_keys"][1] == "one" and back["int_keys"]["1"] == "the string one"
    assert isinstance(back["ordered"], collections.OrderedDict) and type(back["int_keys"]) is dict
    assert isinstance(back["np_scalars"][0], np.float32) and isinstance(back["np_0dim"], np.ndarray)
    assert back["float64_0dim"].dim() == 0 and back["float64_0dim"].item() == 1.0 / 3.0
    assert back["view"].is_contiguous() and back["view"].tolist() == [[0, 2], [4, 6], [8, 10]]
    assert math.copysign(1.0, back["nonfinite"][3]) == -1.0
    # saving copied the tensors: changing the original afterwards does not change the file
    tree["uint8"][0] = 0
    assert load_tree(str(path), "test-tree", 3)["uint8"][0] == 250
    # an older version is read as well
    assert load_tree(str(path), "test-tree", 5)["tuple"] == (1, 2.5, "x", None, (True,))


def test_a_tree_without_tensors_and_a_bare_tensor(tmp_path):
    path = str(tmp_path / "t.safetensors")
    save_tree(path, {"epochs": 3, "history": []}, "f", 1)
    assert load_tree(path, "f", 1) == {"epochs": 3, "history": []}
    save_tree(path, torch.tensor([1, 2]), "f", 1)
    assert load_tree(path, "f", 1).tolist() == [1, 2]
    save_tree(path, None, "f", 1)
    assert load_tree(path, "f", 1) is None


def test_subclasses_come_back_as_their_base_type(tmp_path):
    import enum
    from typing import NamedTuple

    class Kind(str, enum.Enum):
        SNN = "snn-mlp"

    class Level(enum.IntEnum):
        HIGH = 3

    class Pair(NamedTuple):
        a: int
        b: float

    path = str(tmp_path / "t.safetensors")
    save_tree(path, {"kind": Kind.SNN, "level": Level.HIGH, "pair": Pair(1, 2.0),
                     "dd": collections.defaultdict(list, {"x": [1]})}, "f", 1)
    back = load_tree(path, "f", 1)
    same({"kind": "snn-mlp", "level": 3, "pair": (1, 2.0), "dd": {"x": [1]}}, back)


def test_the_file_is_a_plain_safetensors_file(tmp_path):
    """Any safetensors reader sees the tensors under their paths and our JSON in the metadata."""
    path = str(tmp_path / "t.safetensors")
    save_tree(path, {"state_dict": {"fc.weight": torch.ones(2, 3)}, "cfg": {"betas": (0.9, 0.99)}}, "f", 2)
    with safe_open(path, "pt") as f:
        assert list(f.keys()) == ["state_dict/fc.weight"]
        assert f.get_tensor("state_dict/fc.weight").shape == (2, 3)
        doc = json.loads(f.metadata()[META_KEY])
    assert doc["format"] == "f" and doc["version"] == 2
    assert doc["tree"]["$dict"][1] == ["cfg", {"$dict": [["betas", {"$tuple": [0.9, 0.99]}]]}]


@pytest.mark.parametrize("tree,where,what", [
    ({"a": [1, {"b": object()}]}, "tree['a'][1]['b']", "cannot store a builtins.object"),
    ({"s": {1, 2}}, "tree['s']", "cannot store a builtins.set"),
    ({"k": {2.5: 1}}, "tree['k']", "dict key 2.5 has type float"),
    ({"k": {(1, 2): 1}}, "tree['k']", "dict key (1, 2) has type tuple"),
    ({"k": {True: 1}}, "tree['k']", "dict key True has type bool"),
    ({"c": torch.ones(2, dtype=torch.complex64)}, "tree['c']", "tensor of dtype torch.complex64"),
    ({"sp": [torch.eye(2).to_sparse()]}, "tree['sp'][0]", "torch.sparse_coo tensor"),
    ({"u": np.array(["text"])}, "tree['u']", "numpy value of dtype <U4"),
    ({"o": np.array([None], dtype=object)}, "tree['o']", "numpy value of dtype object"),
    ({"m": torch.nn.Linear(2, 2)}, "tree['m']", "cannot store a torch.nn.modules.linear.Linear"),
    ({"b": b"bytes"}, "tree['b']", "cannot store a builtins.bytes"),
])
def test_unsupported_values_are_refused_naming_their_path(tmp_path, tree, where, what):
    path = tmp_path / "t.safetensors"
    save_tree(str(path), {"earlier": 1}, "f", 1)
    with pytest.raises(TypeError) as exc:
        save_tree(str(path), tree, "f", 1)
    assert str(exc.value).startswith(where + ": ") and what in str(exc.value), str(exc.value)
    assert load_tree(str(path), "f", 1) == {"earlier": 1}  # the earlier file is untouched
    assert os.listdir(tmp_path) == ["t.safetensors"]  # and no temporary file is left


# -- the codec refuses every kind of bad file ----------------------------------------------------
def _st(path, tensors=None, **metadata):
    """A safetensors file with the given tensors and metadata (str -> str)."""
    save_file(tensors if tensors is not None else {"t": torch.ones(2)}, str(path), metadata=metadata or None)


def _ours(path, doc, tensors=None):
    _st(path, tensors, **{META_KEY: doc if isinstance(doc, str) else json.dumps(doc)})


def _truncated(path, keep):
    save_tree(str(path), {"w": torch.ones(100)}, "f", 1)
    data = path.read_bytes()
    path.write_bytes(data[:keep(data)])


def _plain_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


GOOD_TREE = {"$dict": [["w", {"$tensor": "t"}]]}


@pytest.mark.parametrize("make,needles", [
    (lambda p: None, ["file not found"]),
    (lambda p: p.mkdir(), ["cannot read the file"]),
    (lambda p: p.write_bytes(b""), ["empty file, not a safetensors file"]),
    (lambda p: p.write_bytes(b"abc"), ["not a safetensors file (3 bytes starting b'abc')"]),
    (lambda p: p.write_bytes(b"not a checkpoint at all"), ["not a safetensors file (23 bytes"]),
    (lambda p: p.write_bytes(b"\x12\x00\x00\x00\x00\x00\x00\x00[1, 2, 3, 4, 5, 6]"),
     ["not a safetensors file"]),  # a JSON header that is not an object
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})), ["a pickle, not a safetensors file; not loaded, because "
                                                       "unpickling can run code"]),
    (lambda p: torch.save({"w": torch.ones(2)}, str(p)),
     ["a torch.save zip archive (pickled data.pkl), not a safetensors file; not loaded, because unpickling can run code"]),
    (_plain_zip, ["not a safetensors file (", "PK\\x03\\x04"]),
    (lambda p: _truncated(p, lambda d: len(d) - 1), ["a corrupt or truncated safetensors file (SafetensorError"]),
    (lambda p: _truncated(p, lambda d: 20), ["a truncated safetensors file or not one (header of"]),
    (lambda p: _st(p), ["a safetensors file, but not one written by dpap-deploy (no 'dpap_deploy' metadata; "
                        "expected a f file)"]),
    (lambda p: _st(p, format="pt"), ["not one written by dpap-deploy"]),
    (lambda p: _ours(p, "{not json"), ["malformed dpap_deploy metadata (not JSON: JSONDecodeError"]),
    (lambda p: _ours(p, [1, 2]), ["malformed dpap_deploy metadata (expected an object with format, version and tree)"]),
    (lambda p: _ours(p, {"format": "f", "version": 1}), ["expected an object with format, version and tree"]),
    (lambda p: _ours(p, {"format": "other", "version": 1, "tree": None}), ["a 'other' file, not a 'f' file"]),
    (lambda p: _ours(p, {"format": "f", "version": 2, "tree": None}),
     ["f version 2 is newer than this dpap-deploy reads (1); update dpap-deploy"]),
    (lambda p: _ours(p, {"format": "f", "version": "1", "tree": None}), ["version '1' is not an integer"]),
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$tensor": "gone"}}),
     ["dpap_deploy metadata names tensor 'gone' at tree, which the file does not hold"]),
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$dict": [["a", [{"$ndarray": "x"}]]]}}),
     ["names tensor 'x' at tree['a'][0], which the file does not hold"]),
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$pickle": "t"}}), ["tree: unknown tag '$pickle'"]),
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$dict": [], "$tuple": []}}),
     ["expected a value or an object with one $-key"]),
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$dict": [[1.5, 2]]}}), ["is not [str or int key, value]"]),
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$float": "1e9"}}), ["$float '1e9' is not"]),
    (lambda p: _ours(p, '{"format": "f", "version": 1, "tree": [NaN]}'), ["tree[0]: a bare non-finite number"]),
    (lambda p: _ours(p, '{"format": "f", "version": 1, "tree": ' + "[" * 100000 + "]" * 100000 + "}"),
     ["malformed dpap_deploy metadata"]),  # nested too deeply for Python's JSON parser
    (lambda p: _ours(p, {"format": "f", "version": 1, "tree": {"$npscalar": "t"}}), ["$npscalar tensor 't' has shape [2]"]),
])
def test_bad_files_are_refused_with_one_line_naming_the_file(tmp_path, make, needles):
    path = tmp_path / "x.safetensors"
    make(path)
    with pytest.raises(CheckpointError) as exc:
        load_tree(str(path), "f", 1)
    one_line_error(exc, path, *needles)


def test_metadata_that_looks_like_deep_json_inside_a_string_is_just_a_string(tmp_path):
    """Control for the too-deeply-nested case above: the same brackets as a string value load."""
    path = tmp_path / "x.safetensors"
    _ours(path, {"format": "f", "version": 1, "tree": "[" * 100000 + "]" * 100000})
    assert load_tree(str(path), "f", 1) == "[" * 100000 + "]" * 100000


def test_the_error_class_is_the_callers(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(pickle.dumps([1]))
    with pytest.raises(NetworkFileError, match="m.safetensors: a pickle"):
        load_tree(str(path), "f", 1, error=NetworkFileError)
    _ours(path, {"format": "f", "version": 1, "tree": GOOD_TREE})
    assert load_tree(str(path), "f", 1, error=NetworkFileError)["w"].tolist() == [1.0, 1.0]


def test_a_safetensors_header_whose_length_starts_like_a_pickle_still_loads(tmp_path):
    """A header length of 0x..80 makes the file's first byte 0x80, a pickle's first byte: it
    must still load (the pickle test comes only after the safetensors one failed)."""
    path = tmp_path / "t.safetensors"
    for pad in range(300):
        save_tree(str(path), {"w": torch.ones(1), "pad": "x" * pad}, "f", 1)
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert load_tree(str(path), "f", 1)["pad"] == "x" * pad


# -- the payload is live, and nothing of ours unpickles it --------------------------------------
def test_the_crafted_pickles_do_create_the_marker_when_unpickled(tmp_path):
    """Control: the payloads the CLI tests below use are armed (else those tests prove nothing)."""
    marker = tmp_path / "MARKER"
    pickle.loads(evil_pickle(marker))
    assert marker.exists()
    marker.unlink()
    zipped = tmp_path / "evil.pt"
    evil_torch_zip(marker, zipped)
    torch.load(str(zipped), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_loaders_refuse_the_crafted_pickle_without_running_it(tmp_path, kind):
    marker = tmp_path / "MARKER"
    data = evil_pickle(marker) if kind == "pickle" else evil_torch_zip(marker, tmp_path / "made.pt")
    for name in ("x.safetensors", "x.pt"):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(str(path))
        one_line_error(exc, path, "not loaded, because unpickling can run code")
        with pytest.raises(NetworkFileError) as exc:
            load_model(str(path))
        one_line_error(exc, path, "not loaded, because unpickling can run code")
        with pytest.raises(CheckpointError):
            load_tree(str(path), "f", 1)
    assert not marker.exists()


# -- checkpoints: a real Adam state and a real DPAP state come back usable ---------------------
def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(6, 5, 12, generator=g) < 0.4).float(), torch.randint(0, 4, (5,), generator=g)


def _step(model, opt, state, seed):
    x, y = _batch(seed)
    scores, records = model(x)
    loss = torch.nn.functional.cross_entropy(4.0 * scores, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.apply_masks()
    if state is not None:
        state.observe(records)


def test_checkpoint_round_trip_with_real_adam_and_dpap_state(tmp_path):
    from dpap_deploy.train.dpap import PRESETS, DPAPState
    from dpap_deploy.train.models import LIFConfig, SpikingMLP, model_from_config

    torch.manual_seed(1)
    model = SpikingMLP([12, 10, 8, 4], LIFConfig(), init_gain=4.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    state = DPAPState(model.specs(), PRESETS["mnist-snn"])
    for s in range(3):
        _step(model, opt, state, s)
    state.end_epoch(0)
    gen = torch.Generator().manual_seed(7)
    torch.randperm(10, generator=gen)
    ckpt = {"model_config": model.config(), "state_dict": model.state_dict(), "dense_widths": [10, 8],
            "optimizer": opt.state_dict(), "dpap_state": state.state_dict(), "budget": None,
            "generator": gen.get_state(), "position": {"epoch": 1, "batch": 2, "loss_sum": 3.25, "correct": 4},
            "history": [{"epoch": 0, "loss": 1.5, "test_accuracy": math.nan, "layers": {"fc1": {"neurons": 10}}}],
            "train_config": {"hidden": [10, 8], "lr": 0.01}, "method": "dpap", "dpap_config": PRESETS["mnist-snn"].to_dict(),
            "seconds": 1.25, "torch_rng": torch.get_rng_state()}
    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(str(path), ckpt)
    back = load_checkpoint(str(path))
    same(ckpt, back)  # every field, with its types: int keys, tuples (betas, percentiles), NaN, ...
    assert sorted(back["optimizer"]["state"]) == [0, 1, 2]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)

    # the restored optimizer, DPAP state and generator continue exactly like the originals
    model2 = model_from_config(back["model_config"])
    model2.load_state_dict(back["state_dict"])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(back["optimizer"])
    state2 = DPAPState.from_state_dict(back["dpap_state"])
    assert state2.cfg == state.cfg and state2.k == state.k == 3
    gen2 = torch.Generator()
    gen2.set_state(back["generator"])
    assert torch.equal(torch.randperm(10, generator=gen), torch.randperm(10, generator=gen2))
    for s in range(3, 6):
        _step(model, opt, state, s)
        _step(model2, opt2, state2, s)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k
    same(state.state_dict(), state2.state_dict())


def test_legacy_checkpoint_pt_is_named(tmp_path):
    torch.save({"format": "dpap-deploy-checkpoint", "version": 1}, str(tmp_path / "checkpoint.pt"))
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(str(tmp_path / CHECKPOINT_FILE))
    one_line_error(exc, tmp_path / "checkpoint.pt", "a pickle-based checkpoint from an older dpap-deploy, not loaded "
                   "because unpickling can run code", "re-run the training")


# -- the model file ---------------------------------------------------------------------------------
def test_model_file_round_trip_and_bad_model_files(tmp_path):
    from dpap_deploy.train.models import SpikingMLP

    torch.manual_seed(2)
    model = SpikingMLP([12, 10, 4])
    with torch.no_grad():
        model.masks[0][:3] = False
    model.apply_masks()
    model.dense_widths = [16]
    path = tmp_path / MODEL_FILE
    save_model(str(path), model, train_config={"lr": 0.5, "hidden": [16]}, dpap_state=None)
    back, meta = load_model(str(path))
    assert type(back) is SpikingMLP and back.dense_widths == [16]
    assert meta == {"train_config": {"lr": 0.5, "hidden": [16]}, "dpap_state": None}
    same(dict(model.state_dict()), dict(back.state_dict()))
    x, _ = _batch(0)
    assert torch.equal(model(x)[0], back(x)[0])

    save_tree(str(path), {"model_config": {"kind": "snn-transformer"}, "state_dict": {}}, "dpap-deploy-model", 1)
    with pytest.raises(NetworkFileError) as exc:
        load_model(str(path))
    one_line_error(exc, path, "model_config describes no model this dpap-deploy builds (ModelError: model "
                   "configuration of kind 'snn-transformer'; this version reads 'sequential')")
    save_tree(str(path), {"model_config": model.config(), "state_dict": {"layers.0.weight": torch.ones(1)}},
              "dpap-deploy-model", 1)
    with pytest.raises(NetworkFileError) as exc:
        load_model(str(path))
    one_line_error(exc, path, "the weights do not fit the model of its model_config (RuntimeError")
    save_tree(str(path), [model.config()], "dpap-deploy-model", 1)
    with pytest.raises(NetworkFileError) as exc:
        load_model(str(path))
    one_line_error(exc, path, "not a dpap-deploy model file")


# -- the issue's case through the real CLI ------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (cheap) run: it leaves model.safetensors and checkpoint.safetensors."""
    out = tmp_path_factory.mktemp("safe") / "run"
    assert main(["--target", "loihi-sim", "--out", str(out), *CHEAP]) == 0
    assert (out / MODEL_FILE).is_file() and (out / CHECKPOINT_FILE).is_file()
    assert not (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()
    return out


def _copy(run, dst, *names):
    dst.mkdir()
    for f in names:
        shutil.copy(run / f, dst / f)


def _snapshot(folder):
    return {f: (folder / f).read_bytes() for f in sorted(os.listdir(folder))}


def _refused(capsys, argv, *needles):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if ": error: " in l]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_from_a_folder_of_an_older_version_holding_model_pt(tmp_path, capsys, run_dir):
    marker = tmp_path / "MARKER"
    src = tmp_path / "old"
    _copy(run_dir, src, "config.json", "ir.npz")
    (src / "model.pt").write_bytes(evil_pickle(marker))
    before = _snapshot(src)
    _refused(capsys, ["--target", "loihi-sim", "--from", src, "--out", tmp_path / "o", "--quiet"],
             f"{src / 'model.pt'}: a pickle-based model file from an older dpap-deploy, not loaded because "
             "unpickling can run code; re-run the training to get model.safetensors")
    assert not marker.exists()
    assert _snapshot(src) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_from_a_folder_whose_model_safetensors_is_a_pickle(tmp_path, capsys, run_dir, kind):
    marker = tmp_path / "MARKER"
    src = tmp_path / "shared"
    _copy(run_dir, src, *RUN_FILES)
    data = evil_pickle(marker) if kind == "pickle" else evil_torch_zip(marker, tmp_path / "made.pt")
    (src / MODEL_FILE).write_bytes(data)
    what = "a pickle" if kind == "pickle" else "a torch.save zip archive (pickled data.pkl)"
    _refused(capsys, ["--target", "loihi-sim", "--from", src, "--out", tmp_path / "o", "--quiet"],
             f"{src / MODEL_FILE}: {what}, not a safetensors file; not loaded, because unpickling can run code")
    assert not marker.exists()


def test_from_the_real_run_folder_still_works(tmp_path, capsys, run_dir):
    """Control for the refusals above: the same command on the untouched folder exports."""
    src = tmp_path / "shared"
    _copy(run_dir, src, *RUN_FILES)
    assert main(["--target", "loihi-sim", "--from", str(src), "--out", str(tmp_path / "o"), "--quiet",
                 "--max-test", "5"]) == 0
    assert (tmp_path / "o" / "report.json").is_file()


@pytest.mark.parametrize("name", [CHECKPOINT_FILE, "checkpoint.pt"])
def test_resume_refuses_a_pickled_checkpoint(tmp_path, capsys, run_dir, name):
    marker = tmp_path / "MARKER"
    run = tmp_path / "shared"
    _copy(run_dir, run, "run.toml")
    (run / name).write_bytes(evil_pickle(marker))
    before = _snapshot(run)
    if name == CHECKPOINT_FILE:
        needles = [f"{run / CHECKPOINT_FILE}: a pickle, not a safetensors file; not loaded, because unpickling can run code"]
    else:  # only the legacy file: named, with what to do
        needles = [f"{run / 'checkpoint.pt'}: a pickle-based checkpoint from an older dpap-deploy, not loaded because "
                   "unpickling can run code", "re-run the training"]
    _refused(capsys, ["--resume", run, "--quiet"], *needles)
    assert not marker.exists()
    assert _snapshot(run) == before
