"""What ``cabguard eval --check`` lists of a scenario besides its visits
(docs/scenarios.md, "Errors"): the local weekdays it spans, every discrete
event its scripted actions cause on each cabinet (door, bolt, tamper
switch, commands, modules, cuts and faults with the action behind them,
booked windows), each ongoing act with its end (a ramp, a lift, a tow, a
jammer, a weather front), each drawn visit's sign-in, and each incident's
window, in local time and as offsets from the start, so an author checks a
sign-in against the entry delay or an ``end`` against a bolt without
arithmetic.  It says what the listing alone would hide: a change that a
fault keeps from the gateway, a signal still forced by another fault when
one ends, and a drawn visit that meets a hand-scripted door.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.core.events import COMMAND_CODES, COMMAND_NAMES
from simulator.gnss import CARRY_ACCEL_MPS2
from simulator.scenario import FOR_EVER, HONEST_FAULTS, Cabinet, Item, Scenario, gateway_downs
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
    """Each cabinet's scripted discrete events in time order, its drawn visits' sign-ins and
    the drawn visits that meet a scripted door, then the incidents."""
    lines = []
    # The world without its port life (cameras kept: their actions need them), and
    # without actions, to tell the actions' events from the start's.
    kept = [p for p in scn.processes if p.kind == "cameras"]
    quiet = dataclasses.replace(scn, processes=kept)
    for cab in scn.cabinets:
        base = len(CabinetWorld(dataclasses.replace(quiet, actions=[]), cab).events)
        drawn = CabinetWorld(dataclasses.replace(scn, actions=[]), cab)      # the port life alone
        acts = [e for e in sorted(CabinetWorld(quiet, cab).events) if e[1] > base]
        # The whole world's switch writes, the port life's before the actions' at one instant, as it plans them.
        before = _switch_history([(t, (0, seq), op, a, b) for t, seq, op, a, b in drawn.events]
                                 + [(t, (1, seq), op, a, b) for t, seq, op, a, b in acts])
        events = _listed(scn, acts, _own_forces(quiet, cab, base), before)
        events += [(a.at_ms, _ongoing(scn, a)) for a in scn.actions if cab.id in a.cabinets and a.kind in _ONGOING]
        events += [(down, "gateway stops, starts again {}".format(
            "at " + local(scn, up) if up <= scn.duration_ms else "after the end")) for down, up in gateway_downs(scn, cab.id)]
        events += [(a.at_ms, _responder(scn, a.at_ms, a.params)) for a in scn.actions
                   if cab.id in a.cabinets and a.kind == "responder"]
        events += _sign_ins(scn, drawn)
        events += _visits_meeting_doors(scn, drawn.visits, acts)
        lines += ["  {} {} {}".format(cab.id, local(scn, t), what) for t, what in sorted(events, key=lambda e: e[0]) if what]
    for inc in scn.incidents:
        lines.append("  {} incident {}: start {}, end {}, detections count to {} (grace)".format(
            inc.cabinet, inc.kind, local(scn, inc.start_ms), local(scn, inc.end_ms),
            local(scn, min(inc.end_ms + scn.grace_ms, scn.duration_ms))))
    return lines


def _own_forces(quiet: Scenario, cab: Cabinet, base: int) -> list[tuple[int, int, object, object, Item]]:
    """Each scripted action's own forces and releases, ``(t, op, signal, value, action)``, in
    time order: as the action makes them, before the world combines the forces of one signal
    (the latest lasting wins), so the listing can say which action each one's end is."""
    forces = []
    for item in quiet.actions:
        if cab.id in item.cabinets:
            forces += [(t, op, a, b, item) for t, seq, op, a, b in sorted(
                CabinetWorld(dataclasses.replace(quiet, actions=[item]), cab).events)
                if seq > base and op in (FORCE, RELEASE)]
    return sorted(forces, key=lambda f: f[0])


# Each forced signal's forces that last, (start, the action forcing it), in the order they began.
Forces = dict[str, list[tuple[int, Item]]]


def _listed(scn: Scenario, acts: list, own_forces: list, before: dict) -> list[tuple[int, str]]:
    """The scripted events as lines.  A forced signal says which action forces it (and whether
    that is an honest fault); a signal forced by several stays forced until the last ends (the
    latest still lasting wins); a door, bolt, tamper switch, module count or serial that changes
    while its signal is forced, or its device offline, says the reading hides it.  At one
    instant, forces and releases come before the changes."""
    forces: Forces = {}
    steps = sorted([(t, 0, k) for k, (t, *_f) in enumerate(own_forces)]
                   + [(e[0], 1, k) for k, e in enumerate(acts) if e[2] not in (FORCE, RELEASE)])
    out = []
    for t, is_change, k in steps:
        if is_change:
            _t, _seq, op, a, b = acts[k]
            out.append((t, _event(op, a, b) + _unchanged(before, t, op, a, b) + _hidden(op, a, forces)))
            continue
        _t, op, signal, value, item = own_forces[k]
        if op == FORCE:
            forces.setdefault(str(signal), []).append((t, item))
            out.append((t, "{} {}".format(_event(op, signal, value), _by(item))))
        else:
            out.append((t, _released(scn, str(signal), item, forces)))
    return out


