"""Scenario files (docs/scenarios.md): ``load(path)`` parses and validates a
TOML scenario and returns a ``Scenario`` (simulator/scenario.py).  tomllib
gives no line numbers, so every error locates the offending table or key
in the source text itself and names ``file:line``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from controller.core.step import CoreConfig
from drivers.modbus.profiles import BATTERY_SIGNALS, IO_SIGNALS
from drivers.safefile import InputFileError, parse_toml, read_text
from drivers.tomlsource import TomlSource
from simulator.errors import ScenarioError
from simulator.scenario import (
    ACTION_PARAMS, CABINET_PARAMS, COMMANDS, DAYS, INCIDENT_KINDS, MAINTENANCE_MIN_MS, MAX_DURATION_MS, POSITIVE_DURATIONS, PROCESS_PARAMS, SCAN_MS, SCHEDULE_NAME, SENSOR_FAILURES, SENSOR_FAULTS, SIGNED_PARAMS, FOR_EVER, FOR_EVER_KEYS, Cabinet, Incident, Item, Scenario, Schedule, parse_clock, parse_duration,
)
from simulator.senses import SENSE_TEXT_PARAMS, escalation_plans, sense_problem

class _Source(TomlSource):
    """The scenario text, to turn a (table, index, key) into a line number."""

    def at(self, table: str, index: int = 0, key: str | None = None) -> int:
        """The ``index``-th ``[[table]]`` (index -1: the ``[table]``), or its ``key``."""
        return self.nth_of(table, max(index, 0), key, array=index >= 0)

    def error(self, line: int, message: str) -> ScenarioError:
        return ScenarioError("{}:{}: {}".format(self.path, line, message))


def _aware(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value
    return None


FIRST_YEAR, LAST_YEAR = 1970, 2999


class _Loader:
    def __init__(self, path: str, text: str):
        self.src = _Source(path, text)
        try:
            self.doc = parse_toml(text, path, "scenario")
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError("{}: not valid TOML: {}".format(path, e)) from None
        except InputFileError as e:
            raise ScenarioError(str(e)) from None
        self.start: dt.datetime | None = None
        self.duration_ms = 0
        self.batteries: dict[str, int] = {}      # cabinet id -> its number of BMS units

    # -- times -----------------------------------------------------------
    def time(self, value: Any, line: int, what: str) -> int:
        """A timeline instant: an offset (``"+1h"``) or an aware datetime."""
        off = parse_duration(value)
        if off is None:
            when = _aware(value)
            if when is None:
                raise self.src.error(line, "{}: bad time {}: write an offset like \"+1h30m\" or an "
                                           "absolute time with a timezone like 2026-03-14T23:30:00+01:00"
                                     .format(what, _shown(value)))
            assert self.start is not None
            off = int((when - self.start).total_seconds() * 1000)
        if off < 0 or off > self.duration_ms:
            raise self.src.error(line, "{}: time {} is outside the scenario (0 to {} s after start)"
                                 .format(what, _shown(value), self.duration_ms // 1000))
        return off

    def duration(self, value: Any, line: int, what: str, allow_empty: bool = False) -> int:
        if allow_empty and value == "":
            return 0
        d = parse_duration(value)
        if d is None:
            raise self.src.error(line, "{}: bad duration {!r}: write it like \"90s\", \"4m\", \"1h30m\", \"2d\""
                                 .format(what, value))
        return d

    # -- sections --------------------------------------------------------
    def scenario(self, path: str) -> Scenario:
        doc = self.doc
        known = {"scenario", "core", "response", "cabinet", "schedule", "process", "action", "incident",
                 "escalation"}
        for key in doc:
            if key not in known:
                raise self.src.error(self._top_line(key), "unknown section [{}] (known: {})".format(
                    key, ", ".join(sorted(known))))
        head = self._table("scenario", required=True)
        line = self.src.at("scenario", -1)
        self._only(head, {"name", "description", "start", "duration", "seed", "scan_ms"}, "scenario", -1)
        for key in ("name", "start", "duration"):
            if key not in head:
                raise self.src.error(line, "[scenario] needs '{}'".format(key))
        self.start = _aware(head["start"])
        if self.start is None:
            raise self.src.error(self.src.at("scenario", -1, "start"),
                                 "[scenario] start: bad time {}: want an absolute time with a timezone, "
                                 "like 2026-03-14T22:00:00+01:00".format(_shown(head["start"])))
        if not FIRST_YEAR <= self.start.year <= LAST_YEAR:    # its weeks and days must be datetimes too
            raise self.src.error(self.src.at("scenario", -1, "start"),
                                 "[scenario] start: year {} is outside {} to {}".format(
                                     self.start.year, FIRST_YEAR, LAST_YEAR))
        self.duration_ms = self.duration(head["duration"], self.src.at("scenario", -1, "duration"),
                                         "[scenario] duration")
        if not 0 < self.duration_ms <= MAX_DURATION_MS:
            raise self.src.error(self.src.at("scenario", -1, "duration"),
                                 "[scenario] duration must be more than 0 and at most 62 days")
        scan_ms = self._int(head.get("scan_ms", SCAN_MS), ("scenario", -1, "scan_ms"), 10, 1000)
        if 1000 % scan_ms:
            # The I/O module reports at whole seconds: they must fall on scans.
            raise self.src.error(self.src.at("scenario", -1, "scan_ms"), "[scenario] scan_ms: must divide "
                                 "1000 (10, 20, 25, 40, 50, 100, 125, 200, 250, 500 or 1000), got {}".format(scan_ms))
        seed = self._int(head.get("seed", 0), ("scenario", -1, "seed"), 0, 2**31 - 1)
        core = self._core()
        try:
            plans = escalation_plans(doc.get("escalation"))   # simulator/senses.py
        except ValueError as e:
            raise self.src.error(self._top_line("escalation"), str(e)) from None
        if plans:
            core["escalation"] = plans
        resp = self._table("response")
        self._only(resp, {"ack_after", "rearm", "grace"}, "response", -1)
        rline = self.src.at("response", -1)
        cabinets = self._cabinets()
        self.batteries = {c.id: c.batteries for c in cabinets}
        ids = tuple(c.id for c in cabinets)
        scn = Scenario(
            path=path, name=str(head["name"]), description=str(head.get("description", "")),
            start=self.start, duration_ms=self.duration_ms, seed=seed, scan_ms=scan_ms, core=core,
            ack_after_ms=self.duration(resp.get("ack_after", "10m"), rline, "[response] ack_after", True),
            rearm=self._flag(resp.get("rearm", True), ("response", -1, "rearm")),
            grace_ms=self.duration(resp.get("grace", "2m"), rline, "[response] grace", True),
            cabinets=cabinets, schedules=self._schedules(),
            processes=self._items("process", PROCESS_PARAMS, ids, timed=False),
            actions=self._items("action", ACTION_PARAMS, ids, timed=True),
        )
        scn.incidents = self._incidents(ids)
        self._check_responders(scn)
        sense = sense_problem(scn)        # cameras and GNSS (simulator/senses.py)
        if sense:
            raise self.src.error(*sense)
        return scn

    def _check_responders(self, scn: Scenario) -> None:
        """A responder takes over only a cabinet with a reported incident: its
        ``at`` falls in an incident window (grace included) on each cabinet."""
        for i, a in enumerate(scn.actions):
            if a.kind != "responder":
                continue
            for cab in a.cabinets:
                if not any(inc.cabinet == cab and inc.start_ms <= a.at_ms <= inc.end_ms + scn.grace_ms
                           for inc in scn.incidents):
                    raise self.src.error(self.src.at("action", i, "at"), "[[action]] #{} (responder) at: no "
                                         "incident on cabinet {} is under way then (its [start, end + grace]); a "
                                         "responder takes over a cabinet whose incident was reported: move 'at' "
                                         "into that incident's window".format(i + 1, cab))

    def _top_line(self, key: str) -> int:
        for n, text in enumerate(self.src.lines):
            if re.match(r"^\s*\[{1,2}\s*" + re.escape(key) + r"\s*[].]", text) or \
               re.match(r"^\s*" + re.escape(key) + r"\s*=", text):
                return n + 1
        return 1

    def _table(self, name: str, required: bool = False) -> dict:
        t = self.doc.get(name)
        if t is None:
            if required:
                raise ScenarioError("{}: missing the [{}] table".format(self.src.path, name))
            return {}
        if not isinstance(t, dict):
            raise self.src.error(self._top_line(name), "'{}' must be a table [{}]".format(name, name))
        return t

    def _array(self, name: str) -> list[dict]:
        arr = self.doc.get(name, [])
        if not isinstance(arr, list) or not all(isinstance(x, dict) for x in arr):
            raise self.src.error(self._top_line(name), "'{}' must be an array of tables [[{}]]".format(name, name))
        return arr

    def _only(self, table: dict, allowed: set[str], name: str, index: int) -> None:
        for key in table:
            if key not in allowed:
                raise self.src.error(self.src.at(name, index, key), "{}: unknown key '{}' (known: {})".format(
                    _label(name, index), key, ", ".join(sorted(allowed))))

    def _int(self, v: Any, where: tuple[str, int, str], lo: int, hi: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise self.src.error(self.src.at(*where), "{} {}: must be a whole number from {} to {}, got {!r}"
                                 .format(_label(where[0], where[1]), where[2], lo, hi, v))
        return v

    def _flag(self, v: Any, where: tuple[str, int, str]) -> bool:
        if not isinstance(v, bool):
            raise self.src.error(self.src.at(*where), "{} {}: must be true or false, got {!r}"
                                 .format(_label(where[0], where[1]), where[2], v))
        return v

    def _number(self, v: float, where: tuple[str, int, str], lo: float, hi: float) -> float:
        if not lo <= v <= hi:
            raise self.src.error(self.src.at(*where), "{} {}: must be from {} to {}, got {!r}"
                                 .format(_label(where[0], where[1]), where[2], lo, hi, v))
        return float(v)

    def _core(self) -> dict[str, int]:
        core = self._table("core")
        self._only(core, {name for name, _default in CoreConfig.DEFAULTS}, "core", -1)
        return {k: self._int(v, ("core", -1, k), 0, 2**29 - 1) for k, v in core.items()}

    def _cabinets(self) -> list[Cabinet]:
        arr = self._array("cabinet")
        if not arr:
            raise ScenarioError("{}: a scenario needs at least one [[cabinet]] with an id".format(self.src.path))
        out = []
        for i, t in enumerate(arr):
            self._only(t, set(CABINET_PARAMS) | {"id"}, "cabinet", i)
            line = self.src.at("cabinet", i)
            cid = t.get("id")
            if not isinstance(cid, str) or not re.match(r"^[A-Za-z0-9_-]{1,32}$", cid):
                raise self.src.error(line, "[[cabinet]] #{}: 'id' must be a name of letters, digits, - and _".format(i + 1))
            if cid in [c.id for c in out]:
                raise self.src.error(line, "[[cabinet]] id '{}' is used twice".format(cid))
            p = self._params(t, CABINET_PARAMS, "cabinet", i)
            for key, lo, hi in (("batteries", 1, 4), ("modules", 1, 32), ("module_mv", 1000, 500000),
                                ("soc_pct", 0, 100), ("supply_mv", 0, 600000),
                                ("serial", 0, 2**31 - p["batteries"])):
                self._int(p[key], ("cabinet", i, key), lo, hi)
            out.append(Cabinet(id=cid, batteries=p["batteries"], modules=p["modules"], module_mv=p["module_mv"],
                               capacity_ah=self._number(p["capacity_ah"], ("cabinet", i, "capacity_ah"), 0.1, 1e5),
                               soc_pct=p["soc_pct"],
                               temp_c=self._number(p["temp_c"], ("cabinet", i, "temp_c"), -60.0, 80.0),
                               supply_mv=p["supply_mv"], serial=p["serial"], armed=bool(p["armed"]),
                               mains_sense=bool(p["mains_sense"])))
        return out

    def _params(self, t: dict, defaults: dict[str, Any], name: str, index: int) -> dict[str, Any]:
        """Defaults overlaid with the table's values, each of the default's type."""
        p = dict(defaults)
        for key, default in defaults.items():
            if key not in t:
                continue
            v = t[key]
            ok = (isinstance(v, bool) if isinstance(default, bool) else
                  isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(default, float) else
                  isinstance(v, int) and not isinstance(v, bool) if isinstance(default, int) else
                  isinstance(v, type(default)))
            if not ok:
                raise self.src.error(self.src.at(name, index, key), "{} {}: must be {}, got {!r}".format(
                    _label(name, index), key, type(default).__name__.replace("str", "a string")
                    .replace("list", "a list").replace("float", "a number").replace("int", "a whole number"), v))
            p[key] = v
        return p

    def _schedules(self) -> list[Schedule]:
        out = []
        for i, t in enumerate(self._array("schedule")):
            self._only(t, {"name", "from", "to", "days"}, "schedule", i)
            line = self.src.at("schedule", i)
            name = t.get("name")
            if not isinstance(name, str) or not SCHEDULE_NAME.match(name):
                raise self.src.error(line, "[[schedule]] #{} needs a 'name' of lower-case letters, digits and _"
                                     .format(i + 1))
            a, b = parse_clock(t.get("from")), parse_clock(t.get("to"))
            if a is None or b is None:
                raise self.src.error(self.src.at("schedule", i, "from" if a is None else "to"),
                                     "[[schedule]] '{}': 'from' and 'to' are local times \"HH:MM\"".format(name))
            out.append(Schedule(name, a, b, self._days(t.get("days", list(DAYS)), ("schedule", i, "days"))))
        return out

    def _days(self, days: Any, where: tuple[str, int, str]) -> tuple[int, ...]:
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise self.src.error(self.src.at(*where), "'days' must be a list of {}".format(", ".join(DAYS)))
        return tuple(sorted(DAYS.index(d) for d in days))

    def _items(self, name: str, kinds: dict[str, dict[str, Any]], ids: tuple[str, ...], timed: bool) -> list[Item]:
        out = []
        for i, t in enumerate(self._array(name)):
            line = self.src.at(name, i)
            kind = t.get("kind")
            if kind not in kinds:
                raise self.src.error(self.src.at(name, i, "kind"), "[[{}]] #{}: unknown {} {!r} (known: {})".format(
                    name, i + 1, name, kind, ", ".join(sorted(kinds))))
            common = {"kind", "cabinet", "cabinets"} | ({"at"} if timed else {"seed"})
            self._only(t, set(kinds[kind]) | common, name, i)
            p = self._params(t, kinds[kind], name, i)
            cabs = self._cabinet_list(t, ids, name, i)
            at = 0
            if timed:
                if "at" not in t:
                    raise self.src.error(line, "[[{}]] #{} ({}) needs 'at'".format(name, i + 1, kind))
                at = self.time(t["at"], self.src.at(name, i, "at"), "[[{}]] #{} at".format(name, i + 1))
            seed = self._int(t.get("seed", i + 1), (name, i, "seed"), 0, 2**31 - 1)
            item = Item(kind, cabs, at, p, seed, line)
            self._check_item(item, name, i)
            out.append(item)
        return out

    def _cabinet_list(self, t: dict, ids: tuple[str, ...], name: str, i: int) -> tuple[str, ...]:
        if "cabinet" in t and "cabinets" in t:
            raise self.src.error(self.src.at(name, i, "cabinets"), "[[{}]] #{}: give 'cabinet' or 'cabinets', "
                                 "not both".format(name, i + 1))
        if "cabinet" in t:
            cabs = [t["cabinet"]]
        elif "cabinets" in t:
            cabs = t["cabinets"]
            if not isinstance(cabs, list) or not cabs:
                raise self.src.error(self.src.at(name, i, "cabinets"), "[[{}]] #{}: 'cabinets' must be a "
                                     "non-empty list of cabinet ids, like [\"cab-01\"]".format(name, i + 1))
        elif name == "action" and len(ids) > 1:
            # A site-wide act (a weather front, a port's grid outage) names them all.
            raise self.src.error(self.src.at(name, i), "[[action]] #{}: say which cabinet (there are {}): "
                                 "cabinet = \"{}\", or for several or the whole site cabinets = [{}]".format(
                                     i + 1, len(ids), ids[0], ", ".join('"{}"'.format(c) for c in ids)))
        else:
            return ids
        for c in cabs:
            if c not in ids:
                raise self.src.error(self.src.at(name, i, "cabinet" if "cabinet" in t else "cabinets"),
                                     "[[{}]] #{}: unknown cabinet {!r} (known: {})".format(name, i + 1, c, ", ".join(ids)))
        return tuple(cabs)

    def _check_item(self, item: Item, name: str, i: int) -> None:
        """Kind-specific checks: every duration, clock time and choice."""
        p = item.params
        for key, v in p.items():
            where = self.src.at(name, i, key)
            label = "[[{}]] #{} {}".format(name, i + 1, key)
            default = (PROCESS_PARAMS if name == "process" else ACTION_PARAMS)[item.kind][key]
            if key in ("hours", "times"):
                if not all(parse_clock(x) is not None for x in v) or (key == "hours" and len(v) != 2):
                    raise self.src.error(where, "{}: want local times \"HH:MM\"{}".format(
                        label, " [from, to]" if key == "hours" else ""))
            elif key == "visit_prob":
                self._number(v, (name, i, key), 0.0, 1.0)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and key not in SIGNED_PARAMS and v < 0:
                raise self.src.error(where, "{}: must not be negative, got {!r}".format(label, v))
            elif key == "days":
                self._days(v, (name, i, key))
            elif key == "at" and name == "process":
                if isinstance(v, str):
                    if parse_clock(v) is None:
                        raise self.src.error(where, "{}: want a local time \"HH:MM\"".format(label))
                else:
                    for x in v:
                        self.time(x, where, label)
            elif key == "auth_delay":
                lo, hi = (self.duration(x, where, label) for x in v) if len(v) == 2 else (None, None)
                if lo is None or lo > hi:
                    raise self.src.error(where, "{}: want [shortest, longest] durations".format(label))
            elif key in ("charge_at", "discharge_at"):
                if parse_clock(v) is None:
                    raise self.src.error(where, "{}: want a local time \"HH:MM\"".format(label))
            elif isinstance(default, str) and key not in ("battery", "device", "signal", "fault", "name", "auth",
                                                          "schedule", "arg") + SENSE_TEXT_PARAMS:
                for_ever = v == "" and (key == "hold" or (item.kind, key) in FOR_EVER_KEYS)
                p[key] = self.duration(v, where, label, allow_empty=default == "" or for_ever)
                if for_ever:
                    p[key] = FOR_EVER             # unlike "0s": a hold that never cools, a camera event that stays
                if key in POSITIVE_DURATIONS and p[key] <= 0:
                    raise self.src.error(where, "{}: must be longer than 0".format(label))
        if item.kind == "maintenance" and p["length"] < MAINTENANCE_MIN_MS:
            raise self.src.error(self.src.at(name, i, "length"), "[[process]] #{} length: must be more "
                                 "than 5 minutes (the technician's visit is the window less 5 minutes)".format(i + 1))
        for key in ("count", "modules"):
            if key in p:
                self._int(p[key], (name, i, key), 1, 32)
        self._check_choices(item, name, i)
        self._check_devices(item, i)

    def _check_choices(self, item: Item, name: str, i: int) -> None:
        p = item.params

        def bad(key: str, what: str) -> ScenarioError:
            return self.src.error(self.src.at(name, i, key), "[[{}]] #{} ({}) {}: {}".format(
                name, i + 1, item.kind, key, what))
        if "battery" in p and not re.match(r"^bms[1-4]$", p["battery"]):
            raise bad("battery", "want bms1 … bms4, got {!r}".format(p["battery"]))
        if item.kind in ("cable_cut", "loose_connector", "crc_burst") and not re.match(r"^(io|bus|bms[1-4])$", p["device"]):
            raise bad("device", "want io, bms1 … bms4 or bus, got {!r}".format(p["device"]))
        if item.kind == "sensor_fault" and p["fault"] not in SENSOR_FAULTS:
            raise bad("fault", "want one of {}".format(", ".join(SENSOR_FAULTS)))
        if item.kind == "sensor_failure" and p["fault"] not in SENSOR_FAILURES:
            raise bad("fault", "want one of {} (a one-sample spike is a 'glitch')".format(", ".join(SENSOR_FAILURES)))
        if item.kind in ("sensor_fault", "sensor_failure") and p["device"]:
            self._device_offline(p, bad, "signal" in self._array(name)[i])
        if item.kind == "booked_window" and p["length"] <= 0:
            raise bad("length", "must be longer than 0")
        if item.kind == "hot_cell" and p["amps"] <= 0:
            raise bad("amps", "must be more than 0 (the current at which the cell runs `rise_c` above the pack)")
        if item.kind == "grid_outage" and p["duration"] == 0:
            raise bad("duration", "must be longer than 0 (\"\": the power never comes back)")
        if item.kind == "command":
            if p["name"] not in COMMANDS:
                raise bad("name", "want one of {}".format(", ".join(COMMANDS)))
            p["arg"] = self.duration(p["arg"], self.src.at(name, i, "arg"), "arg", allow_empty=True)
        if "schedule" in p and not SCHEDULE_NAME.match(p["schedule"]):
            raise bad("schedule", "want a name of lower-case letters, digits and _, got {!r}".format(p["schedule"]))
        if item.kind == "shift" and p["auth"] not in ("maint", "disarm"):
            raise bad("auth", "want \"maint\" or \"disarm\"")

    @staticmethod
    def _device_offline(p: dict[str, Any], bad: Any, signal_too: bool) -> None:
        """``device`` in place of ``signal``: a whole device off the bus (``fault = "offline"``).
        The signal becomes one of the device's, which is all ``offline`` reads of it."""
        if signal_too:
            raise bad("device", "give 'signal' or 'device', not both")
        if p["fault"] != "offline":
            raise bad("device", "only with fault = \"offline\" (a whole device off the bus); a fault of one "
                                "reading names its 'signal'")
        if not re.match(r"^(io|bms[1-4])$", p["device"]):
            raise bad("device", "want io or bms1 … bms4, got {!r}".format(p["device"]))
        p["signal"] = p["device"] + (".door_open" if p["device"] == "io" else ".pack_mv")

    def _check_devices(self, item: Item, i: int) -> None:
        """The battery, device or signal an action names exists on each of its cabinets."""
        p = item.params
        key = next((k for k in ("battery", "device", "signal") if p.get(k)), None)
        if key is None:
            return
        fewest = min(self.batteries[c] for c in item.cabinets)
        where = self.src.at("action", i, key)
        label = "[[action]] #{} ({}) {}".format(i + 1, item.kind, key)
        if key == "signal":
            known = ["io." + s[0] for s in IO_SIGNALS] + ["bms{}.{}".format(n, s[0]) for n in range(1, fewest + 1)
                                                          for s in BATTERY_SIGNALS]
            if p["signal"] not in known:
                near = difflib.get_close_matches(p["signal"], known, 1)
                raise self.src.error(where, "{}: unknown signal {!r}{}; known: io.<{}>, bmsN.<{}> for N from 1 to {} "
                                     "(docs/scenarios.md, \"Signals of a cabinet\")".format(
                                         label, p["signal"], " (did you mean {}?)".format(near[0]) if near else "",
                                         "|".join(s[0] for s in IO_SIGNALS), "|".join(s[0] for s in BATTERY_SIGNALS),
                                         fewest))
            return
        device = p[key]
        if device.startswith("bms") and int(device[3:]) > fewest:
            cab = next(c for c in item.cabinets if self.batteries[c] == fewest)
            raise self.src.error(where, "{}: cabinet {} has only {} (its 'batteries' is {}), got {!r}".format(
                label, cab, "bms1" if fewest == 1 else "bms1 … bms{}".format(fewest), fewest, device))

    def _incidents(self, ids: tuple[str, ...]) -> list[Incident]:
        out: list[Incident] = []
        for i, t in enumerate(self._array("incident")):
            self._only(t, {"kind", "cabinet", "start", "end", "note"}, "incident", i)
            line = self.src.at("incident", i)
            if t.get("kind") not in INCIDENT_KINDS:
                raise self.src.error(self.src.at("incident", i, "kind"),
                                     "[[incident]] #{}: kind must be one of {}, got {!r}".format(
                                         i + 1, ", ".join(INCIDENT_KINDS), t.get("kind")))
            cabs = self._cabinet_list(t, ids, "incident", i)
            if len(cabs) != 1:
                raise self.src.error(line, "[[incident]] #{}: say which 'cabinet'".format(i + 1))
            for key in ("start", "end"):
                if key not in t:
                    raise self.src.error(line, "[[incident]] #{} needs '{}'".format(i + 1, key))
            start = self.time(t["start"], self.src.at("incident", i, "start"), "[[incident]] #{} start".format(i + 1))
            end = self.time(t["end"], self.src.at("incident", i, "end"), "[[incident]] #{} end".format(i + 1))
            if end <= start:
                raise self.src.error(self.src.at("incident", i, "end"),
                                     "[[incident]] #{}: end must be after start".format(i + 1))
            inc = Incident(t["kind"], cabs[0], start, end, str(t.get("note", "")), line)
            for other in out:
                if other.cabinet == inc.cabinet and other.start_ms < inc.end_ms and inc.start_ms < other.end_ms:
                    what = "contradictory labels ({} vs {})".format(other.kind, inc.kind) \
                        if other.kind != inc.kind else "duplicate labels (both {})".format(inc.kind)
                    raise self.src.error(line, "[[incident]] #{} overlaps the incident at line {} on cabinet {}: {}; "
                                               "make the windows disjoint".format(i + 1, other.line, inc.cabinet, what))
            out.append(inc)
        return out


def _shown(value: Any) -> str:
    """A value as the author wrote it: TOML dates and times as ISO text."""
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date, dt.time)) else repr(value)


def _label(name: str, index: int) -> str:
    """How errors name a table: ``[response]`` or ``[[action]] #3``."""
    return "[{}]".format(name) if index < 0 else "[[{}]] #{}".format(name, index + 1)


def loads(text: str, path: str = "<scenario>") -> Scenario:
    return _Loader(path, text).scenario(path)


def load(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = read_text(p, "scenario")
    except OSError as e:
        raise ScenarioError("cannot read scenario {}: {}".format(path, e.strerror)) from None
    except InputFileError as e:
        raise ScenarioError("{} (a TOML file, docs/scenarios.md)".format(e)) from None
    return loads(text, str(path))
