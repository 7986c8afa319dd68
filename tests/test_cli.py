"""dpap-export end to end on a small network, and its errors on bad arguments."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dpap_deploy.ir import NetworkIR
from dpap_deploy.report import validate

EXE = os.path.join(os.path.dirname(sys.executable), "dpap-export")
REPORT_EXE = os.path.join(os.path.dirname(sys.executable), "dpap-report")
SMALL = ["--epochs", "8", "--hidden", "64,32", "--time-steps", "16", "--max-test", "40", "--quiet"]


def cli(*args, cwd=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    r = cli("--target", "loihi-sim", "--profile", "loihi2", "--out", str(out), "--seed", "3", *SMALL)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_end_to_end_report_and_files(run_dir):
    out, stdout = run_dir
    assert "Lava fixed point" in stdout and "fits" in stdout
    for f in ("report.json", "network.npz", "ir.npz", "model.safetensors", "config.json", "train_log.jsonl"):
        assert (out / f).is_file(), f
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    report = json.loads((out / "report.json").read_text())
    validate(report)
    assert report["target"] == "loihi-sim" and report["profile"] == "loihi2"
    assert report["dataset"] == {**report["dataset"], "name": "digits", "n_train": 1437, "n_test": 40, "time_steps": 16}
    assert 0.0 <= report["accuracy"]["lava"] <= 1.0 and report["accuracy"]["norse"] > 0.7
    # an 8-epoch network is already far better than chance in Lava, and Lava agrees with Norse
    assert report["accuracy"]["lava"] > 0.7 and report["agreement"]["predictions"] >= 0.8
    assert [l["name"] for l in report["model"]["layers"]] == ["fc1", "fc2", "fc3"]
    assert report["resources"]["fits"] is True
    assert report["resources"]["cores_used"] == len(report["resources"]["per_core"]) >= 1
    assert report["resources"]["cores_used"] == report["resources"]["cores_lower_bound"]  # small layers share a core
    assert (out / "resources.png").read_bytes()[:4] == b"\x89PNG"
    # the batched emulator agrees with Lava on every output spike of the run
    assert report["agreement"]["spikes"] == 1.0 and report["accuracy"]["emulator"] == report["accuracy"]["lava"]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 8


def test_reported_synapses_are_those_of_the_exported_network(run_dir):
    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    net = NetworkIR.load(str(out / "network.npz"))
    for layer, entry in zip(net.layers, report["model"]["layers"]):
        assert entry["synapses"] == int(np.count_nonzero(layer.fixed.weight[layer.mask]))
        assert entry["n_out"] == layer.n_out and entry["synapses_dense"] == layer.synapses_dense
    total = sum(e["synapses"] for e in report["model"]["layers"])
    assert report["model"]["sparsity"] == pytest.approx(1 - total / report["model"]["synapses_dense"], abs=1e-6)


def test_export_from_an_earlier_run_without_training(run_dir, tmp_path):
    out, _ = run_dir
    r = cli("--target", "loihi-sim", "--from", str(out), "--profile", "loihi1", "--out", str(tmp_path / "again"),
            "--max-test", "40", "--quiet")
    assert r.returncode == 0, r.stderr
    a = json.loads((out / "report.json").read_text())
    b = json.loads((tmp_path / "again" / "report.json").read_text())
    assert b["profile"] == "loihi1" and b["training"]["from"] == str(out)
    assert b["accuracy"] == a["accuracy"] and b["model"]["synapses"] == a["model"]["synapses"]


def test_existing_run_is_not_overwritten_without_force(run_dir):
    out, _ = run_dir
    before = (out / "report.json").read_text()
    r = cli("--target", "loihi-sim", "--out", str(out), *SMALL)
    assert r.returncode == 2 and "already holds a run; pass --force" in r.stderr
    assert (out / "report.json").read_text() == before


@pytest.mark.parametrize("args,message", [
    (["--target", "loihi-foo"], "unknown target 'loihi-foo'; known targets: loihi-sim"),
    (["--target", "loihi-sim", "--data", "/nonexistent/d.npz"], "data file '/nonexistent/d.npz' does not exist"),
    (["--target", "loihi-sim", "--profile", "loihi7"], "unknown profile 'loihi7'"),
    (["--target", "loihi-sim", "--time-steps", "0"], "--time-steps must be >= 1, got 0"),
    (["--target", "loihi-sim", "--hidden", "32,x"], "--hidden must be comma-separated integers"),
    (["--target", "loihi-sim", "--from", "/tmp"], "holds no exported network"),
    (["--target", "loihi-sim", "--profile", "xylo-audio2", "--fit"],
     'budget xylo-audio2 cannot be met by pruning: even one neuron per hidden layer breaks layer "fc1": '
     "64 input channels; xylo-audio2 takes 16"),
    (["--target", "loihi-sim", "--check-only"], "--check-only needs --from DIR"),
    (["--target", "loihi-sim", "--budget-cores", "0"], "--budget-cores must be a positive integer"),
    (["--target", "loihi-sim", "--profile", "loihi1", "--budget-cores", "129"], "loihi1 has only 128 cores"),
    (["--target", "loihi-sim", "--chips", "-1"], "--chips must be a positive integer"),
    (["--target", "onnx"], "target onnx exports ANNs; train one with --model ann-mlp"),
    (["--target", "netx", "--model", "ann-mlp"], "target netx needs a spiking network"),
    (["--target", "loihi-sim", "--dpap-schedule", "run-length", "--epochs", "2"],
     "--dpap-schedule run-length: a run of 2 epochs is too short: pruning would start at epoch 1"),
    (["--target", "loihi-sim", "--dpap-percentiles", "80,20"],
     "--dpap-percentiles takes LO,HI with 0 <= LO < HI <= 100, got '80,20'"),
    (["--target", "loihi-sim", "--dpap-percentiles", "95"], "--dpap-percentiles takes LO,HI"),
])
def test_bad_arguments_get_a_clear_error_and_no_traceback(tmp_path, args, message):
    r = cli(*args, "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists(), "bad input must not leave an output folder"


def test_missing_target_is_an_argparse_error():
    r = cli()
    assert r.returncode == 2 and "--target" in r.stderr


def test_user_npz_through_the_cli(tmp_path, digits):
    data = tmp_path / "mine.npz"
    np.savez(data, x=digits.x_train[:300] * 16, y=digits.y_train[:300])  # static (N, F): scaled per feature
    out = tmp_path / "run"
    r = cli("--target", "loihi-sim", "--data", str(data), "--out", str(out), "--epochs", "1", "--hidden", "16",
            "--time-steps", "8", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["name"] == "mine.npz"
    assert report["dataset"]["n_train"] + report["dataset"]["n_test"] == 300
    assert report["model"]["layers"][0]["n_in"] == 64


def report_cli(*args):
    return subprocess.run([REPORT_EXE, *args], capture_output=True, text=True, timeout=120)


def test_dpap_report_rechecks_an_exported_network_against_other_profiles(run_dir, tmp_path):
    out, _ = run_dir
    ok = report_cli(str(out), "--profile", "loihi1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("loihi1: 1 cores used") and "fits" in ok.stdout
    tn = report_cli(str(out), "--profile", "truenorth", "--json")
    assert tn.returncode == 3
    res = json.loads(tn.stdout)
    assert not res["fits"] and any("weights need 8 bits; truenorth stores 1" in v for v in res["violations"])
    png = tmp_path / "r.png"
    assert report_cli(str(out), "--profile", "kapoho-point", "--plot", str(png)).returncode == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = report_cli(str(tmp_path))
    assert bad.returncode == 2 and "holds no exported network" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("--target", "loihi-sim", "--from", str(out), "--check-only", "--profile", "truenorth").returncode == 3


def test_budget_cores_drive_pruning_until_the_network_fits(tmp_path):
    prof = tmp_path / "small.toml"
    prof.write_text('extends = "loihi1"\nname = "small"\ndescription = "40-neuron cores"\n[core]\nneurons = 40  # test\n')
    out = tmp_path / "fit"
    r = cli("--target", "loihi-sim", "--profile", str(prof), "--budget-cores", "2", "--out", str(out),
            "--epochs", "16", "--hidden", "64,32", "--time-steps", "8", "--lr", "1e-2", "--max-test", "20", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    b, res = report["budget"], report["resources"]
    assert b["met"] and b["cores"] == 2 and res["fits"] and res["cores_used"] <= 2
    assert report["model"]["neurons"] <= 80 < report["model"]["neurons_dense"]  # 106 dense neurons do not fit
    assert any(v > 0 for v in b["c_boost"].values())
    assert "budget    small (2 cores): met after epoch" in r.stdout


def test_nir_target_through_the_cli(run_dir, tmp_path):
    out, _ = run_dir
    r = cli("--target", "nir", "--from", str(out), "--out", str(tmp_path / "nir"), "--max-test", "40", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "nir" / "report.json").read_text())
    assert (tmp_path / "nir" / "network.nir").is_file()
    # the file, as norse.torch.from_nir imports it, predicts exactly what our Norse model does
    assert report["agreement"]["predictions"] == 1.0
    assert report["accuracy"]["nir_in_norse"] == report["accuracy"]["norse"]


def test_netx_target_through_the_cli(run_dir, tmp_path):
    out, _ = run_dir
    r = cli("--target", "netx", "--from", str(out), "--out", str(tmp_path / "netx"), "--max-test", "40", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "netx" / "report.json").read_text())
    lava = json.loads((out / "report.json").read_text())
    assert (tmp_path / "netx" / "network.net").is_file()
    # the file lava-dl loads gives loihi-sim's accuracy, and the emulator agrees with it spike for spike
    assert report["accuracy"]["netx_in_lava"] == lava["accuracy"]["lava"]
    assert report["agreement"]["spikes"] == 1.0


def test_a_netx_file_runs_with_from_and_data_against_lava_dl(run_dir, tmp_path):
    """``--from FILE.net --data``: a network file with no run folder (no model, no config) runs in our
    Lava export, and lava-dl's own netx run of the same file gives the same output spikes."""
    out, _ = run_dir
    assert cli("--target", "netx", "--from", str(out), "--out", str(tmp_path / "netx"), "--max-test", "1",
               "--quiet").returncode == 0
    lone = tmp_path / "elsewhere" / "slayer.net"  # the file alone, as a lava-dl user would hand it over
    lone.parent.mkdir()
    lone.write_bytes((tmp_path / "netx" / "network.net").read_bytes())
    r = cli("--target", "loihi-sim", "--from", str(lone), "--data", "digits", "--time-steps", "16",
            "--out", str(tmp_path / "run"), "--max-test", "30", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    validate(report)
    assert report["training"]["family"] == "file .net" and report["training"]["pruner"] is None
    assert report["agreement"]["compared"] == "lava_dl_netx vs lava"
    assert report["agreement"]["reference_spikes"] == 1.0 and report["agreement"]["spikes"] == 1.0
    assert report["accuracy"]["lava_dl_netx"] == report["accuracy"]["lava"] > 0.7
    assert report["resources"]["fits"] and report["energy"]["synops_per_sample"]["lava"] > 0
    assert "reference output spikes equal to Lava's (lava_dl_netx vs lava): 100.00 %" in r.stdout


def test_a_nir_file_runs_with_from_and_data_against_norse_from_nir(run_dir, tmp_path):
    out, _ = run_dir
    assert cli("--target", "nir", "--from", str(out), "--out", str(tmp_path / "nir"), "--max-test", "1",
               "--quiet").returncode == 0
    r = cli("--target", "loihi-sim", "--from", str(tmp_path / "nir" / "network.nir"), "--data", "digits",
            "--out", str(tmp_path / "run"), "--max-test", "30", "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["time_steps"] == 16  # the window our NIR file records
    assert report["agreement"]["compared"] == "norse_from_nir vs lava"
    # Norse runs the float graph, Lava the quantised one: the same predictions on nearly every sample
    assert report["agreement"]["predictions"] >= 0.9 and report["agreement"]["spikes"] == 1.0


@pytest.mark.parametrize("args,message", [
    ([], "a network file brings no data; give the input with --data"),
    (["--data", "wine"], "the network takes 64 inputs and has 10 outputs; the data have 13 features and 3 classes"),
    (["--data", "digits", "--encoding", "current"], "a network file takes spikes"),
])
def test_from_a_network_file_refuses_what_it_cannot_run(run_dir, tmp_path, args, message):
    out, _ = run_dir
    r = cli("--target", "loihi-sim", "--from", str(out / "network.npz"), "--out", str(tmp_path / "o"), "--quiet", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_onnx_target_trains_and_exports_a_pruned_ann(tmp_path):
    out = tmp_path / "ann"
    r = cli("--target", "onnx", "--model", "ann-mlp", "--dpap-preset", "cifar-snn", "--epochs", "30", "--lr", "1e-2",
            "--hidden", "64,32", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    validate(report)
    assert (out / "network.onnx").is_file() and report["dataset"]["time_steps"] == 1
    assert report["accuracy"]["torch"] > 0.9 and report["accuracy"]["onnxruntime"] == report["accuracy"]["torch"]
    assert report["model"]["neurons"] < report["model"]["neurons_dense"]  # DPAP removed neurons, gone from the graph
    assert "onnxruntime run" in next(f["verified_by"] for f in report["files"] if f["path"].endswith(".onnx"))


def test_conv_snn_on_event_digits_through_lava(tmp_path):
    out = tmp_path / "cnn"
    r = cli("--target", "loihi-sim", "--model", "snn-cnn", "--channels", "4,8", "--hidden", "32", "--epochs", "3",
            "--time-steps", "6", "--lr", "1e-2", "--max-test", "24", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert [l["kind"] for l in report["model"]["layers"]] == ["conv", "conv", "fc", "fc"]
    assert report["dataset"]["name"] == "event-digits" and report["dataset"]["n_features"] == 2 * 20 * 20
    assert report["accuracy"]["norse"] > 0.3  # 10 % is chance
    # Lava's fixed-point Conv + Sparse network and the emulator agree on every output spike
    assert report["agreement"]["spikes"] == 1.0 and report["accuracy"]["emulator"] == report["accuracy"]["lava"]
    assert report["resources"]["fits"]
