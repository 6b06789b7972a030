"""SIGKILL reliability: kill a writing process at random moments, again and again.

After every kill: every record reported durable is present, the chain
verifies, no sequence number appears twice.  ``make test`` runs
CABGUARD_KILLS (default 40) kills; the full 200-kill run is
``CABGUARD_KILLS=200 .venv/bin/python -m pytest tests/test_journal_kill.py``.
"""

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.journal.verify import verify_dir
from tests.journaling import kill_rounds

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("CABGUARD_KILLS", "40"))
KILLS_PER_JOURNAL = 20
READY_TIMEOUT_S = 60        # opening a journal (recovering a torn tail) takes well under a second


def _run_and_kill(tmp: Path, rng: random.Random) -> int:
    """Start the writer, kill it with SIGKILL at a random moment; the highest durable seq it reported."""
    child = subprocess.Popen([sys.executable, "-m", "tests.kill_writer", str(tmp)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    early = _until_ready(child)
    time.sleep(rng.uniform(0.0, 0.12))
    child.send_signal(signal.SIGKILL)
    out, _err = child.communicate()
    durable = [int(line.split()[1]) for line in (early + out).decode().splitlines() if line.startswith("durable ")]
    return max(durable, default=-1)


def _until_ready(child: subprocess.Popen) -> bytes:
    """What the writer printed besides ``ready`` until it was ready: a fresh journal may
    report its first records durable while it opens, before ``ready``."""
    assert child.stdout is not None and child.stderr is not None
    fd, got = child.stdout.fileno(), b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while b"ready\n" not in got:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            child.send_signal(signal.SIGUSR1)        # its threads' stacks, then stop it
            time.sleep(1)
            child.kill()
            pytest.fail("the writer did not open the journal in {} s; its stacks:\n{}".format(
                READY_TIMEOUT_S, child.communicate()[1].decode(errors="replace")))
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail("the writer died before it was ready:\n" + child.communicate()[1].decode(errors="replace"))
        got += chunk
    before, _, after = got.partition(b"ready\n")
    return before + after


@pytest.mark.long
def test_sigkill_at_random_moments_loses_nothing_durable(tmp_path):
    rng = random.Random(5)
    written = 0
    best = -1
    for kill, tmp, prov, fresh in kill_rounds(tmp_path, KILLS, KILLS_PER_JOURNAL):
        best = max(-1 if fresh else best, _run_and_kill(tmp, rng))
        report = verify_dir(tmp / "journal", prov)
        assert report.ok, (kill, report.problems[:5])
        # A writer killed before its genesis reached the disk leaves nothing, and reported nothing durable.
        last = -1 if report.last_seq is None else report.last_seq
        assert last >= best, (kill, report.last_seq, best)
        assert report.records == last + 1                # 0..last, each once
        written += max(best, 0)
    assert written > KILLS * 100                         # the writers really wrote
