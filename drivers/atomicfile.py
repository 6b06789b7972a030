"""Files replaced whole or not at all: what a power cut may leave is the old
file or the new one, never half of either.

The data goes to ``NAME.tmp`` (created 0600, so a key or a secret is never
briefly readable by others), is fsync'd, renamed over ``NAME``, and the
folder is fsync'd so the rename itself survives the cut.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from drivers.errors import DriverError


class OutputFileError(DriverError):
    """A command's output that cannot be written where it was asked (names the path)."""


def fsync_dir(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``), crash-safely."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):     # never rename over /dev/null, a FIFO, a folder
            raise FileExistsError(errno.EEXIST, "exists and is not a regular file", str(path))
    except FileNotFoundError:
        pass
    try:
        os.unlink(tmp)                                   # a stale (or planted) NAME.tmp: start afresh
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if mode != 0o600:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_output(path: str | Path, data: bytes, what: str, mode: int = 0o600) -> None:
    """``write_atomic`` for a file a person asked a command to write: any
    failure is an ``OutputFileError`` that names the path and what to do."""
    try:
        write_atomic(path, data, mode)
    except OSError as e:
        raise OutputFileError("cannot write the {} {}: {}; give a path in a folder you can write to".format(
            what, path, e.strerror or e)) from None
