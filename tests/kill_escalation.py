"""Kill a real gateway in the middle of an escalation plan; restart it; print what the journal says.

Usage: python -m tests.kill_escalation DIR mid|acked

The gateway (tests/kill_gateway.py's: keys, a missing bus port, a signed
one-rule table) runs the plan ``alarm.armed``: siren and lights at once, the
camera preset after CAMERA_S, the lock after LOCK_S.  The rule raises the
alarm as soon as the cabinet is armed (its exit delay is 1 s) and never
while it is not, so a restart brings no new alarm of its own.

A forked victim starts the gateway's loop, arms it and waits for the alarm,
then

- ``mid``: waits for the camera step to be on disk and a second more, and
  is killed (SIGKILL): the lock is still pending;
- ``acked``: acknowledges the alarm, waits for that on disk, and is killed.

A second fork restarts the gateway from the same folder and runs it until
LOCK_S + 2 s after the alarm.  Output, one ``key value`` per line:
``resumed MODE lights L`` (the restarted core before its first scan),
``final MODE lock L``, then every ``started``, ``alarm`` and escalation
record of the journal with its wall time in ms (``escalation STEP taken|cancelled``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import cbor2

from controller.core import modes
from controller.core.escalation import STEP_CAMERA, STEP_NAMES
from controller.core.events import CMD_ACK, CMD_ARM, EV_ESCALATION, EV_MODE
from controller.core.outputs import OUT_LIGHTS
from controller.gateway.run import build
from controller.journal import records as R
from controller.journal.segments import iter_frames, list_segments
from drivers import cose
from tests import kill_gateway

CAMERA_S = 2
LOCK_S = 8
RULE = ('[[rule]]\nid = "armed_at_all"\nwhen = "mode(\'armed\') and sys.disk_free_pct <= 100"\n'
        'severity = "alarm"\n')
PLAN = ('\n[escalation.alarm]\narmed = [{{ do = "siren" }}, {{ do = "lights" }}, '
        '{{ do = "camera", after_s = {} }}, {{ do = "lock", after_s = {} }}]\n').format(CAMERA_S, LOCK_S)


def wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        time.sleep(0.01)


def run_in_thread(site: Path):
    services = build(str(site))
    gw = services.gateway
    threading.Thread(target=gw.run, daemon=True).start()
    return services, gw


def victim(site: Path, how: str) -> None:
    _services, gw = run_in_thread(site)
    gw.submit(CMD_ARM, 0, "console", "test")
    wait(lambda: gw.state.mode == modes.ALARM)
    if how == "mid":
        wait(lambda: gw.state.escalation.taken(STEP_CAMERA))
        assert gw.journal.flush(10)
        time.sleep(1.0)
    else:
        assert gw.submit(CMD_ACK, 0, "console", "test").outcome.result(10) == "ok"
        assert gw.journal.flush(10)
    os.kill(os.getpid(), signal.SIGKILL)


def restart(site: Path, alarm_wall_ms: int) -> None:
    services = build(str(site))
    gw = services.gateway
    print("resumed {} lights {}".format(modes.MODE_NAMES[gw.state.mode], gw.state.outputs[OUT_LIGHTS]), flush=True)
    threading.Thread(target=gw.run, daemon=True).start()
    wait(lambda: time.time() * 1000 > alarm_wall_ms + (LOCK_S + 2) * 1000, LOCK_S + 30)
    gw.stop_event.set()
    time.sleep(0.2)
    print("final {} lock {}".format(modes.MODE_NAMES[gw.state.mode], gw.state.lock), flush=True)
    services.stop("checked")


def journal_lines(journal: Path) -> list[str]:
    out = []
    for _number, path in list_segments(journal):
        for item in iter_frames(path.read_bytes()):
            if not isinstance(item, tuple):
                continue
            rec = cbor2.loads(cose.decode(item[1]).body)
            rtype, data, wall = rec.get(R.TYPE), rec.get(R.DATA, {}), rec.get(R.WALL_MS)
            if rtype == R.HEALTH and data.get(R.HEALTH_CODE) == R.HEALTH_STARTED:
                out.append("started {}".format(wall))
            elif rtype == EV_MODE and data.get(R.EVENT_B) == modes.ALARM:
                out.append("alarm {}".format(wall))
            elif rtype == EV_ESCALATION:
                out.append("escalation {} {} {}".format(STEP_NAMES[data[R.EVENT_A]],
                                                       "taken" if data[R.EVENT_C] else "cancelled", wall))
    return out


def main(argv: list[str]) -> None:
    root, how = Path(argv[0]), argv[1]
    template = root / "template"
    template.mkdir(parents=True)
    kill_gateway.prepare_template(template, RULE)
    site = kill_gateway.fresh_trial(template, root / how)
    site.write_text(site.read_text() + PLAN)
    status, _out = kill_gateway.in_child(victim, site, how)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        raise SystemExit("the victim was not killed (status {})".format(status))
    before = journal_lines(root / how / "journal")
    alarm = int(next(line for line in before if line.startswith("alarm")).split()[1])
    status, out = kill_gateway.in_child(restart, site, alarm)
    if status != 0:
        raise SystemExit("the restart failed (status {}): {}".format(status, out))
    print(out.strip())
    print("\n".join(journal_lines(root / how / "journal")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
