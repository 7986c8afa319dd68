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

#: the trained model's file in a run folder
MODEL_FILE = "model.pt"
RUN_FILES = ("config.json", "ir.npz", MODEL_FILE)


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


def save_model(path: str, model, **meta) -> None:
    """Write the trained model (configuration, weights and masks) and ``meta`` (``train_config``,
    ``dpap_state``) to ``path``, atomically."""
    import torch

    from dpap_deploy.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"model_config": model.config(), "state_dict": model.state_dict(),
                    "dense_widths": model.dense_widths, **meta}, tmp)


def load_model(path: str):
    """``(model, meta)`` from a file :func:`save_model` wrote.

    Raises:
        NetworkFileError: the file is missing or not a model of ours (names it).
    """
    import torch

    from dpap_deploy.train.models import model_from_config

    try:
        ckpt = torch.load(path, map_location="cpu")
        model = model_from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
        model.dense_widths = ckpt.get("dense_widths") or model.widths()
    except Exception as exc:
        raise NetworkFileError(f"{path} is not a dpap-deploy checkpoint ({type(exc).__name__}: {exc})") from None
    return model, {k: v for k, v in ckpt.items() if k not in ("model_config", "state_dict")}
