"""Issue 6: every kind of bad input gets one clear line (what, which file/field/layer, which
limit), exit code 2 (3 where the CLI documents "does not fit"), no traceback unless --debug,
and nothing already on disk is lost or left half-written.

The CLI runs in-process (``main``/``report_main`` with ``capsys``) except where a real
process is the point (the traceback under ``--debug``)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dpap_deploy.cli import main, report_main
from dpap_deploy.errors import DataError, DpapError
from dpap_deploy.rundir import RUN_FILES

PROFILES = os.path.join(os.path.dirname(__file__), "..", "hardware_profiles")
LOIHI2 = open(os.path.join(PROFILES, "loihi2.toml")).read()
CHEAP = ["--epochs", "1", "--hidden", "8,8", "--time-steps", "4", "--max-test", "10", "--quiet"]


def run_cli(capsys, *args, fn=main):
    code = fn([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *needles, exit_code=2):
    assert code == exit_code, err
    assert "Traceback" not in err
    line = [l for l in err.splitlines() if ": error: " in l]
    assert len(line) == 1, err  # one line, the message
    for n in needles:
        assert n in line[0], (n, line[0])


def tmp_files(folder):
    return [f for f in os.listdir(folder) if f.startswith(".tmp")]


def snapshot(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (cheap) run: 1 epoch, 64-8-8-10, T = 4, through Lava on 10 test digits."""
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["--target", "loihi-sim", "--out", str(out), *CHEAP]) == 0
    return out


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    from dpap_deploy.data import load_digits

    d = load_digits()
    return d.x_train[:200], d.y_train[:200]


