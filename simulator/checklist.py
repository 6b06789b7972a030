"""What ``cabguard eval --check`` lists of a scenario besides its visits
(docs/scenarios.md, "Errors"): the local weekdays it spans, every discrete
event its scripted actions cause on each cabinet (door, bolt, tamper
switch, commands, modules, cuts and faults, booked windows), each ongoing
act with its end (a ramp, a lift, a tow, a jammer, a weather front), and
each incident's window, in local time and as offsets from the start, so an
author checks a sign-in against the entry delay or an ``end`` against a
bolt without arithmetic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.core.events import COMMAND_NAMES
from simulator.gnss import CARRY_ACCEL_MPS2
from simulator.scenario import FOR_EVER, Item, Scenario, gateway_downs
from simulator.sensors import CMD, DUMMIES, FORCE, FREEZE, MODULES, RELEASE, SERIAL, SET, WINDOW
from simulator.world import CabinetWorld

_SWITCHES = {"io.door_bolt": ("bolt released", "bolt engaged"), "io.door_open": ("door closes", "door opens"),
             "io.tamper": ("tamper switch 0", "tamper switch 1")}
# A switch written with the value it already has (a door_close's bolt after a
# door_forced, which never moved it): said, so nobody reads a release into it.
_ALREADY = {"io.door_bolt": ("already released", "already engaged"), "io.door_open": ("already closed", "already open"),
            "io.tamper": ("already 0", "already 1")}


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
        before = _switch_history(CabinetWorld(scn, cab).events)
        events = [(t, _event(op, a, b) + _unchanged(before, t, op, a, b))
                  for t, seq, op, a, b in sorted(CabinetWorld(quiet, cab).events) if seq > base]
        events += [(a.at_ms, _ongoing(scn, a)) for a in scn.actions if cab.id in a.cabinets and a.kind in _ONGOING]
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


def _switch_history(events: list) -> dict[str, list[tuple[int, object]]]:
    """Each switch's writes ``(t, value)`` in the whole world (visits included), in time order."""
    out: dict[str, list[tuple[int, object]]] = {}
    for t, _seq, op, a, b in sorted(events):
        if op == SET and a in _SWITCHES:
            out.setdefault(str(a), []).append((t, b))
    return out


def _unchanged(before: dict[str, list[tuple[int, object]]], t: int, op: int, a: object, b: object) -> str:
    """`` (already engaged)`` when a switch is written at ``t`` with the value it read just before."""
    if op != SET or a not in _SWITCHES:
        return ""
    earlier = [v for when, v in before.get(str(a), ()) if when < t]
    return " ({})".format(_ALREADY[a][1 if b else 0]) if earlier and bool(earlier[-1]) == bool(b) else ""


def _until(scn: Scenario, ms: int | None) -> str:
    """An ongoing act's end: its local time, or that it lasts to the scenario's end."""
    if ms is None or ms > scn.duration_ms:
        return "the end (for good)" if ms is None else "{} (after the end)".format(local(scn, ms))
    return local(scn, ms)


def _hill(scn: Scenario, a: Item, rise: int, hold: int, back: int, moves: str) -> str:
    """A rise over ``rise``, held ``hold`` (FOR_EVER: for good), back over ``back``."""
    text = "{} until {}, held ".format(moves, _until(scn, a.at_ms + rise))
    if hold == FOR_EVER:
        return text + "to the end (for good)"
    return text + "until {}, back by {}".format(_until(scn, a.at_ms + rise + hold), _until(scn, a.at_ms + rise + hold + back))


def _lasting(scn: Scenario, a: Item, duration: int) -> str:
    """``until …`` for a ``duration``, or ``for good`` for ``""``."""
    return "until " + _until(scn, a.at_ms + duration if duration > 0 else None)


def _ongoing(scn: Scenario, a: Item) -> str:
    """One line for an act that goes on: what it is and when it ends."""
    p = a.params
    if a.kind == "lift":
        return "lift: " + ("set down at " + _until(scn, a.at_ms + p["duration"]) if p["set_down"]
                           else "carried off, never set down (for good)")
    if a.kind == "tow":
        return "tow: hitched, rolling from here on (for good)"
    if a.kind == "glitch":
        return "glitch: {} reads {} once".format(p["signal"], p["value"])
    if a.kind == "carry":
        return "carry: {:g} m at up to {:g} m/s, there at {}".format(
            p["distance_m"], p["speed_mps"], _until(scn, a.at_ms + _carry_ms(p["distance_m"], p["speed_mps"])))
    if a.kind == "camera_event":
        return "camera {} sees {} {}".format(p["camera"], p["event"], _lasting(scn, a, max(p["duration"], 0))
                                             if p["duration"] != FOR_EVER else "until the end (for good)")
    if a.kind in ("thermal_ramp", "cell_imbalance"):
        back = p["cool"] if a.kind == "thermal_ramp" else p["back"]
        moves = "{} {}: {}".format(a.kind, p["battery"], "heats" if a.kind == "thermal_ramp" else "spread widens")
        return _hill(scn, a, p["duration"], p["hold"], back, moves)
    if a.kind == "weather_front":
        return _hill(scn, a, p["ramp"], p["hold"], p["back"], "weather_front: outdoors moves {:+g} °C".format(p["delta_c"]))
    if a.kind == "hot_cell":
        return "hot_cell {}: heats with the current (tau {:g} s) {}".format(
            p["battery"], p["tau"] / 1000, _lasting(scn, a, p["duration"]))
    if a.kind == "sensor_drift":
        return "sensor_drift {}: drifts until {}, stays off (for good)".format(p["signal"], _until(scn, a.at_ms + p["duration"]))
    what = {"vibration": "vibration", "tilt": "tilt {:g}°".format(p.get("deg", 0)), "gnss_jam": "gnss_jam",
            "loose_connector": "loose_connector {}".format(p.get("device")),
            "sensor_offset": "sensor_offset {}".format(p.get("signal"))}[a.kind]
    return "{} {}".format(what, _lasting(scn, a, p["duration"]))


def _carry_ms(distance: float, speed: float) -> int:
    """How long a ``carry`` takes: up to ``speed`` at the receiver model's acceleration, then steady."""
    accel = CARRY_ACCEL_MPS2
    if distance <= speed * speed / (2 * accel):
        return int(1000 * (2 * distance / accel) ** 0.5)
    return int(1000 * (speed / accel + (distance - speed * speed / (2 * accel)) / speed))


# The acts that go on, listed with their end ("Errors" in docs/scenarios.md).
_ONGOING = ("vibration", "tilt", "lift", "tow", "thermal_ramp", "cell_imbalance", "hot_cell", "weather_front",
            "glitch", "gnss_jam", "carry", "camera_event", "sensor_drift", "sensor_offset", "loose_connector")


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
