"""Helper processes of the gateway (the uplink, the OPC UA server): started
fresh, talked to over one socket pair, ended within a bound."""

from __future__ import annotations

import socket
import subprocess
import sys
from multiprocessing.connection import Connection


def spawn(module: str) -> tuple[subprocess.Popen, Connection]:
    """A fresh interpreter (not a fork: the gateway's threads hold locks a fork
    would copy) running ``python -m module FD``, and our end of the socket pair."""
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen([sys.executable, "-m", module, str(theirs.fileno())],
                                   pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    return process, Connection(ours.detach())


def reap(process: subprocess.Popen | None, timeout_s: float) -> None:
    """Wait for a child told to stop; kill it if it has not ended within ``timeout_s``."""
    if process is None:
        return
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