# -- targets and profiles ---------------------------------------------------------------------
def _profile(tmp_path, text, name="p.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _loop(tmp_path):
    """a.toml extends b.toml, which extends ./a.toml: the same file under another spelling."""
    _profile(tmp_path, 'extends = "./a.toml"\n', "b.toml")
    return _profile(tmp_path, 'extends = "b.toml"\n', "a.toml")


def _truncated(text):
    cut = text.index("input_axons")  # mid [core]: the file ends after core.neurons
    return text[:cut]


@pytest.mark.parametrize("make,needles", [
    (lambda tp: ["--target", "loihi-foo"], ["unknown target 'loihi-foo'", "known targets: loihi-sim, loihi2, netx"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", "loihi7"],
     ["unknown profile 'loihi7'", "bundled profiles: kapoho-point, loihi1, loihi2"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", str(tp / "none.toml")], ["profile file", "none.toml' does not exist"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _profile(tp, LOIHI2.replace("[core]", "[core", 1))],
     ["p.toml: not valid TOML", "line 15"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _profile(tp, _truncated(LOIHI2))],
     ["p.toml: missing key core.input_axons (expected integer or inf)"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _profile(tp, LOIHI2.replace("neurons = 8192", "neurons = -8192"))],
     ["p.toml: core.neurons = -8192 must be positive (>= 1)"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _profile(tp, LOIHI2.replace("index_bits = 10", "index_bits = -1"))],
     ["p.toml: synapse_cost.index_bits = -1 must be non-negative (>= 0)"]),
    (lambda tp: ["--target", "loihi-sim", "--profile",
                 _profile(tp, "\n".join(l for l in LOIHI2.splitlines() if not l.startswith("synaptic_memory_bits")))],
     ["p.toml: missing key core.synaptic_memory_bits"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _profile(tp, LOIHI2.replace("cores = 128", "cores = nan"))],
     ["p.toml: chip.cores = nan has type float; expected integer or inf"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _profile(tp, LOIHI2.replace("weight_exp_min = -8", "weight_exp_min = 9"))],
     ["p.toml: numerics.weight_exp_min 9 > weight_exp_max 7"]),
    (lambda tp: ["--target", "loihi-sim", "--profile", _loop(tp)], ["b.toml: extends './a.toml' makes a loop"]),
])
def test_bad_target_or_profile(tmp_path, capsys, make, needles):
    code, _, err = run_cli(capsys, *make(tmp_path), "--out", tmp_path / "o", *CHEAP)
    assert_clean_error(code, err, *needles)
    assert not (tmp_path / "o").exists(), "bad input must not leave an output folder"


def test_a_profile_chain_of_extends_keeps_every_level(tmp_path):
    """mine.toml extends board.toml, which extends loihi1: loihi1's sections reach mine (a
    regression the fuzzer found: the grandparent's sections were lost)."""
    from dpap_deploy.hardware_profiles import load_profile

    _profile(tmp_path, 'extends = "loihi1"\nname = "board"\ndescription = "x"\n[chip]\nchips = 4\n', "board.toml")
    p = load_profile(_profile(tmp_path, 'extends = "board.toml"\nname = "m"\ndescription = "y"\n[core]\nneurons = 64\n',
                              "mine.toml"))
    assert (p.name, p.chip.chips, p.chip.cores, p.core.neurons, p.core.input_axons) == ("m", 4, 128, 64, 4096)


# -- --data -----------------------------------------------------------------------------------
def _npz(tmp_path, name="d.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("arrays,needles", [
    (lambda x, y: dict(a=x, b=y), ["d.npz' has keys ['a', 'b']; it needs 'x' (N, ...) and 'y' (N,)"]),
    (lambda x, y: dict(x=x, y=y[:150]), ["d.npz': 'x' has 200 samples but 'y' has 150"]),
    (lambda x, y: dict(x=np.where(np.arange(x.size).reshape(x.shape) == 77, np.nan, x), y=y),
     ["d.npz': 'x' contains NaN or infinite values"]),
    (lambda x, y: dict(x=x, y=np.r_[y[:-1], -1]), ["d.npz': label -1 is out of range; labels must be 0..K-1"]),
    (lambda x, y: dict(x=x, y=np.r_[y[:-1], 10 ** 12]),  # no 10**12 counters allocated
     ["d.npz': label 1000000000000 is out of range", "only 11 distinct labels occur (class 10 has no samples)"]),
    (lambda x, y: dict(x=x, y=y + 0.5), ["d.npz': 'y' must hold integer class labels, got dtype float64"]),
    (lambda x, y: dict(x=x[:, :0], y=y), ["d.npz': 'x' has shape (200, 0): no features per sample"]),
    (lambda x, y: dict(x=x[:0], y=y[:0]), ["d.npz': 'x' has shape (0, 64): no samples"]),
    (lambda x, y: dict(x=x * 1j, y=y), ["d.npz': 'x' has dtype complex64; expected real numbers"]),
    (lambda x, y: dict(x=-np.repeat(x[:, None], 3, 1), y=y), ["d.npz': event counts must be >= 0, got -1"]),
    (lambda x, y: dict(x=x[:, None, None], y=y), ["d.npz': 'x' has shape (200, 1, 1, 64), which no model family "
                                                  "takes; expected (N, F) static features, (N, T, F) spike trains"]),
    (lambda x, y: dict(x=x, y=np.zeros_like(y)), ["d.npz': every sample has label 0; a classifier needs at least "
                                                  "two classes"]),
])
def test_bad_data(tmp_path, capsys, digits_npz, arrays, needles):
    path = _npz(tmp_path, **arrays(*digits_npz))
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--data", path, "--out", tmp_path / "o", *CHEAP)
    assert_clean_error(code, err, *needles)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content,needles", [
    (None, ["data file", "none.npz' does not exist"]),
    ("folder", ["none.npz' is a folder; expected an .npz file with 'x' and 'y'"]),
    (b"x,y\n1,2\n", ["none.npz' is not a readable .npz"]),
    ("truncated", ["none.npz' is not a readable .npz (BadZipFile"]),
])
def test_data_file_missing_or_not_npz(tmp_path, capsys, digits_npz, content, needles):
    path = tmp_path / "none.npz"
    if content == "folder":
        path.mkdir()
    elif content == "truncated":
        np.savez(path, x=digits_npz[0], y=digits_npz[1])
        path.write_bytes(path.read_bytes()[:3000])
    elif content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--data", path, "--out", tmp_path / "o", *CHEAP)
    assert_clean_error(code, err, *needles)


