"""Flashing figures: flash.sh into a directory with cached wheels, and the whole HIL suite.

Runs from a checkout (flash.sh and hil_tests/ live there, not in the wheel).
The first flash fills the wheel cache if it is empty and is not counted; the
measured flash goes into a fresh, empty directory.  The HIL suite runs as
pytest would in `make hil`; the siren latencies it measured come back
through HIL_FIGURES.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.devtools.bench import Figure
from controller.errors import CabguardError

REPO = Path(__file__).resolve().parents[3]


def _flash(tmp: Path, name: str) -> float:
    root = tmp / name
    root.mkdir()
    site = tmp / "site.toml"
    site.write_text((REPO / "hil_tests/site.toml.in").read_text().replace("@BUS@", "/dev/ttyUSB0")
                    .replace("@BAUD@", "115200").replace("@CONSOLE@", "/dev/ttyAMA0")
                    .replace("@BROKER@", "127.0.0.1:1883"))
    t0 = time.monotonic()
    done = subprocess.run([str(REPO / "flash.sh"), "--config", str(site), "--gateway", "gw-hil",
                           "--site", "hil-bench", "--technician", "ana", "--in-place",
                           "--keys-out", str(tmp / "keys"), str(root)], capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if done.returncode:
        raise CabguardError("flash.sh failed:\n" + done.stderr[-2000:])
    return elapsed


def _hil(tmp: Path) -> tuple[float, list[Figure]]:
    figures_file = tmp / "hil-figures.jsonl"
    env = dict(os.environ, HIL_FIGURES=str(figures_file))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "hil_tests"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if done.returncode:
        raise CabguardError("the HIL suite failed:\n" + done.stdout[-3000:])
    measured = []
    if figures_file.exists():
        for line in figures_file.read_text().splitlines():
            f = json.loads(line)
            measured.append(Figure("HIL: " + f["name"], f["value"], f["unit"], f["target"]))
    return elapsed, measured


def run() -> list[Figure]:
    if not (REPO / "flash.sh").exists() or not (REPO / "hil_tests").is_dir():
        raise CabguardError("the flash bench runs from a cabguard checkout (flash.sh, hil_tests/)")
    with tempfile.TemporaryDirectory(prefix="cabguard-bench-flash-") as d:
        tmp = Path(d)
        _flash(tmp, "warm-up")
        flash_s = _flash(tmp, "root")
        hil_s, measured = _hil(tmp)
    return [Figure("flash.sh into a directory, wheels cached", flash_s, "s", "<= 60",
                   "venv built in place from the bundled wheels"),
            Figure("whole HIL suite (flash + 6 cases + idempotency)", hil_s, "s", "<= 300")] + measured
