"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one safetensors file (``DIR/checkpoint.safetensors``, :data:`CHECKPOINT_FILE`)
written by :func:`dpap_deploy.tensorfile.save_tree`: tensors as the file's tensors, everything
else as JSON in its header metadata; it is written atomically (a temporary name, then
``os.replace``) after every epoch and when training is interrupted (SIGINT). Loading never
unpickles anything, so a shared checkpoint cannot run code; the ``checkpoint.pt`` (``torch.save``,
a pickle) of older versions is refused with a message saying so. It holds the compacted model
(config and weights, masks included), the Adam state, the DPAP state (masks, spine values ``M``,
thresholds ``theta``, traces ``A``, survival values ``R``, batch count), the hardware budget's
targets and history, the batch-order generator's state at the start of the current epoch, the
position (epoch, next batch, the epoch's running loss and correct count) and the history so far.
Continuing from it gives the same masks and accuracy as an uninterrupted run with the same seed
(``tests/test_resume.py``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from dpap_deploy.errors import CheckpointError
from dpap_deploy.tensorfile import load_tree, save_tree

FORMAT = "dpap-deploy-checkpoint"
VERSION = 2  # 1 was a torch.save pickle (checkpoint.pt)
#: the checkpoint's name in a run folder
CHECKPOINT_FILE = "checkpoint.safetensors"
#: the pickle-based checkpoint of older versions, refused (unpickling can run code)
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"
REQUIRED = ("model_config", "state_dict", "optimizer", "position", "generator", "history", "train_config", "method")


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Write ``ckpt`` to ``path`` atomically, tagged with :data:`FORMAT` and :data:`VERSION`.

    Args:
        ckpt: the fields in :data:`REQUIRED` and optional ``dense_widths``, ``dpap_state``
            (``DPAPState.state_dict()``), ``budget`` (``Budget.state_dict()``), ``dpap_config``,
            ``seconds``, ``torch_rng``: ``model_config`` a JSON-able dict, ``state_dict`` the
            model's, ``optimizer`` a torch optimizer's ``state_dict()``, ``generator`` and
            ``torch_rng`` ByteTensors, the rest plain data (what :func:`dpap_deploy.tensorfile.save_tree` takes).

    Raises:
        TypeError: a value the file format cannot hold (names its path in ``ckpt``).
        OutputError: the file cannot be written.
    """
    save_tree(path, dict(ckpt), FORMAT, VERSION)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, without unpickling anything.

    Returns:
        The dict saved: ``state_dict`` an ``OrderedDict`` of tensors (``load_state_dict`` takes
        it), ``optimizer`` with its int keys and tuples (``betas``) as saved, ``dpap_state`` as
        ``DPAPState.from_state_dict`` takes it, tensors on the CPU.

    Raises:
        CheckpointError: the file is missing (and if a legacy ``checkpoint.pt`` is beside it,
            says that one is a pickle that is not loaded), unreadable, truncated or corrupt,
            pickle-based, not a dpap-deploy checkpoint (names what it is instead), of a newer
            version, or lacks a field.
    """
    if not os.path.isfile(path):
        legacy = os.path.join(os.path.dirname(path), LEGACY_CHECKPOINT_FILE)
        if os.path.basename(path) == CHECKPOINT_FILE and os.path.isfile(legacy):
            raise CheckpointError(f"{legacy}: a pickle-based checkpoint from an older dpap-deploy, not loaded because "
                                  f"unpickling can run code; no {CHECKPOINT_FILE} beside it: re-run the training "
                                  "(the same command with --force)")
        raise CheckpointError(f"{path}: no checkpoint (file not found)")
    ckpt = load_tree(path, FORMAT, VERSION, error=CheckpointError)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a dpap-deploy checkpoint (holds {type(ckpt).__name__}, not a dict)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def generator_state(gen: torch.Generator) -> torch.Tensor:
    """A copy of ``gen``'s state (``torch.Generator.get_state``)."""
    return gen.get_state().clone()


def restore_generator(gen: torch.Generator, state: Optional[torch.Tensor], path: str = "checkpoint") -> None:
    """Set ``gen`` to a saved state; a malformed state is a :class:`CheckpointError` naming ``path``."""
    try:
        gen.set_state(state)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: batch-order generator state is corrupt ({exc})") from None
