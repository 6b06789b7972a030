"""One holder at a time: an exclusive ``flock`` on a file that holds the holder's PID.

The kernel lets go when the holder's process ends, even after a SIGKILL, so a
crash never leaves a stale lock; a refused second holder learns the first's PID
to name it in its message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from drivers.errors import LockHeld


def hold(path: Path, mode: int = 0o600) -> int:
    """Take the lock at ``path``; returns its file descriptor (keep it open to keep the lock).
    LockHeld names the holder's PID; OSError if the file cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, "{}\n".format(os.getpid()).encode(), 0)
    return fd