def test_data_of_a_shape_the_network_cannot_take(tmp_path, capsys, run_dir, digits_npz):
    x, y = digits_npz
    path = _npz(tmp_path, x=x[:, :50], y=y)
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--from", run_dir, "--data", path, "--out", tmp_path / "o",
                           "--quiet")
    assert_clean_error(code, err, "data 'd.npz' has 50 features and 10 classes",
                       f"the network in '{run_dir}' takes 64 inputs and has 10 outputs")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists(), \
        "nothing is written for a run that stops on bad input"


def test_time_steps_zero(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--out", tmp_path / "o", *CHEAP, "--time-steps", "0")
    assert_clean_error(code, err, "--time-steps must be >= 1, got 0")


def test_infeasible_budget_is_refused_before_training(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--profile", "xylo-audio2", "--fit",
                           "--out", tmp_path / "o", *CHEAP)
    assert_clean_error(code, err, 'budget xylo-audio2 cannot be met by pruning', 'layer "fc1"',
                       "64 input channels; xylo-audio2 takes 16")
    assert not (tmp_path / "o").exists()


# -- --from -----------------------------------------------------------------------------------
@pytest.mark.parametrize("setup,needles", [
    (lambda d, run: None, ["--from", "does not exist or is not a folder"]),
    (lambda d, run: d.mkdir(), ["holds no exported network (missing config.json, ir.npz, model.safetensors)"]),
    (lambda d, run: (d.mkdir(), (d / "config.json").write_text("{}"), (d / "ir.npz").write_bytes(b"")),
     ["holds no exported network (missing model.safetensors)"]),
    (lambda d, run: _copy_run(run, d, {"config.json": b"{\"seed\": 0,"}),
     ["config.json: not a readable run configuration (JSONDecodeError"]),
    (lambda d, run: _copy_run(run, d, {"config.json": b"[1, 2]"}), ["config.json: expected a JSON object of run settings"]),
    (lambda d, run: _copy_run(run, d, {"config.json": b"{\"time_steps\": 0}"}), ["config.json: key 'time_steps' = 0 must be >= 1"]),
    (lambda d, run: _copy_run(run, d, {"ir.npz": b"PK\x03\x04 not really"}), ["ir.npz' is unreadable or not ours"]),
    (lambda d, run: _copy_run(run, d, {"model.safetensors": b"\x80\x02 garbage"}),
     ["model.safetensors: a pickle, not a safetensors file; not loaded, because unpickling can run code"]),
    (lambda d, run: _copy_run(run, d, {"model.safetensors": (run / "model.safetensors").read_bytes()[:-100]}),
     ["model.safetensors: a corrupt or truncated safetensors file"]),
    (lambda d, run: _copy_run(run, d, {"model.safetensors": (run / "checkpoint.safetensors").read_bytes()}),
     ["model.safetensors: a 'dpap-deploy-checkpoint' file, not a 'dpap-deploy-model' file"]),
])
def test_from_a_folder_without_an_exported_network(tmp_path, capsys, run_dir, setup, needles):
    src = tmp_path / "src"
    setup(src, run_dir)
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--from", src, "--out", tmp_path / "o", "--quiet")
    assert_clean_error(code, err, str(src), *needles)


def _copy_run(run, dst, replace):
    dst.mkdir()
    for f in RUN_FILES:
        (dst / f).write_bytes(replace.get(f, (run / f).read_bytes()))


# -- output folders ---------------------------------------------------------------------------
@pytest.mark.parametrize("out,needles", [
    # The tests run as root, so chmod cannot make a folder read-only for them. /sys is sysfs:
    # even root cannot create a regular file in /sys/kernel (EACCES), nor a folder under it (EPERM).
    ("/sys/kernel", ["output folder '/sys/kernel' cannot be written: ", "(while creating '/sys/kernel.partial')"]),
    ("/sys/kernel/dpap-out", ["output folder '/sys/kernel/dpap-out' cannot be written"]),
    # a regular file used as a parent folder: ENOTDIR, for root too
    ("{tmp}/file.txt/run", ["cannot create output folder", "file.txt/run': ", "file.txt' is a file (Not a directory)"]),
    ("{tmp}/file.txt", ["output", "file.txt' exists and is not a folder"]),
])
def test_output_folder_that_cannot_be_written(tmp_path, capsys, out, needles):
    (tmp_path / "file.txt").write_text("keep me")
    out = out.format(tmp=tmp_path)
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--out", out, *CHEAP)
    assert_clean_error(code, err, *needles)
    assert (tmp_path / "file.txt").read_text() == "keep me"
    assert not os.path.exists("/sys/kernel/dpap-out")


def test_existing_run_is_kept_when_a_forced_run_fails_on_bad_input(tmp_path, capsys, run_dir, digits_npz):
    before = snapshot(run_dir)
    x, y = digits_npz
    bad = _npz(tmp_path, x=x, y=y[:10])
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--data", bad, "--out", run_dir, "--force", *CHEAP)
    assert_clean_error(code, err, "'x' has 200 samples but 'y' has 10")
    assert snapshot(run_dir) == before and not tmp_files(run_dir)


def test_an_interrupted_forced_run_leaves_the_earlier_run_as_it_was(tmp_path, capsys, run_dir, monkeypatch):
    """Ctrl-C after the first epoch of a --force run into a folder holding a run: exit 130, the
    earlier run's folder byte-identical (the new run only ever wrote into OUT.partial), and the
    interrupted run's settings and checkpoint kept in OUT.partial for --resume."""
    import dpap_deploy.train.loop as loop
    from dpap_deploy.train.checkpoint import CHECKPOINT_FILE, load_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    for f, data in snapshot(run_dir).items():
        (out / f).write_bytes(data)
    before = snapshot(out)
    real, epochs = loop.train, []

    def interrupted(*args, on_epoch=None, **kw):
        def stop(rec):
            on_epoch(rec)  # the log line of epoch 1 is written ...
            epochs.append(rec)
            raise KeyboardInterrupt  # ... then the user presses Ctrl-C

        return real(*args, on_epoch=stop, **kw)

    monkeypatch.setattr(loop, "train", interrupted)
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--out", out, "--force", "--seed", "5", *CHEAP)
    assert code == 130 and "dpap-export: interrupted" in err and "Traceback" not in err
    assert len(epochs) == 1
    assert snapshot(out) == before and not tmp_files(out)
    partial = tmp_path / "run.partial"
    assert load_checkpoint(str(partial / CHECKPOINT_FILE))["position"]["epoch"] == 1
    assert 'seed = 5' in (partial / "run.toml").read_text() and not tmp_files(partial)
    # the unfinished run is not silently replaced: --resume it or --force
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--out", out, *CHEAP)
    assert_clean_error(code, err, f"output folder '{out}' already holds a run")


def test_a_failed_export_leaves_the_earlier_files_and_no_temporary_file(tmp_path, capsys, run_dir, monkeypatch):
    """The disk fills up while the exporter writes network.npz: the write stops half-way, the CLI
    says which file and why, the earlier run's folder is byte-identical and no staging folder or
    temporary file is left."""
    import dpap_deploy.export.lava_sim as lava_sim

    out = tmp_path / "again"
    assert run_cli(capsys, "--target", "loihi-sim", "--from", run_dir, "--out", out, "--quiet", "--max-test", "5")[0] == 0
    before = snapshot(out)
    real = np.savez_compressed

    def disk_full(file, **arrays):
        if not str(file).split("/")[-1].startswith(".tmp-network.npz"):
            return real(file, **arrays)
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    code, _, err = run_cli(capsys, "--target", "loihi-sim", "--from", run_dir, "--out", out, "--force", "--quiet",
                           "--max-test", "5")
    monkeypatch.setattr(np, "savez_compressed", real)
    assert_clean_error(code, err, f"cannot write '{out}.partial/network.npz': No space left on device")
    assert snapshot(out) == before and not tmp_files(out) and not (tmp_path / "again.partial").exists()


# -- network files for dpap-report ------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The run's network as netx and NIR files, written by our exporters."""
    from dpap_deploy.export import get_target
    from dpap_deploy.ir import NetworkIR

    d = tmp_path_factory.mktemp("files")
    ir = NetworkIR.load(str(run_dir / "ir.npz"))
    get_target("netx")(ir, str(d))
    get_target("nir")(ir, str(d))
    return d / "network.net", d / "network.nir"


def test_report_takes_netx_and_nir_files(capsys, exported, run_dir):
    for path in exported:
        code, out, err = run_cli(capsys, path, "--profile", "loihi1", fn=report_main)
        assert code == 0, err
        assert out.startswith("loihi1: 1 cores used") and "fits" in out
    # the netx file holds the fixed-point network: its 8-bit weights do not fit TrueNorth's 1-bit crossbar
    code, out, _ = run_cli(capsys, exported[0], "--profile", "truenorth", "--json", fn=report_main)
    res = json.loads(out)
    assert code == 3 and any("weights need 8 bits; truenorth stores 1" in v for v in res["violations"])
    assert [l["layer"] for l in res["per_layer"]] == ["fc1", "fc2", "fc3"]
    # the NIR file holds the float network: mapped, it is the run's own network, synapse for synapse
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.ir import NetworkIR
    from dpap_deploy.mapping import map_network

    code, out, _ = run_cli(capsys, exported[1], "--profile", "loihi1", "--json", fn=report_main)
    ours = map_network(NetworkIR.load(str(run_dir / "ir.npz")), load_profile("loihi1")).to_report()
    assert json.loads(out)["per_layer"] == ours["per_layer"] and ours["synapses"] > 0


@pytest.mark.parametrize("which,corrupt,needles", [
    ("net", lambda b: b[: len(b) // 2], ["network.net: ", "not a readable netx HDF5 file"]),
    ("nir", lambda b: b[: len(b) // 2], ["network.nir: not a readable NIR graph"]),
    ("net", lambda b: b"this is not HDF5\n" * 20, ["network.net: /: not a readable netx HDF5 file"]),
    ("nir", lambda b: b"", ["network.nir: not a readable NIR graph"]),
])
def test_report_on_a_foreign_or_truncated_file(tmp_path, capsys, exported, which, corrupt, needles):
    src = exported[0] if which == "net" else exported[1]
    path = tmp_path / src.name
    path.write_bytes(corrupt(src.read_bytes()))
    code, _, err = run_cli(capsys, path, fn=report_main)
    assert_clean_error(code, err, str(tmp_path), *needles)


def test_report_on_a_file_of_another_kind(tmp_path, capsys):
    p = tmp_path / "net.onnx"
    p.write_bytes(b"\x08\x07")
    code, _, err = run_cli(capsys, p, fn=report_main)
    assert_clean_error(code, err, "net.onnx: unknown network file type '.onnx'; expected a run folder or one of .net, .nir")
    code, _, err = run_cli(capsys, tmp_path / "missing", fn=report_main)
    assert_clean_error(code, err, "missing' holds no exported network")


# -- --debug ----------------------------------------------------------------------------------
def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        main(["--target", "loihi-sim", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o"), "--debug"])
    exe = os.path.join(os.path.dirname(sys.executable), "dpap-export")
    args = [exe, "--target", "loihi-sim", "--time-steps", "0", "--out", str(tmp_path / "o")]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=300)
    debug = subprocess.run(args + ["--debug"], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "--time-steps must be >= 1, got 0" in plain.stderr
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "dpap_deploy.errors.DpapError: --time-steps must be >= 1, got 0" in debug.stderr


def test_every_error_is_a_dpap_error():
    import dpap_deploy.errors as e

    kinds = [v for v in vars(e).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(k, DpapError) for k in kinds) and len(kinds) >= 12
