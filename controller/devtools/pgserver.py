"""A private PostgreSQL for the tests and benches: its own data folder and
port on loopback, started with Debian's server binaries (``make setup``
installs the ``postgresql`` package).  Run as root, initdb and the server
run as the ``postgres`` user the package creates, since PostgreSQL refuses
to run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from controller.errors import CabguardError
from simulator.broker import free_port

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin(name: str) -> str:
    for d in BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise CabguardError("PostgreSQL's {} is not installed: run `make setup` (it installs Debian's "
                            "postgresql package)".format(name))
    return found


class PgServer:
    """``start()`` → ``url`` (database ``cabguard``) → ``cleanup()``; ``new_database()`` for a fresh one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cabguard-pg-"))
        self.data = self.dir / "data"
        self.user: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.count = 0

    def _run(self, argv: list[str]) -> None:
        user = ["runuser", "-u", self.user.pw_name, "--"] if self.user else []
        done = subprocess.run(user + argv, capture_output=True, text=True, cwd=self.dir)
        if done.returncode != 0:
            raise CabguardError("{} failed ({}): {}".format(" ".join(argv[:2]), done.returncode,
                                                           (done.stderr or done.stdout).strip()[-800:]))

    def start(self) -> "PgServer":
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run([pg_bin("initdb"), "-D", str(self.data), "-U", "cabguard", "-A", "trust", "--no-sync",
                   "-E", "UTF8", "--locale=C"])
        # A test server: no fsync (its data folder is thrown away), sockets in its own folder.
        opts = "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200".format(
            self.port, self.dir)
        self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w",
                   "-t", "60", "start"])
        self._run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "cabguard", "cabguard"])
        return self

    @property
    def url(self) -> str:
        return self.url_of("cabguard")

    def url_of(self, database: str) -> str:
        return "postgresql://cabguard@127.0.0.1:{}/{}".format(self.port, database)

    def new_database(self) -> str:
        """The URL of a new, empty database (one per test)."""
        import psycopg     # the `headend` extra
        self.count += 1
        name = "t{}_{}".format(int(time.time() * 1000) % 10**9, self.count)
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute("CREATE DATABASE {}".format(name))
        return self.url_of(name)

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            except CabguardError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
