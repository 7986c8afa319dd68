"""Fuzzing (hypothesis, bounded and derandomized, part of the normal run): the profile parser
and the netx / NIR readers raise only our own error types on whatever they are given, and
still read what is valid.

Budget: about 20 s on this machine for all of it (``max_examples`` below); derandomized, so
every run tries the same inputs and a failure reproduces.
"""
import json
import math
import os
import shutil
import tempfile

import h5py
import numpy as np
import pytest
import tomli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dpap_deploy.errors import DpapError
from dpap_deploy.export.netx import read_netx, write_netx
from dpap_deploy.export.nir_export import read_nir, to_nir
from dpap_deploy.export.quantize import quantize
from dpap_deploy.hardware_profiles import HERE, bundled_profiles, load_profile, parse_profile

def fuzz(max_examples, *health_checks):
    """Bounded, derandomized (the same inputs every run, no example database), no deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, *health_checks])
PROFILE_TEXT = {n: open(os.path.join(HERE, n + ".toml")).read() for n in bundled_profiles()}
PROFILE_DATA = {n: tomli.loads(t) for n, t in PROFILE_TEXT.items()}


# -- a small TOML writer (the project reads TOML only; tomli_w is not a dependency) --------------
def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for the strings used here
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def dumps(data: dict) -> str:
    top = [f"{json.dumps(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [f"[{json.dumps(k)}]\n" + "\n".join(f"{json.dumps(kk)} = {_value(vv)}" for kk, vv in v.items())
              for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def _parse(text, path="fuzz.toml"):
    """parse_profile's only allowed outcomes: a valid Profile, or a ProfileError (a DpapError)."""
    try:
        p = parse_profile(path, text)
    except DpapError as exc:
        assert str(exc), "an error must say something"
        return None
    for sec in (p.chip, p.core):  # what it accepted is sane
        for k, v in vars(sec).items():
            assert (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or v == math.inf, (k, v)
    assert p.numerics.weight_exp_min <= p.numerics.weight_exp_max
    return p


def test_bundled_profiles_survive_the_toml_writer():
    """The structured fuzzing below mutates re-serialised profiles: unmutated they must still parse, equal."""
    for name, data in PROFILE_DATA.items():
        if "extends" in data:
            continue
        assert parse_profile("x.toml", dumps(data)) == parse_profile("x.toml", PROFILE_TEXT[name])


@fuzz(300)
@given(st.text(alphabet=st.sampled_from(list('[]=."\'#\n -_abcdefghijklmnopqrstuvwxyz0123456789{},\\')) | st.characters(),
               max_size=200))
def test_profile_parser_on_random_text(text):
    _parse(text)


@fuzz(300)
@given(st.data())
def test_profile_parser_on_mutated_profiles(data):
    name = data.draw(st.sampled_from(sorted(n for n, d in PROFILE_DATA.items() if "extends" not in d)), "profile")
    prof = json.loads(json.dumps(PROFILE_DATA[name]))  # deep copy
    bad = (st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 1, 2**63, math.nan, math.inf, -math.inf, 0.5, -0.0])
           | st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2)
           | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    for _ in range(data.draw(st.integers(1, 3), "mutations")):
        op = data.draw(st.sampled_from(["drop", "set", "add", "drop_section", "extends"]), "op")
        sections = [k for k, v in prof.items() if isinstance(v, dict)]
        if op == "drop_section" and sections:
            del prof[data.draw(st.sampled_from(sections))]
        elif op == "extends":
            prof["extends"] = data.draw(st.sampled_from(bundled_profiles() + ["", "nope", "../x.toml", "a\x00b"]) | bad)
        elif sections:
            sec = prof[data.draw(st.sampled_from(sections))]
            if op == "drop" and sec:
                del sec[data.draw(st.sampled_from(sorted(sec)))]
            elif op == "set" and sec:
                sec[data.draw(st.sampled_from(sorted(sec)))] = data.draw(bad)
            elif op == "add":
                sec[data.draw(st.sampled_from(["cores", "neurons", "bogus", "decay", "max_fan_in"]))] = data.draw(bad)
    _parse(dumps(prof))


