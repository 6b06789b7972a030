"""What ``cabguard eval --check`` lists of a scenario besides its visits
(docs/scenarios.md, "Errors"): the local weekdays it spans, every discrete
event its scripted actions cause on each cabinet (door, bolt, tamper
switch, commands, modules, cuts and faults, booked windows), and each
incident's window, in local time and as offsets from the start, so an
author checks a sign-in against the entry delay or an ``end`` against a
bolt without arithmetic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.core.events import COMMAND_NAMES
from simulator.scenario import Scenario, gateway_downs
from simulator.sensors import CMD, DUMMIES, FORCE, FREEZE, MODULES, RELEASE, SERIAL, SET, WINDOW
from simulator.world import CabinetWorld

_SWITCHES = {"io.door_bolt": ("bolt released", "bolt engaged"), "io.door_open": ("door closes", "door opens"),
             "io.tamper": ("tamper switch 0", "tamper switch 1")}


def local(scn: Scenario, ms: int) -> str:
    """``Mon 2026-05-18T08:00:00+02:00 (+0h00m00s)``: the weekday, local time and offset."""
    t = scn.start + dt.timedelta(milliseconds=ms)
    s = ms // 1000
    return "{} {} (+{}h{:02d}m{:02d}s)".format(t.strftime("%a"), t.isoformat(timespec="seconds"),
                                              s // 3600, s // 60 % 60, s % 60)


def span(scn: Scenario) -> str:
    return "  local time: from {} to {}; entry delay {:g} s".format(
        local(scn, 0), local(scn, scn.duration_ms), scn.core.get("entry_delay_ms", 30000) / 1000)


def scripted(scn: Scenario) -> list[str]:
    """Each cabinet's scripted discrete events in time order, then the incidents."""
    lines = []
    # The world without its port life (cameras kept: their actions need them), and
    # without actions, to tell the actions' events from the start's.
    kept = [p for p in scn.processes if p.kind == "cameras"]
    quiet = dataclasses.replace(scn, processes=kept)
    for cab in scn.cabinets:
        base = len(CabinetWorld(dataclasses.replace(quiet, actions=[]), cab).events)
        events = [(t, _event(op, a, b)) for t, seq, op, a, b in sorted(CabinetWorld(quiet, cab).events) if seq > base]
        events += [(down, "gateway stops, starts again {}".format(
            "at " + local(scn, up) if up <= scn.duration_ms else "after the end")) for down, up in gateway_downs(scn, cab.id)]
        events += [(a.at_ms, _responder(scn, a.at_ms, a.params)) for a in scn.actions
                   if cab.id in a.cabinets and a.kind == "responder"]
        lines += ["  {} {} {}".format(cab.id, local(scn, t), what) for t, what in sorted(events, key=lambda e: e[0]) if what]
    for inc in scn.incidents:
        lines.append("  {} incident {}: start {}, end {}, detections count to {} (grace)".format(
            inc.cabinet, inc.kind, local(scn, inc.start_ms), local(scn, inc.end_ms),
            local(scn, min(inc.end_ms + scn.grace_ms, scn.duration_ms))))
    return lines


def _responder(scn: Scenario, at: int, p: dict) -> str:
    until = "the end" if not p["duration"] else local(scn, at + p["duration"])
    return "responder takes over until {}".format(until)


def _event(op: int, a: object, b: object) -> str:
    if op == SET and a in _SWITCHES:
        return _SWITCHES[a][1 if b else 0]
    if op == CMD:
        return "command {}{}".format(COMMAND_NAMES[a], " ({} s)".format(b // 1000) if b else "")
    if op == MODULES:
        return "{}.modules {:+d}".format(a, b)
    if op == DUMMIES:
        return "{}: {:+d} of them dummies".format(a, b)
    if op == SERIAL:
        return "{}.serial {}".format(a, b)
    if op == FORCE:
        return "{} {}".format(a, "stuck" if b is FREEZE else "reads {}".format(b))
    if op == RELEASE:
        return "{} reads true again".format(a)
    if op == WINDOW:
        return "{} window {}".format(a, "opens" if b > 0 else "closes")
    return ""
