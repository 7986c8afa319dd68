"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one ``torch.save`` file (``DIR/checkpoint.pt``), written atomically (a
temporary name, then ``os.replace``) after every epoch and when training is interrupted
(SIGINT). It holds the compacted model (config and weights, masks included), the Adam state,
the DPAP state (masks, spine values ``M``, thresholds ``theta``, traces ``A``, survival
values ``R``, batch count), the hardware budget's targets and history, the batch-order
generator's state at the start of the current epoch, the position (epoch, next batch, the
epoch's running loss and correct count) and the history so far. Continuing from it gives the
same masks and accuracy as an uninterrupted run with the same seed (``tests/test_resume.py``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from dpap_deploy.errors import CheckpointError
from dpap_deploy.fileio import atomic_path

#: the checkpoint's file name in a run folder
CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "dpap-deploy-checkpoint"
VERSION = 1
REQUIRED = ("model_config", "state_dict", "optimizer", "position", "generator", "history", "train_config", "method")


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Write ``ckpt`` (the fields in :data:`REQUIRED` and optional ``dpap_state``, ``budget``,
    ``seconds``, ``torch_rng``) to ``path`` atomically, tagged with the format and version."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **ckpt}, tmp)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, unreadable, truncated or corrupt, not a
            dpap-deploy checkpoint (names what it is instead), of a newer version, or lacks a field.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint (file not found)")
    try:
        ckpt = torch.load(path, map_location="cpu")
    except Exception as exc:  # torch.load's errors are pickle/zip/IO errors of every kind
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = f"a dict with keys {sorted(ckpt)[:6]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a dpap-deploy checkpoint (holds {what}, no format {FORMAT!r})")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this dpap-deploy "
                              f"reads ({VERSION})")
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
