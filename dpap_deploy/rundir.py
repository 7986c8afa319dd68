"""Reading what a ``dpap-export`` run left behind: its folder, or a single network file.

``dpap-export --from DIR`` needs ``config.json``, ``ir.npz`` and ``model.safetensors`` of an
earlier run; ``dpap-report`` takes a run folder or one exported network file (``.net``, ``.nir``,
``.npz``), ours or a third party's of the same structure. Every problem is a typed error
naming the folder or file and what is wrong with it.

The trained model (:data:`MODEL_FILE`, :func:`save_model`, :func:`load_model`) is a safetensors
file written by :mod:`dpap_deploy.tensorfile`: loading it never unpickles anything, so a shared
run folder cannot run code. The ``model.pt`` (``torch.save``, a pickle) of older versions is
refused with a message saying why.
"""
from __future__ import annotations

import json
import os

from dpap_deploy.errors import NetworkFileError

#: the trained (compacted) model of a run: config, weights and masks, DPAP state
MODEL_FILE = "model.safetensors"
#: the pickle-based model file of older versions, refused (unpickling can run code)
LEGACY_MODEL_FILE = "model.pt"
MODEL_FORMAT = "dpap-deploy-model"
MODEL_VERSION = 1
RUN_FILES = ("config.json", "ir.npz", MODEL_FILE)


def read_run_config(run_dir: str) -> dict:
    """The settings (``config.json``) of the run in ``run_dir``, after checking that the
    folder holds an exported network (``config.json``, ``ir.npz``, ``model.safetensors``).

    Returns:
        The JSON object of ``config.json`` (seed, time_steps, data, test_fraction, model, ...).

    Raises:
        NetworkFileError: the folder does not exist, lacks one of the files, holds an older
            version's pickle-based ``model.pt`` instead of ``model.safetensors`` (not loaded: says
            why and to re-run the training), or ``config.json`` is not a JSON object (names the
            folder or file).
    """
    if not os.path.isdir(run_dir):
        raise NetworkFileError(f"--from {run_dir!r} does not exist or is not a folder (expected a dpap-export "
                               f"output folder with {', '.join(RUN_FILES)})")
    legacy = os.path.join(run_dir, LEGACY_MODEL_FILE)
    if not os.path.isfile(os.path.join(run_dir, MODEL_FILE)) and os.path.isfile(legacy):
        raise NetworkFileError(f"{legacy}: a pickle-based model file from an older dpap-deploy, not loaded because "
                               f"unpickling can run code; re-run the training to get {MODEL_FILE}")
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
    """Write a trained model to ``path`` (:data:`MODEL_FILE` of a run folder) atomically.

    Args:
        model: a :class:`dpap_deploy.train.models.MaskedNet` (``config()``, ``state_dict()``,
            ``dense_widths``).
        meta: more to keep beside it, plain data and tensors (what
            :func:`dpap_deploy.tensorfile.save_tree` takes); the CLI passes ``train_config``
            (``TrainConfig.to_dict()``) and ``dpap_state`` (``DPAPState.state_dict()`` or None).

    Raises:
        TypeError: a value in ``meta`` the file cannot hold (names its path).
        OutputError: the file cannot be written.
    """
    from dpap_deploy.tensorfile import save_tree

    tree = {"model_config": model.config(), "state_dict": model.state_dict(),
            "dense_widths": list(model.dense_widths), **meta}
    save_tree(path, tree, MODEL_FORMAT, MODEL_VERSION)


def load_model(path: str):
    """Rebuild the model saved by :func:`save_model`, without unpickling anything.

    Returns:
        ``(model, meta)``: the model (``dpap_deploy.train.models.model_from_config``, weights and
        masks loaded, ``dense_widths`` set; on the CPU) and a dict of the other saved keys
        (``train_config``, ``dpap_state``, ...).

    Raises:
        NetworkFileError: naming ``path``: the file is missing, pickle-based, not a safetensors
            file, truncated or corrupt, not a dpap-deploy model file or of a newer version
            (:func:`dpap_deploy.tensorfile.load_tree`); its model config describes no model we
            build; or its weights do not fit that model.
    """
    from dpap_deploy.tensorfile import load_tree
    from dpap_deploy.train.models import model_from_config

    tree = load_tree(path, MODEL_FORMAT, MODEL_VERSION, error=NetworkFileError)
    if not isinstance(tree, dict) or not isinstance(tree.get("model_config"), dict) or \
            not isinstance(tree.get("state_dict"), dict):
        raise NetworkFileError(f"{path}: not a dpap-deploy model file (no model_config and state_dict dicts)")
    meta = {k: v for k, v in tree.items() if k not in ("model_config", "state_dict", "dense_widths")}
    try:
        model = model_from_config(tree["model_config"])
    except Exception as exc:  # a hand-made config: KeyError, TypeError, ValueError, ... from the constructors
        raise NetworkFileError(f"{path}: model_config describes no model this dpap-deploy builds "
                               f"({type(exc).__name__}: {_one_line(exc)})") from None
    try:
        model.load_state_dict(tree["state_dict"])
        model.dense_widths = tree.get("dense_widths") or model.widths()
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise NetworkFileError(f"{path}: the weights do not fit the model of its model_config "
                               f"({type(exc).__name__}: {_one_line(exc)})") from None
    return model, meta


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."
