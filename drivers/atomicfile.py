"""Files replaced whole or not at all: what a power cut may leave is the old
file or the new one, never half of either.

The data goes to ``NAME.tmp`` (created 0600, so a key or a secret is never
briefly readable by others), is fsync'd, renamed over ``NAME``, and the
folder is fsync'd so the rename itself survives the cut.
"""

from __future__ import annotations

import os
from pathlib import Path


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if mode != 0o600:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)
