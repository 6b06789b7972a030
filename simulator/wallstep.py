"""A process's wall clock stepped and slewed from outside, as NTP does it.

``simulator/wallstep.c``, built here with the C compiler and preloaded into
a process (``env()``), adds an offset to that process's CLOCK_REALTIME and
leaves its monotonic clock alone, as an NTP step or slew does.  ``set()``
writes the offset to the file the library reads (at most every 100 ms).
The soak (simulator/soak.py) runs ``cabguard run`` under it to check that a
clock step from NTP raises no alarm and leaves sane wall times in the
journal (docs/runtime.md, "Field faults").
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from drivers.atomicfile import write_atomic
from simulator.errors import SimError

SOURCE = Path(__file__).with_name("wallstep.c")


class WallStep:
    """The wall clock offset of the processes started with ``env()``."""

    def __init__(self, workdir: Path):
        self.library = workdir / "wallstep.so"
        self.file = workdir / "wallstep.offset"
        self.offset_s = 0.0

    def build(self) -> "WallStep":
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SimError("no C compiler to build {} (apt-get install gcc; `make setup` does)".format(SOURCE))
        done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(self.library), str(SOURCE), "-ldl"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SimError("cannot build {}:\n{}".format(SOURCE, done.stderr))
        self.set(0.0)
        return self

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the library preloaded."""
        env = dict(os.environ if base is None else base)
        env["LD_PRELOAD"] = " ".join(p for p in (str(self.library), env.get("LD_PRELOAD", "")) if p)
        env["CABGUARD_WALLSTEP_FILE"] = str(self.file)
        return env

    def set(self, offset_s: float) -> None:
        """From now on (within 100 ms) the wall clock reads ``offset_s`` ahead of the real one."""
        self.offset_s = offset_s
        write_atomic(self.file, "{:.6f}\n".format(offset_s).encode())