@fuzz(60)
@given(st.data())
def test_profile_extends_chains_and_loops(data):
    """Profiles in one folder extending each other (or themselves, or the bundled ones) under
    several spellings: a loop is a ProfileError, a chain that ends in a bundled profile is valid."""
    n = data.draw(st.integers(1, 4), "files")
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            target = data.draw(st.sampled_from([f"p{j}.toml" for j in range(n)] + [f"./p{j}.toml" for j in range(n)]
                                               + [os.path.join(d, f"p{j}.toml") for j in range(n)] + ["loihi1"]))
            with open(os.path.join(d, f"p{i}.toml"), "w") as f:
                f.write(f'extends = "{target}"\nname = "p{i}"\ndescription = "fuzz"\n[core]\nneurons = {i + 1}\n')
        try:
            p = load_profile(os.path.join(d, "p0.toml"))
        except DpapError as exc:
            assert "makes a loop" in str(exc), str(exc)
        else:
            assert p.core.neurons == 1 and p.chip.cores == 128  # p0's override on loihi1


# -- the readers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real netx and NIR files of a pruned MLP and a channel-pruned conv SNN, written by our exporters."""
    from dpap_deploy.train.compact import to_ir
    from test_nir import _pruned_model
    import nir

    from test_readers import cnn_ir

    d = tmp_path_factory.mktemp("fuzz")
    out = {}
    for kind, ir in (("mlp", to_ir(_pruned_model(), 8)), ("cnn", cnn_ir())):
        write_netx(quantize(ir, min_vth=1), str(d / f"{kind}.net"))
        nir.write(str(d / f"{kind}.nir"), to_nir(ir))
        out[".net", kind] = (d / f"{kind}.net").read_bytes()
        out[".nir", kind] = (d / f"{kind}.nir").read_bytes()
    return out


READERS = {".net": read_netx, ".nir": read_nir}


def _read(suffix, raw):
    """Write ``raw`` to a fresh file and read it: a NetworkIR or a DpapError, nothing else."""
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "f" + suffix)
        with open(path, "wb") as f:
            f.write(raw)
        try:
            return READERS[suffix](path)
        except DpapError as exc:
            assert str(exc).startswith(path), str(exc)  # names the file
            return None
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("suffix", [".net", ".nir"])
def test_readers_read_the_unmutated_files(files, suffix):
    assert [l.name for l in _read(suffix, files[suffix, "mlp"]).layers] == ["fc1", "fc2", "fc3"]
    assert [l.kind for l in _read(suffix, files[suffix, "cnn"]).layers] == ["conv", "conv", "fc", "fc"]


@fuzz(120, HealthCheck.function_scoped_fixture)
@given(suffix=st.sampled_from([".net", ".nir"]), kind=st.sampled_from(["mlp", "cnn"]), data=st.data())
def test_readers_on_truncated_and_flipped_bytes(files, suffix, kind, data):
    raw = bytearray(files[suffix, kind])
    if data.draw(st.booleans(), "truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), "length")]
    for pos, byte in data.draw(st.lists(st.tuples(st.integers(0, max(0, len(raw) - 1)), st.integers(0, 255)),
                                        max_size=6), "flips"):
        if raw:
            raw[pos] = byte
    _read(suffix, bytes(raw))


def _arrays():
    dtypes = st.sampled_from([np.int64, np.int32, np.uint8, np.float32, np.float64, np.bool_]).map(np.dtype) \
        | hnp.byte_string_dtypes(max_len=4)
    return hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))


@fuzz(160, HealthCheck.function_scoped_fixture)
@given(suffix=st.sampled_from([".net", ".nir"]), kind=st.sampled_from(["mlp", "cnn"]), data=st.data())
def test_readers_on_structurally_mutated_files(files, suffix, kind, data):
    """Datasets replaced by arrays of other dtypes and shapes, keys deleted, attributes changed,
    groups renamed: the HDF5 stays valid, the content does not."""
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "f" + suffix)
        with open(path, "wb") as f:
            f.write(files[suffix, kind])
        try:
            _mutate(path, data)
        except (ValueError, KeyError, TypeError):  # h5py refusing an edit we asked for (e.g. a name taken)
            assume(False)
        with open(path, "rb") as f:
            raw = f.read()
    finally:
        shutil.rmtree(d)
    _read(suffix, raw)