def _by(item: Item) -> str:
    """``(sensor_fault)``: the action forcing a signal; an honest fault says it is nobody's act."""
    return "({}{})".format(item.kind, ", honest" if item.kind in HONEST_FAULTS else "")


def _released(scn: Scenario, signal: str, item: Item, forces: Forces) -> str:
    """The end of one force on ``signal``: true again, or still forced by another that lasts."""
    lasting = forces.get(signal, [])
    mine = next((f for f in lasting if f[1] is item), None)
    if mine is not None:
        lasting.remove(mine)
    if not lasting:
        return "{} reads true again {}".format(signal, _by(item))
    since, other = lasting[-1]
    return "{} stays forced: the {} ends, the {} since {} still lasts".format(
        signal, item.kind, other.kind, local(scn, since))


# The events a reading can hide: what signal each shows on.
_SHOWN_ON = {SET: "{}", MODULES: "{}.modules", SERIAL: "{}.serial"}


def _hidden(op: int, a: object, forces: Forces) -> str:
    """`` (hidden: io.door_open stuck by a sensor_fault)`` when a fault hides the change from the gateway."""
    if op not in _SHOWN_ON or (op == SET and a not in _SWITCHES):
        return ""
    signal = _SHOWN_ON[op].format(a)
    device = signal.split(".")[0]
    if forces.get(signal):
        return " (hidden: {} forced by a {})".format(signal, forces[signal][-1][1].kind)
    if forces.get(device + ".online"):
        return " (hidden: {} offline by a {})".format(device, forces[device + ".online"][-1][1].kind)
    return ""


def _sign_ins(scn: Scenario, drawn: CabinetWorld) -> list[tuple[int, str]]:
    """Each drawn visit's sign-in (its ``maint_start`` or ``disarm``), with its lag after the
    unbolting, against the entry delay: a late one is refused if the cabinet was armed."""
    signs = [t for t, _seq, op, a, _b in sorted(drawn.events)
             if op == CMD and a in (COMMAND_CODES["maint_start"], COMMAND_CODES["disarm"])]
    entry = scn.core.get("entry_delay_ms", 30000)
    out = []
    for unbolted, _opened, _closed, _end, auth in sorted(drawn.visits):
        unbolted = unbolted // scn.scan_ms * scn.scan_ms      # on its scan, as the world plays it
        mine = [t for t in signs if t >= unbolted]
        if not mine:
            continue                      # past the scenario's end: not played
        t = mine[0]
        signs.remove(t)
        lag = t - unbolted
        late = ", later than the entry delay: refused if the cabinet was armed (ALARM)" if lag > entry else ""
        out.append((t, "a visit signs in ({}) {:g} s after its unbolting{}".format(
            "maint_start" if auth == "maint" else "disarm", lag / 1000, late)))
    return out


_CLASH = ("warning: a drawn visit (unbolted here, signed off {}) meets the hand-scripted door open or unbolted "
          "from {} to {}: the visit's door, bolt and sign-off act on it too; move one of them unless that is meant")


def _visits_meeting_doors(scn: Scenario, visits: list, acts: list) -> list[tuple[int, str]]:
    """A warning for each drawn visit that falls while a hand-scripted door is open or unbolted
    (one the scripted acts open and close again): the visit's door, bolt and sign-off act on that
    same door, so one of them is usually to move.  A door left open to the end (forced, never
    shut) is no clash: the first visit after it shuts it, as documented."""
    spans = _scripted_door_spans(acts)
    out = []
    for unbolted, _opened, _closed, end, _auth in sorted(visits):
        met = [(a, b) for a, b in spans if a <= end and unbolted <= b]
        if met and unbolted <= scn.duration_ms:
            a, b = met[0]
            out.append((unbolted, _CLASH.format(local(scn, end), local(scn, a), local(scn, b))))
    return out


def _scripted_door_spans(acts: list) -> list[tuple[int, int]]:
    """When the scripted acts alone have the door open or the bolt released, and then shut and
    bolt it again: ``(from, to)``."""
    state = {"io.door_open": 0, "io.door_bolt": 1}
    spans, since = [], None
    for t, _seq, op, a, b in acts:
        if op != SET or a not in state:
            continue
        state[str(a)] = 1 if b else 0
        touched = state["io.door_open"] == 1 or state["io.door_bolt"] == 0
        if touched and since is None:
            since = t
        elif not touched and since is not None:
            spans.append((since, t))
            since = None
    return spans


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
