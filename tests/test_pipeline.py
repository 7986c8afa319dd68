"""The pipeline's stages one by one, the registries, whole-run staging and --device."""
import json
import os

import numpy as np
import pytest

from dpap_deploy.errors import DpapError, UnknownNameError
from dpap_deploy.pipeline import RunConfig, run_pipeline
from dpap_deploy.registry import Registry

SMALL = dict(target="loihi-sim", epochs=2, hidden="12", time_steps=6, max_test=12, lr=0.01, batch_size=64, quiet=True)


def test_a_registry_lists_what_it_knows_and_refuses_twins():
    r = Registry("widget")
    r.register("b", 2, help="the second")

    @r.register("a")
    def a():
        """The first widget."""

    assert r.names() == ["a", "b"] and r.get("b") == 2 and "a" in r
    assert r.help("a") == "The first widget." and r.describe() == "a: The first widget.; b: the second"
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; known widgets: a, b"):
        r.get("c")
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        r.register("a", 3)


def test_every_unit_kind_is_registered_by_name():
    from dpap_deploy.data import SOURCES
    from dpap_deploy.data.encoding import ENCODINGS
    from dpap_deploy.export import TARGETS
    from dpap_deploy.readers import READERS
    from dpap_deploy.train.families import FAMILIES
    from dpap_deploy.train.pruners import PRUNERS

    assert {"digits", "wine", "event-digits", "npz", "nmnist"} <= set(SOURCES.names())
    assert ENCODINGS.names() == ["current", "rate"]
    assert FAMILIES.names() == ["ann-mlp", "snn-2c2f", "snn-cnn", "snn-mlp"]
    assert PRUNERS.names() == ["dense", "dpap", "dpap-magnitude", "dpap-synops", "magnitude"]
    assert TARGETS.names() == ["loihi-sim", "loihi2", "netx", "nir", "onnx"]
    assert READERS.names() == [".net", ".nir", ".npz"]
    from dpap_deploy.cli import build_parser

    helps = build_parser().format_help()
    for name in FAMILIES.names() + ["breast-cancer", "current", "magnitude", "dpap-magnitude", "dpap-synops"]:
        assert name in helps  # the CLI's choices come from the registries


def test_the_stages_one_by_one(tmp_path):
    out = str(tmp_path / "run")
    cfg = RunConfig(out=out, **SMALL)
    ctx = run_pipeline(cfg, stop_after="prepare")
    assert ctx.exporter.takes == "snn" and ctx.profile.name == "loihi2" and ctx.family.name == "snn-mlp"
    assert ctx.dataset is None and not os.path.exists(out) and not os.path.exists(out + ".partial")

    ctx = run_pipeline(cfg, stop_after="data")
    assert ctx.dataset.name == "digits" and ctx.dataset.kind == "static" and len(ctx.y_test) == 12
    ctx = run_pipeline(cfg, stop_after="model")
    assert ctx.model.widths() == [12, 10] and ctx.x_test.shape == (6, 12, 64) and ctx.encoder.encoding == "rate"
    assert set(np.unique(ctx.x_test)) <= {0.0, 1.0}
    assert not os.path.exists(out + ".partial"), "prepare, data and model write nothing"

    ctx = run_pipeline(cfg, stop_after="train")
    staged = sorted(os.listdir(out + ".partial"))
    assert {"run.toml", "train_log.jsonl", "config.json", "checkpoint.safetensors"} <= set(staged) and not os.path.exists(out)
    assert len(ctx.history) == 2 and ctx.model.widths()[-1] == 10

    ctx = run_pipeline(RunConfig(out=out, force=True, **SMALL))
    assert ctx.exit_code == 0 and not os.path.exists(out + ".partial")
    rep = json.load(open(os.path.join(out, "report.json")))
    assert rep == ctx.report
    t = rep["timing_s"]
    for stage in ("startup", "prepare", "data", "model", "train", "ir", "export", "verify", "map", "measure", "report",
                  "lava_sim", "norse", "emulator", "mapping", "probe", "energy", "plots", "total"):
        assert stage in t, stage
    assert ctx.timing["total"] >= t["total"] > t["lava_sim"]
    stages = ("startup", "prepare", "data", "model", "train", "ir", "export", "verify", "map", "measure", "report")
    assert t["total"] >= sum(t[k] for k in stages) - 0.01  # rounding to ms
    assert t["export"] >= t["lava_sim"] and t["measure"] >= t["probe"] + t["energy"] - 0.002
    assert ctx.probe.hidden[0].shape[:2] == (6, 12) and ctx.result.hidden_spikes is not None  # from the export's run
    assert all(f["path"].startswith(out) and os.path.isfile(f["path"]) for f in rep["files"])


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def test_a_run_that_fails_during_export_leaves_the_earlier_folder_byte_identical(tmp_path, monkeypatch):
    from dpap_deploy.export import lava_sim

    out = str(tmp_path / "run")
    run_pipeline(RunConfig(out=out, **SMALL))
    before = _snapshot(out)

    def broken(*a, **k):
        raise RuntimeError("Lava crashed half-way through the simulation")

    monkeypatch.setattr(lava_sim, "run", broken)
    with pytest.raises(RuntimeError, match="Lava crashed"):
        run_pipeline(RunConfig(out=out, force=True, seed=3, **SMALL))  # trains, writes ir.npz, then export fails
    assert _snapshot(out) == before
    assert not os.path.exists(out + ".partial")
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_device_cuda_is_refused_where_cuda_is_absent(tmp_path, monkeypatch, capsys):
    import torch

    from dpap_deploy.cli import main
    from dpap_deploy.stages import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DpapError, match=r"--device cuda: CUDA is not available here \("):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(DpapError, match="--device must be cpu, cuda, cuda:N or auto, got 'tpu'"):
        resolve_device("tpu")
    code = main(["--target", "loihi-sim", "--device", "cuda", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda: CUDA is not available here" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_device_auto_trains_on_the_cpu_here(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ctx = run_pipeline(RunConfig(out=str(tmp_path / "r"), device="auto", **SMALL))
    assert ctx.report["training"]["device"] == "cpu" and ctx.report["training"]["config"]["device"] == "cpu"