def _mutate(path, data):
    with h5py.File(path, "r+") as f:
        keys = []
        f.visit(keys.append)
        for _ in range(data.draw(st.integers(1, 3), "mutations")):
            keys = [k for k in keys if k in f]
            if not keys:
                return
            key = data.draw(st.sampled_from(sorted(keys)), "key")
            op = data.draw(st.sampled_from(["replace", "delete", "attr", "move"]), "op")
            if op == "delete":
                del f[key]
            elif op == "move":
                parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
                f.move(key, parent + data.draw(st.sampled_from(["0", "9", "x", "type", "layer", "node"])))
            elif op == "attr":
                f[key].attrs[data.draw(st.sampled_from(["name", "scale", "dense_shape", "pool_fold", "time_steps",
                                                        "dt_s"]))] = data.draw(_arrays())
            elif isinstance(f[key], h5py.Dataset):
                del f[key]
                f.create_dataset(key, data=data.draw(_arrays(), "value"))


@pytest.fixture(scope="module")
def graph():
    from dpap_deploy.train.compact import to_ir
    from test_nir import _pruned_model

    return to_nir(to_ir(_pruned_model(), 8))


def _junk():
    return (_arrays() | st.none() | st.text(max_size=4) | st.integers(-3, 3) | st.floats(allow_nan=True)
            | st.lists(st.integers(0, 3), max_size=3) | st.tuples(st.integers(-1, 3), st.integers(-1, 3)))


@fuzz(250, HealthCheck.function_scoped_fixture)
@given(data=st.data())
def test_nir_reader_on_mutated_graphs(graph, data):
    """Graph-level mutations a file could carry: node parameters of any dtype/shape/value,
    nodes dropped, edges dropped/added/reversed, metadata replaced."""
    import copy

    from dpap_deploy.export.nir_export import graph_to_ir

    g = copy.deepcopy(graph)
    for _ in range(data.draw(st.integers(1, 3), "mutations")):
        op = data.draw(st.sampled_from(["param", "param", "drop_node", "edges", "meta"]), "op")
        if op == "param":
            name = data.draw(st.sampled_from(sorted(g.nodes)), "node")
            fields = sorted(k for k in vars(g.nodes[name]) if not k.startswith("_"))
            setattr(g.nodes[name], data.draw(st.sampled_from(fields), "field"), data.draw(_junk(), "value"))
        elif op == "drop_node" and g.nodes:
            del g.nodes[data.draw(st.sampled_from(sorted(g.nodes)), "drop")]
        elif op == "edges":
            names = sorted(g.nodes) + ["ghost"] if data.draw(st.booleans(), "ghost") else sorted(g.nodes)
            edges = list(g.edges)
            how = data.draw(st.sampled_from(["drop", "add", "reverse"]), "how")
            if how == "drop" and edges:
                edges.pop(data.draw(st.integers(0, len(edges) - 1)))
            elif how == "add":
                edges.append((data.draw(st.sampled_from(names)), data.draw(st.sampled_from(names))))
            elif edges:
                i = data.draw(st.integers(0, len(edges) - 1))
                edges[i] = edges[i][::-1]
            g.edges = edges
        else:
            g.metadata = data.draw(st.dictionaries(st.sampled_from(["dt_s", "time_steps", "name", "dense_shape",
                                                                     "pool_fold"]), _junk(), max_size=3))
    try:
        ir = graph_to_ir(g, "mutated.nir")
    except DpapError as exc:
        assert str(exc).startswith("mutated.nir: "), str(exc)
    else:
        assert ir.layers and all(l.n_out >= 1 for l in ir.layers)
