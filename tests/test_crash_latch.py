"""A latched alarm stays latched across a kill at any point between the alarm and its state.

tests/kill_gateway.py kills a real gateway (slow fsyncs simulated) before
each disk operation from the alarm's scan on, and at random moments, then
restarts it.  Whenever the alarm's record is in the journal, the restart
must come back in ALARM.  ``make test`` runs CABGUARD_LATCH_KILLS (default
20) random kills; the full figure (docs/runtime.md) is
``CABGUARD_LATCH_KILLS=1000 .venv/bin/python -m pytest tests/test_crash_latch.py``
(about 5 minutes), or ``python -m tests.kill_gateway DIR random 1000 7``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("CABGUARD_LATCH_KILLS", "20"))


def run_trials(tmp_path: Path, *args: str) -> tuple[int, list[tuple[str, bool, str]]]:
    """The dry run's operation count and each trial's (kill point, alarm in journal, restart mode)."""
    done = subprocess.run([sys.executable, "-m", "tests.kill_gateway", str(tmp_path / "k"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    ops = int(lines[0].split()[2])
    trials = []
    for line in lines[1:]:
        _t, _k, _kill, where, _j, alarm, _r, mode = line.split()
        trials.append((where, alarm == "1", mode))
    return ops, trials


def test_a_kill_before_any_disk_operation_never_unlatches_the_alarm(tmp_path):
    ops, trials = run_trials(tmp_path, "points")
    assert ops >= 2 and len(trials) == ops                 # the state write and the record write at least
    unlatched = [t for t in trials if t[1] and t[2] != "alarm"]
    assert unlatched == []
    assert any(alarm for _w, alarm, _m in trials)           # some kills left the alarm in the journal


@pytest.mark.timeout(60 + KILLS)    # about 0.3 s a kill
def test_kills_at_random_moments_with_slow_fsync_never_unlatch_the_alarm(tmp_path):
    _ops, trials = run_trials(tmp_path, "random", str(KILLS), "7")
    in_journal = [t for t in trials if t[1]]
    unlatched = [t for t in in_journal if t[2] != "alarm"]
    print("{} kills, {} with the alarm in the journal, {} restarts not in alarm".format(
        len(trials), len(in_journal), len(unlatched)))
    assert len(trials) == KILLS and unlatched == []
