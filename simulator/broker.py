"""A private Mosquitto broker on loopback: the demo's head end, and the tests' and benches' broker."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from simulator.errors import SimError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_path() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not path:
        raise SimError("mosquitto is not installed: run `make setup` (it installs the Debian package)")
    return path


class Broker:
    """Mosquitto on 127.0.0.1:<port>; ``stop()``/``start()`` for outage tests."""

    def __init__(self, port: int | None = None, extra_conf: str = ""):
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cabguard-broker-"))
        # Started as root, mosquitto drops to its own user: let it save its sessions here.
        self.dir.chmod(0o777)
        self.conf = self.dir / "mosquitto.conf"
        # Persistent sessions, as a site broker must run (docs/uplink.md): a
        # receiver that reconnects gets what was published meanwhile.
        self.conf.write_text("listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             "persistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\n{}".format(
                                 self.port, self.dir, extra_conf))
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return "127.0.0.1:{}".format(self.port)

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([mosquitto_path(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise SimError("mosquitto exited at start (config {})".format(self.conf))
                time.sleep(0.02)
        raise SimError("mosquitto did not listen on port {}".format(self.port))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving or closing anything cleanly."""
        assert self.proc
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def save(self, timeout_s: float = 10.0) -> None:
        """SIGUSR1: write the persistence database now; returns once it is written."""
        assert self.proc
        db = self.dir / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime_ns != before:
                return
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not save {}".format(db))

    def pause(self) -> None:
        """SIGSTOP: the broker hangs without closing connections (a slow broker)."""
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
