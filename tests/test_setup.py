"""The set-up path: one installed namespace, Python 3.10, the interpreter finder."""
import importlib
import importlib.metadata
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_python_is_310():
    assert sys.version_info[:2] == (3, 10)


def test_installed_distribution_maps_user_folders_into_one_namespace():
    assert importlib.metadata.version("dpap-deploy") == "0.1.0"
    expected = {"dpap_deploy.train": "train", "dpap_deploy.export": "export",
                "dpap_deploy.hardware_profiles": "hardware_profiles"}
    for mod, folder in expected.items():
        m = importlib.import_module(mod)
        assert os.path.dirname(os.path.abspath(m.__file__)) == os.path.join(ROOT, folder)


def test_no_top_level_train_or_export_is_installed():
    # run outside the repository so the working directory cannot provide them
    code = "import importlib.util as u; print(u.find_spec('train'), u.find_spec('export'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None None"


def test_profiles_ship_as_package_data():
    from importlib.resources import files

    names = {p.name for p in files("dpap_deploy.hardware_profiles").iterdir()}
    assert {"loihi1.toml", "loihi2.toml"} <= names


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "dpap-export")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--target" in out.stdout


def test_find_python310_finds_a_working_interpreter():
    out = subprocess.run([os.path.join(ROOT, "scripts", "find-python310.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ver = subprocess.run([out.stdout.strip(), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True)
    assert ver.stdout.strip() == "(3, 10)"


def test_find_python310_explains_when_there_is_none(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYENV_ROOT": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "find-python310.sh")], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 1
    assert "no Python 3.10 found" in out.stderr and "pyenv install 3.10" in out.stderr
