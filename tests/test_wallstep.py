"""An NTP step as a gateway sees it: the wall clock of a real process moves
(simulator/wallstep.c, preloaded), its monotonic clock and its sleeps do not,
and drivers/clock.py's ``stepped_ms`` names each step, never a slew."""

import subprocess
import sys
import time

from simulator.wallstep import WallStep

WATCHER = """
import time
from drivers.clock import Clock
clock = Clock()
clock.stepped_ms()
m0 = time.monotonic()
print("ready", flush=True)
for _ in range(40):
    time.sleep(0.1)
    step = clock.stepped_ms()
    if step:
        print(step, round(time.monotonic() - m0, 1), flush=True)
print("done", round(time.monotonic() - m0, 1), flush=True)
"""


def test_a_stepped_wall_clock_is_seen_as_a_step_and_a_slew_is_not(tmp_path):
    clock = WallStep(tmp_path).build()
    proc = subprocess.Popen([sys.executable, "-c", WATCHER], env=clock.env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    clock.set(45.0)                       # stepped forward
    time.sleep(1.0)
    for _ in range(5):                    # slewed: 0.4 ms a tenth of a second
        clock.set(clock.offset_s + 0.0004)
        time.sleep(0.1)
    clock.set(clock.offset_s - 20.0)      # and back
    out, _ = proc.communicate(timeout=30)
    lines = [line.split() for line in out.splitlines()]
    steps = [int(words[0]) for words in lines[:-1]]
    assert len(steps) == 2 and abs(steps[0] - 45_000) < 100 and abs(steps[1] + 20_000) < 100, out
    assert lines[-1][0] == "done" and 3.5 <= float(lines[-1][1]) < 30, out   # monotonic sleeps went on
