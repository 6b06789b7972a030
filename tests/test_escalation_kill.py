"""An escalation survives SIGKILL: a real gateway killed mid-plan resumes it on restart.

tests/kill_escalation.py runs the gateway (plan: siren and lights at once,
camera after 2 s, lock after 8 s), kills it with SIGKILL after the camera
step, or after an acknowledgement, and restarts it from the same folder.
Both runs go side by side (about 15 s together).
"""

import subprocess
import sys
from pathlib import Path

from tests.kill_escalation import CAMERA_S, LOCK_S

ROOT = Path(__file__).resolve().parent.parent
SCAN_MS = 50


def parse(out: str) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """The restart's ``resumed`` / ``final`` lines, and the journal's (what, wall ms) in order."""
    state, journal = {}, []
    for line in out.splitlines():
        words = line.split()
        if words[0] in ("resumed", "final"):
            state[words[0]] = " ".join(words[1:])
        else:
            journal.append((" ".join(words[:-1]), int(words[-1])))
    return state, journal


def test_a_kill_mid_plan_keeps_steps_taken_and_fires_the_rest_at_their_times(tmp_path):
    runs = {how: subprocess.Popen([sys.executable, "-m", "tests.kill_escalation", str(tmp_path / how), how],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for how in ("mid", "acked")}
    outs = {}
    for how, proc in runs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        outs[how] = parse(out)

    state, journal = outs["mid"]
    assert state == {"resumed": "alarm lights 1", "final": "alarm lock 1"}    # the lights at once, no scan needed
    kinds = [what for what, _ in journal]
    assert kinds == ["started", "alarm", "escalation camera taken", "started", "escalation lock taken"]
    wall = dict((what, ms) for what, ms in journal)
    alarm, camera, lock = wall["alarm"], wall["escalation camera taken"], wall["escalation lock taken"]
    restarted = [ms for what, ms in journal if what == "started"][1]
    assert camera >= alarm + CAMERA_S * 1000 - SCAN_MS
    # the lock at the alarm's 8 s, not at the restart's (a plan begun again
    # would lock at restarted + 8 s, and the restart came 3 s after the alarm)
    assert alarm + LOCK_S * 1000 - SCAN_MS <= lock < restarted + (LOCK_S - 1) * 1000

    state, journal = outs["acked"]
    assert state == {"resumed": "disarmed lights 0", "final": "disarmed lock 0"}
    assert [what for what, _ in journal] == ["started", "alarm", "escalation camera cancelled",
                                            "escalation lock cancelled", "started"]
