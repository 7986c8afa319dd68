"""Runs as files: --config, the saved run.toml, Ctrl-C and --resume, report.md and the plots."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dpap_deploy.cli import build_parser, main, parse_args
from dpap_deploy.errors import ConfigError
from dpap_deploy.ir import NetworkIR

SMALL = ["--target", "loihi-sim", "--epochs", "3", "--hidden", "16,8", "--time-steps", "4", "--max-test", "20",
         "--lr", "0.01", "--batch-size", "64", "--quiet"]
CLI = [sys.executable, "-m", "dpap_deploy.cli"]


def _same_network(a: str, b: str) -> None:
    na, nb = NetworkIR.load(os.path.join(a, "network.npz")), NetworkIR.load(os.path.join(b, "network.npz"))
    assert [l.name for l in na.layers] == [l.name for l in nb.layers]
    for la, lb in zip(na.layers, nb.layers):
        np.testing.assert_array_equal(la.mask, lb.mask)
        np.testing.assert_array_equal(la.fixed.weight, lb.fixed.weight)
    ra, rb = (json.load(open(os.path.join(d, "report.json"))) for d in (a, b))
    assert ra["accuracy"] == rb["accuracy"] and ra["model"] == rb["model"]


def test_config_file_sets_options_and_flags_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('target = "netx"\nepochs = 7\ntime-steps = 12\nlr = 1\nhidden = 64\nno_prune = true\n'
                   'from = "runs/demo"\n')
    args = parse_args(["--config", str(cfg), "--epochs", "2"])
    assert (args.target, args.epochs, args.time_steps, args.lr, args.hidden, args.no_prune, args.from_dir) == \
        ("netx", 2, 12, 1.0, "64", True, "runs/demo")


@pytest.mark.parametrize("text, message", [
    ("epochs = 'ten'\n", "epochs must be an integer, got 'ten'"),
    ("epochs = true\n", "epochs must be an integer, got True"),
    ("lr = 'fast'\n", "lr must be a number"),
    ("pruner = 'lottery'\n", "pruner = 'lottery' is not one of dense, dpap, dpap-magnitude, dpap-synops, magnitude"),
    ("encoding = 'phase'\n", "encoding = 'phase' is not one of current, rate"),
    ("no-prune = 1\n", "no-prune must be true or false"),
    ("epochz = 3\n", "unknown key 'epochz'; known keys: "),
    ("resume = 'x'\n", "unknown key 'resume'"),
    ("profile = ['loihi1']\n", "profile must be a single value, got a list"),
    ("[train]\nepochs = 3\n", "unknown key 'train'"),
    ("from-dir = 'x'\n", "unknown key 'from-dir'; known keys: batch-size, budget-cores, channels, check-only, chips, data, "
     "debug, device, dpap-normalise, dpap-percentiles, dpap-preset, dpap-schedule, dpap-synapse-score, encoding, epochs, fit, force, from, hidden"),
    ("epochs = \n", "not valid TOML: "),
    ("epochs = 3\nepochs = 4\n", "not valid TOML: "),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=str(cfg).replace(".", r"\.") + ": " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        parse_args(["--config", str(cfg)])


def test_missing_config_and_resume_without_a_run(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: config file not found" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "no unfinished run there" in capsys.readouterr().err
    assert main(["--epochs", "3"]) == 2
    assert "--target is required" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_uninterrupted_result_and_run_toml_repeats_it(tmp_path):
    whole, cut, again = (str(tmp_path / n) for n in ("whole", "cut", "again"))
    done = subprocess.run(CLI + SMALL + ["--out", whole], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    # Ctrl-C once the first epoch's checkpoint is written: exit 130 with the command to resume
    p = subprocess.Popen(CLI + SMALL + ["--out", cut], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = os.path.join(cut + ".partial", "checkpoint.safetensors")  # the run writes into its staging folder
    t0 = time.time()
    while not os.path.isfile(ckpt):
        assert p.poll() is None and time.time() - t0 < 300, "training did not start"
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert f"continue with: dpap-export --resume {cut}" in err and "Traceback" not in err
    assert os.path.isfile(ckpt) and not os.path.exists(cut)  # nothing moved into place
    # the folder is not silently overwritten
    clash = subprocess.run(CLI + SMALL + ["--out", cut], capture_output=True, text=True, timeout=300)
    assert clash.returncode == 2 and f"continue it with --resume {cut}" in clash.stderr

    resumed = subprocess.run(CLI + ["--resume", cut, "--quiet"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    _same_network(whole, cut)
    assert open(os.path.join(whole, "train_log.jsonl")).read().count("\n") == 3
    assert [json.loads(l)["test_accuracy"] for l in open(os.path.join(cut, "train_log.jsonl"))] == \
        [json.loads(l)["test_accuracy"] for l in open(os.path.join(whole, "train_log.jsonl"))]

    # the saved effective config repeats the run exactly
    rep = subprocess.run(CLI + ["--config", os.path.join(whole, "run.toml"), "--out", again, "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0, rep.stderr
    _same_network(whole, again)

    # report.md and the figures are there and say what report.json says
    md = open(os.path.join(whole, "report.md")).read()
    report = json.load(open(os.path.join(whole, "report.json")))
    assert f"{100 * report['accuracy']['lava']:.2f} %" in md and "![pruning.png](pruning.png)" in md
    syn = report["energy"]["synops_per_sample"]
    assert syn["lava"] > 0 and syn["norse"] > 0 and syn["dense_connectivity_same_spikes"] >= syn["norse"]
    assert report["energy"]["lava_samples"] == 20  # --max-test 20: all of them went through the probe
    assert abs(syn["lava"] - syn["norse_same_samples"]) <= 0.1 * syn["norse_same_samples"]
    assert report["energy"]["relative_energy"] == pytest.approx(1 - report["model"]["sparsity"], abs=1e-5)
    assert "## Energy" in md
    for png in ("pruning.png", "raster.png", "resources.png"):
        with open(os.path.join(whole, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert any(f["path"].endswith(png) for f in report["files"])
    assert not [f for f in os.listdir(whole) if f.startswith(".tmp-")]


def test_effective_config_leaves_out_how_to_run():
    from dpap_deploy.config import effective_config

    args = build_parser().parse_args(["--target", "nir", "--out", "x", "--force", "--quiet", "--epochs", "5"])
    cfg = effective_config(args, build_parser())
    assert cfg["target"] == "nir" and cfg["epochs"] == 5
    assert not {"out", "force", "quiet", "debug", "log-level", "config", "resume"} & set(cfg)
    assert "data" not in cfg  # None: TOML has no null


def test_timestep_pruning_through_the_cli_to_lava_and_its_energy_report(tmp_path, capsys):
    """``--timestep-pruning``: the trained masks reach ``network.npz`` with the ``"hold"`` gate, Lava
    (``GatedLIFReset`` populations where needed) equals the emulator, ``report.json``'s energy section follows paper eqs. 14-15, and a
    target without a per-step gate refuses the run with the layer named."""
    out = str(tmp_path / "st")
    # epsilon 1.9: the least important (neuron, step) pairs lose up to 1.9 a pruning epoch from R = 5
    # (preset mnist-snn), from epoch 5 (e0) on, so they are gone after the third, epoch 7
    assert main(SMALL[:2] + ["--epochs", "8", "--hidden", "16,8", "--time-steps", "6", "--max-test", "24", "--lr", "0.01",
                             "--batch-size", "64", "--quiet", "--timestep-pruning", "1.9,13", "--out", out]) == 0
    rep = json.load(open(os.path.join(out, "report.json")))
    t = rep["timing_s"]  # from the CLI's start: every stage, the parts, a total that covers the stages
    stages = ("startup", "prepare", "data", "model", "train", "ir", "export", "verify", "map", "measure", "report")
    assert all(k in t for k in stages + ("lava_sim", "probe", "energy", "mapping", "plots", "total"))
    assert t["total"] >= sum(t[k] for k in stages) - 0.01 and t["startup"] >= 0
    ir = NetworkIR.load(os.path.join(out, "network.npz"))
    masks = [l.time_mask for l in ir.layers]
    assert masks[0] is not None and masks[1] is not None and masks[2] is None  # the output layer is not pruned
    assert [l.time_gate for l in ir.layers] == ["hold"] * 3  # a new model's gate (docs/dpap.md sec. 7.4)
    silenced = sum(int((~np.asarray(m, bool)).sum()) for m in masks[:2])
    assert silenced > 0
    e = rep["energy"]
    assert 0 < e["rho_t"] < 1 and e["time_steps_trained"] == 6 and e["time_steps"] == ir.time_steps
    assert e["relative_energy"] == pytest.approx((1 - e["rho_w"]) * (1 - e["rho_t"]), abs=2e-6)
    assert rep["accuracy"]["lava"] == rep["accuracy"]["emulator"]
    syn = e["synops_per_sample"]
    assert syn["lava"] == pytest.approx(syn["norse_same_samples"], rel=0.02)
    # the least important steps are the first ones (the presynaptic trace is still small), not the
    # window's end, so T stays and Lava needed gates; Loihi's LIF cannot do that: refused, nothing written
    assert ir.silenced_inside_window()
    capsys.readouterr()
    assert main(["--from", out, "--target", "netx", "--out", str(tmp_path / "netx"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot silence neurons at chosen time steps" in err and "fc1" in err
    assert not os.path.exists(tmp_path / "netx" / "report.json")
