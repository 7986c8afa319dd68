"""Whole-run staging: a run writes into ``OUT.partial`` and moves into ``OUT`` when it ends.

A ``dpap-export --out OUT`` run never writes into ``OUT`` while it works. Everything (``run.toml``,
the checkpoint, the training log, the model, the IR, the exported files, the plots and the
report) goes into the staging folder ``OUT.partial`` next to it, and only when the last stage
has finished is ``OUT`` replaced by it (two renames in the same parent folder). So a ``--force``
run that fails at any stage, during training or export or while writing the report, leaves the
earlier run's ``OUT`` exactly as it was, byte for byte.

An interrupted run (Ctrl-C) keeps ``OUT.partial`` when it holds a checkpoint: ``dpap-export
--resume OUT`` continues it there. A run that fails for any other reason removes it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Optional

from dpap_deploy.errors import DpapError, OutputError

STAGING_SUFFIX = ".partial"


def staging_path(out: str) -> str:
    """The staging folder of output folder ``out``: ``out + ".partial"``."""
    return os.path.normpath(out) + STAGING_SUFFIX


def unfinished_run(out: str) -> Optional[str]:
    """The folder holding ``out``'s unfinished run (its staging folder, or ``out`` itself for runs
    written before staging existed) when it holds a ``run.toml``; else None."""
    for folder in (staging_path(out), out):
        if os.path.isfile(os.path.join(folder, "run.toml")) and not os.path.isfile(os.path.join(folder, "report.json")):
            return folder
    return None


def check_output(out: str, force: bool) -> None:
    """Refuse, before anything is written, an output that must not be replaced.

    Raises:
        OutputError: ``out`` is a file, or its parent cannot hold it (a file in the way).
        DpapError: ``out`` holds a finished run, or an unfinished one, and ``force`` is False.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"output {out!r} exists and is not a folder")
    if os.path.isfile(os.path.join(out, "report.json")) and not force:
        raise DpapError(f"output folder {out!r} already holds a run; pass --force to overwrite it or choose another --out")
    if unfinished_run(out) and not force:
        raise DpapError(f"output folder {out!r} holds an unfinished run; continue it with --resume {out}, "
                        "or pass --force to start over")


class RunFolder:
    """The staging folder of one run and the move into place.

    Args:
        out: the final output folder.
        writer: this process writes (False on the ranks of a torchrun job other than 0, which only read).
    """

    def __init__(self, out: str, writer: bool = True):
        self.out = os.path.normpath(out)
        self.staging = staging_path(out)
        self.writer = writer

    def path(self, name: str) -> str:
        """Where file ``name`` of the run is written now (inside the staging folder)."""
        return os.path.join(self.staging, name)

    def final(self, path: str) -> str:
        """Where a file written at ``path`` will be once the run has moved into place."""
        rel = os.path.relpath(path, self.staging)
        return path if rel.startswith("..") else os.path.join(self.out, rel)

    def open(self, resume: bool = False) -> None:
        """Create a fresh staging folder (an earlier unfinished one is removed), or with ``resume``
        continue in the existing one.

        Raises:
            OutputError: the folder cannot be created or written (names ``out`` and the reason).
        """
        if not self.writer:
            return
        if resume and os.path.isdir(self.staging):
            return
        parent = os.path.dirname(os.path.abspath(self.out))
        up = parent
        while up and not os.path.exists(up):
            up = os.path.dirname(up)
        if up and not os.path.isdir(up):
            raise OutputError(f"cannot create output folder {self.out!r}: {up!r} is a file (Not a directory)")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.out!r}: {exc.strerror or exc}") from None
        self._remove(self.staging)
        try:
            os.mkdir(self.staging)
            fd, probe = tempfile.mkstemp(prefix=".tmp-write-test-", dir=self.staging)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            self._remove(self.staging)
            raise OutputError(f"output folder {self.out!r} cannot be written: {exc.strerror or exc} "
                              f"(while creating {self.staging!r})") from None

    def commit(self) -> None:
        """Replace ``out`` with the staging folder (the earlier run, if any, goes only now).

        Raises:
            OutputError: a rename fails; ``out`` then still holds the earlier run.
        """
        if not self.writer:
            return
        old = None
        try:
            if os.path.exists(self.out):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.old-", dir=os.path.dirname(
                    os.path.abspath(self.out)))
                os.rename(self.out, os.path.join(old, "run"))
            os.rename(self.staging, self.out)
        except OSError as exc:
            if old and not os.path.exists(self.out):  # put the earlier run back
                os.rename(os.path.join(old, "run"), self.out)
            raise OutputError(f"cannot move the finished run into {self.out!r}: {exc.strerror or exc}; the run is in "
                              f"{self.staging!r}") from None
        finally:
            if old:
                shutil.rmtree(old, ignore_errors=True)

    def abandon(self, exc: BaseException) -> None:
        """After a failure: keep the staging folder of an interrupted run that can be resumed
        (it holds a checkpoint), remove it otherwise. ``out`` is never touched."""
        from dpap_deploy.errors import TrainingInterrupted
        from dpap_deploy.train.checkpoint import CHECKPOINT_FILE

        if not self.writer or not os.path.isdir(self.staging):
            return
        resumable = os.path.isfile(self.path(CHECKPOINT_FILE))
        if isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)) and resumable:
            for f in os.listdir(self.staging):  # half-written temporaries go; the checkpoint stays
                if f.startswith(".tmp-"):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path(f))
            return
        self._remove(self.staging)

    @staticmethod
    def _remove(folder: str) -> None:
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
