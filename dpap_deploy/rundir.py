"""Reading what a ``dpap-export`` run left behind: its folder, or a single network file.

``dpap-export --from DIR`` needs ``config.json``, ``ir.npz`` and ``model.pt`` of an earlier
run; ``dpap-report`` takes a run folder or one exported network file (``.net``, ``.nir``,
``.npz``), ours or a third party's of the same structure. Every problem is a typed error
naming the folder or file and what is wrong with it.
"""
from __future__ import annotations

import json
import os

from dpap_deploy.errors import NetworkFileError

RUN_FILES = ("config.json", "ir.npz", "model.pt")
NETWORK_SUFFIXES = (".net", ".nir", ".npz")


def read_run_config(run_dir: str) -> dict:
    """The settings (``config.json``) of the run in ``run_dir``, after checking that the
    folder holds an exported network (``config.json``, ``ir.npz``, ``model.pt``).

    Returns:
        The JSON object of ``config.json`` (seed, time_steps, data, test_fraction, model, ...).

    Raises:
        NetworkFileError: the folder does not exist, lacks one of the files, or
            ``config.json`` is not a JSON object (names the folder or file).
    """
    if not os.path.isdir(run_dir):
        raise NetworkFileError(f"--from {run_dir!r} does not exist or is not a folder (expected a dpap-export "
                               f"output folder with {', '.join(RUN_FILES)})")
    missing = [f for f in RUN_FILES if not os.path.isfile(os.path.join(run_dir, f))]
    if missing:
        raise NetworkFileError(f"--from {run_dir!r} holds no exported network (missing {', '.join(missing)})")
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path, "rb") as f:
            saved = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise NetworkFileError(f"{path}: not a readable run configuration ({type(exc).__name__}: {exc})") from None
    if not isinstance(saved, dict):
        raise NetworkFileError(f"{path}: expected a JSON object of run settings, got {type(saved).__name__}")
    kinds = {"seed": (int,), "time_steps": (int,), "test_fraction": (int, float), "data": (str, type(None)),
             "model": (str,)}
    for key, types in kinds.items():
        v = saved.get(key)
        if key in saved and (isinstance(v, bool) or not isinstance(v, types)):
            raise NetworkFileError(f"{path}: key {key!r} = {v!r} has type {type(v).__name__}; expected "
                                   f"{' or '.join(t.__name__ for t in types)}")
    if saved.get("time_steps", 1) < 1:
        raise NetworkFileError(f"{path}: key 'time_steps' = {saved['time_steps']} must be >= 1")
    if not 0 < saved.get("test_fraction", 0.2) < 1:
        raise NetworkFileError(f"{path}: key 'test_fraction' = {saved['test_fraction']} must be in (0, 1)")
    return saved


def read_network_file(path: str):
    """The network in one exported file, chosen by its suffix: netx ``.net``
    (:func:`dpap_deploy.export.netx.read_netx`), NIR ``.nir``
    (:func:`dpap_deploy.export.nir_export.read_nir`) or our IR ``.npz`` (``NetworkIR.load``).

    Raises:
        NetworkFileError: an unknown suffix; IRError (or a subclass) from the readers.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".net":
        from dpap_deploy.export.netx import read_netx

        return read_netx(path)
    if suffix == ".nir":
        from dpap_deploy.export.nir_export import read_nir

        return read_nir(path)
    if suffix == ".npz":
        from dpap_deploy.ir import NetworkIR

        return NetworkIR.load(path)
    raise NetworkFileError(f"{path}: unknown network file type {suffix or '(no suffix)'!r}; "
                           f"expected a run folder or one of {', '.join(NETWORK_SUFFIXES)}")
