"""Atomic file writes: outputs go to a temporary name in the same folder, then ``os.replace``.

A crash or Ctrl-C never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

from dpap_deploy.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    ``suffix`` keeps an extension some writers insist on (``np.savez`` adds ``.npz``).
    On any failure the temporary file is removed and ``path`` keeps what it held.

    Raises:
        OutputError: an ``OSError`` while creating, writing or renaming (disk full, read-only
            folder, ...), naming ``path`` and the reason.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # disk full, I/O error, ...: the earlier file under `path` is untouched
            raise OutputError(f"cannot write {path!r}: {exc.strerror or exc}; the earlier file, if any, is "
                              "unchanged") from exc
        raise


def write_json(path: str, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def ensure_writable_dir(path: str) -> None:
    """Create folder ``path`` if needed and prove it takes files by creating and removing one.

    ``os.access`` is not enough: it answers "yes" for root on read-only file systems and on
    pseudo file systems such as ``/sys`` where no regular file can be created.

    Raises:
        OutputError: ``path`` is a file, a parent is a file, or the folder cannot be created
            or written (read-only file system, permissions); names the folder and the reason.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"output {path!r} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path!r}: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-write-test-", dir=path)
    except OSError as exc:
        raise OutputError(f"output folder {path!r} is not writable: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


class StagedFile:
    """A text file written line by line under a temporary name next to ``path`` (readable
    while it grows), moved to ``path`` by :meth:`commit`; :meth:`discard` removes it and leaves
    whatever ``path`` held before (e.g. an earlier run's training log) untouched.

    Raises:
        OutputError: the temporary file cannot be created or renamed (names ``path``).
    """

    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
        except OSError as exc:
            raise OutputError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
        self._f = os.fdopen(fd, "w")

    def write(self, text: str) -> None:
        self._f.write(text)

    def flush(self) -> None:
        self._f.flush()

    def commit(self) -> None:
        """Close and rename to ``path`` (normal permissions, as :func:`atomic_path`)."""
        self._f.close()
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write {self.path!r}: {exc.strerror or exc}") from exc

    def discard(self) -> None:
        """Close and remove the temporary file; ``path`` keeps what it held."""
        self._f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
