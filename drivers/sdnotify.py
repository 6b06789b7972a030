"""systemd's notify protocol: READY, WATCHDOG and STATUS over a datagram socket.

A few lines, no dependency.  Outside systemd (no ``NOTIFY_SOCKET``) every
call is a no-op, so the gateway runs the same from a shell.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace socket
            addr = "\0" + addr[1:]
        self.addr = addr or None
        self.sock: socket.socket | None = None
        if self.addr:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at half the watchdog interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = int(usec) / 2e6 if wanted else None

    def send(self, *lines: str) -> bool:
        if self.sock is None or self.addr is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode(), self.addr)
            return True
        except OSError:
            return False  # systemd gone (shutdown): nothing useful to do

    def ready(self, status: str) -> bool:
        return self.send("READY=1", "STATUS=" + status)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + text)

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
