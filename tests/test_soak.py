"""The real gateway against the real simulator, for longer than a demo: a quiet,
living cabinet, the shipped packs and model, restarts past the two-minute mark
and every harmless field fault (docs/runtime.md).  Nothing may alarm.

The full figures (10 minutes, disarmed and armed) are in `make bench`; this is
the short run that keeps the start-up false alarm from coming back."""

import io
import os
import signal
import subprocess
import sys

import pytest

from simulator.soak import FIRST_RESTARTS_S, field_faults, gateway_pids, run_soak
from tests.waiting import wait_until

# A parent that forks its child from a second thread, as the gateway restarts its
# uplink process from the uplink-inbox thread, and prints the child's pid.
THREAD_FORK = """
import subprocess, sys, threading, time
def fork():
    print(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid, flush=True)
    time.sleep(60)    # a child is listed under its forking thread while that thread lives
threading.Thread(target=fork, daemon=True).start()
time.sleep(60)
"""


def test_gateway_pids_finds_a_child_forked_by_another_thread():
    parent = subprocess.Popen([sys.executable, "-c", THREAD_FORK], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert wait_until(lambda: child in gateway_pids(parent), timeout=30)
        assert gateway_pids(parent)[0] == parent.pid
    finally:
        os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait(10)


@pytest.mark.long
def test_a_quiet_cabinet_stays_quiet_through_restarts_and_field_faults(tmp_path):
    out = io.StringIO()
    report = run_soak(3.2, workdir=tmp_path / "soak", out=out)
    report.print(out)
    text = out.getvalue()
    assert report.restarts == len(FIRST_RESTARTS_S) and min(FIRST_RESTARTS_S) > 120, text
    kinds = {f.name.split(" (")[0] for f in field_faults(__import__("random").Random(0))}
    assert all(any(k in f for f in report.faults) for k in kinds), text
    assert report.records > 20, text          # the journal is there and was read
    assert report.alarms == [], text
    assert report.journal_problems == [], text    # wall times sane through the clock step
