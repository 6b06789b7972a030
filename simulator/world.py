"""The world model: what a cabinet's sensors read, scan by scan, in virtual time.

``CabinetWorld(scenario, cabinet).stream()`` yields ``(t_ms, changes,
commands)`` only at scans where something changed: ``changes`` is a list
of ``(catalog index, value)`` and ``commands`` a list of core commands
``(code, arg)`` that people issued (technicians, scripted actions).  Signal
names, units and scales are those of docs/signals.md.

Where the values come from:

* discrete events (doors, bolts, modules, cables, commands, schedule
  windows, the hour of the week) land on the scan they happen in;
* the I/O module reports vibration, tilt and lift once per second (its
  measuring window) and temperature / supply every 10 s;
* each BMS is sampled every 4 s and at once after anything that changes
  its pack (a module pulled, a cable cut).

Continuous effects are *episodes* (a crane cycle, a truck passing, a storm,
a burst from a forced door, a tilt) that add to a channel while active.
Vibration contributions add as RMS (root of the sum of squares); peaks take
the maximum.  Everything is drawn from seeded generators, so a scenario
always produces the same stream.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Iterator

from controller.core.catalog import (
    ANOMALY_SIGNALS, SYSTEM_SIGNALS, ZONE_SIGNALS, Catalog, device_signals, schedule_signals,
)
from controller.core.events import COMMAND_CODES
from drivers.modbus.profiles import BATTERY_SIGNALS, IO_SIGNALS
from simulator.scenario import Cabinet, Item, Scenario, parse_clock, parse_duration
from simulator.senses import SensesWorld, sense_signals
from simulator.sensors import CMD, CRC, DUMMIES, FORCE, FREEZE, GLITCH, MODULES, RELEASE, SERIAL, SET, WINDOW, Stream



def schedule_names(scn: Scenario) -> list[str]:
    names = {s.name for s in scn.schedules}
    for p in scn.processes:
        if p.kind in ("shift", "maintenance"):
            names.add(p.params["schedule"])
    names.update(a.params["schedule"] for a in scn.actions if a.kind == "booked_window")
    return sorted(names)


def cabinet_catalog(scn: Scenario, cab: Cabinet, extra_schedules: tuple[str, ...] = ()) -> Catalog:
    """The image of one cabinet's gateway: io, bms1..N, sys, sched, anom.

    ``extra_schedules``: schedules the rules name that the scenario does not
    define; their ``sched.*`` signals exist and are never active."""
    specs = device_signals("io", IO_SIGNALS)
    for n in range(1, cab.batteries + 1):
        specs += device_signals("bms{}".format(n), BATTERY_SIGNALS)
    names = sorted(set(schedule_names(scn)) | set(extra_schedules))
    specs += list(SYSTEM_SIGNALS) + schedule_signals(names) + list(ANOMALY_SIGNALS) + list(ZONE_SIGNALS)
    specs += sense_signals(scn, cab)          # cameras and GNSS (simulator/senses.py)
    return Catalog(specs)


class Episode:
    """A continuous effect on one channel between ``start`` and ``end`` (ms)."""

    __slots__ = ("start", "end", "span", "channel", "shape", "a", "b", "c", "rng")

    def __init__(self, start: int, end: int, channel: str, shape: str, a: float, b: float = 0.0,
                 c: float = 0.0, rng: random.Random | None = None):
        self.start, self.end, self.channel, self.shape = start, end, channel, shape
        self.span = end - start
        self.a, self.b, self.c = a, b, c
        self.rng = rng

    def envelope(self, t: int) -> float:
        """0..1: ramps up over the first 15 %, down over the last 15 % (the
        shapes that ease in and out: crane, gusty, wobble, swell)."""
        span = self.span
        x = (t - self.start) / span if span > 0 else 1.0
        up, down = x / 0.15, (1.0 - x) / 0.15       # min(1.0, up, down) without the call
        if down < up:
            up = down
        return up if up < 1.0 else 1.0

    def vib(self, t: int, rng: random.Random) -> tuple[float, float]:
        """(rms, peak) in mg at ``t`` for a vibration episode."""
        shape = self.shape
        if shape == "crane":
            env = self.envelope(t)
            rms = self.a * env * (0.75 + 0.25 * math.sin(6.2832 * t / self.c)) * (0.9 + 0.2 * rng.random())
            return rms, rms + self.b * env * (0.6 + 0.4 * rng.random())
        if shape == "truck":
            x = (t - self.start) / self.span
            env = 1.0 - abs(2.0 * x - 1.0)
            return self.a * env, self.b * env * (0.7 + 0.3 * rng.random())
        if shape == "gusty":      # storms, rain, wind gusts, a careful thief
            g = rng.random()
            env = self.envelope(t)
            return self.a * env * (0.4 + 0.6 * g), self.b * env * (0.3 + 0.7 * rng.random())
        return self.a * (0.9 + 0.2 * rng.random()), self.b * (0.8 + 0.2 * rng.random())  # "burst"

    def level(self, t: int) -> float:
        """The value on a scalar channel (tilt, lift, temperature offset)."""
        shape = self.shape
        if shape == "wobble":
            return self.a * self.envelope(t) * math.sin(6.2832 * t / self.c)
        if shape == "swell":      # eases in and out (weather cooling the cabinet)
            return self.a * self.envelope(t)
        if shape == "ramp":       # a: final value, b: ramp length ms; holds after
            x = (t - self.start) / self.b if self.b > 0 else 1.0
            return self.a * (x if x < 1.0 else 1.0)
        if shape == "hill":       # a ramp (b ms), held c ms, then back to 0 by the end
            x = t - self.start
            if x < self.b:
                return self.a * x / self.b
            cool = self.end - self.start - self.b - self.c
            return self.a if x < self.b + self.c or cool <= 0 else self.a * max(0.0, (self.end - t) / cool)
        return self.a          # "step"


class CabinetWorld(SensesWorld):
    """One cabinet's physical world for one scenario (cameras and GNSS: simulator/senses.py)."""

    def __init__(self, scn: Scenario, cab: Cabinet, catalog: Catalog | None = None):
        self.scn = scn
        self.cab = cab
        self.catalog = catalog or cabinet_catalog(scn, cab)
        self.scan = scn.scan_ms
        self.events: list[tuple[int, int, int, object, object]] = []
        self.episodes: list[Episode] = []
        self.cycles: list[tuple[int, int, float]] = []   # (start, end, amps) BMS current plan
        self._seq = 0
        # signal -> its forces: (start, end or -1, value, start's seq, end's seq)
        self.forces: dict[str, list[tuple[int, int, object, int, int]]] = {}
        self.visits: list[tuple[int, int, int, int, str]] = []  # (unbolted, door open, door closed, signed off, auth)
        self.noise = random.Random("{}/{}/noise".format(scn.seed, cab.id))
        self._plan()

    # -- building the plan --------------------------------------------------
    def _at(self, t: int, op: int, a: object, b: object = 0) -> None:
        t = (t // self.scan) * self.scan
        if 0 <= t <= self.scn.duration_ms:
            self._seq += 1
            self.events.append((t, self._seq, op, a, b))

    def _cmd(self, t: int, name: str, arg: int = 0) -> None:
        self._at(t, CMD, COMMAND_CODES[name], arg)

    def _ep(self, start: int, length: int, channel: str, shape: str, a: float, b: float = 0.0,
            c: float = 0.0) -> None:
        if length > 0 and start < self.scn.duration_ms:
            self.episodes.append(Episode(start, start + length, channel, shape, a, b, c))

    def _plan(self) -> None:
        scn, cab = self.scn, self.cab
        self._initial()
        for item in scn.processes:
            if cab.id in item.cabinets:
                rng = random.Random(self._draws(item))
                getattr(self, "_process_" + item.kind)(item.params, rng)
        for item in scn.actions:
            if cab.id in item.cabinets:
                getattr(self, "_action_" + item.kind)(item.at_ms, item.params, item)
        self._senses_planned()
        self._stack_forces()
        self.fronts = any(e.channel == "amb" for e in self.episodes)     # weather fronts move the outdoors
        self.cells = any(e.channel[0] in "sh" for e in self.episodes)  # cell_imbalance, hot_cell (sensors.py)
        self.events.sort()
        self.episodes.sort(key=lambda e: e.start)

    def _draws(self, process: Item) -> str:
        """The seed of a process's draws: the same on every cabinet (one site's rhythm), unless
        ``per_cabinet`` (a shift that visits each cabinet on its own)."""
        seed = "{}/{}/{}".format(self.scn.seed, process.seed, process.kind)
        return seed + "/" + self.cab.id if process.params.get("per_cabinet") else seed

    def _initial(self) -> None:
        scn, cab = self.scn, self.cab
        # Door, bolt and tamper switch are read at +0 like every input, so a
        # fault on them has a value to hold and a true value to return to.
        for name, v in (("sys.clock_trusted", 1), ("sys.disk_free_pct", 80), ("io.online", 1), ("io.door_bolt", 1),
                        ("io.door_open", 0), ("io.tamper", 0), ("io.supply_mv", cab.supply_mv)):
            self._at(0, SET, name, v)
        for n in range(1, cab.batteries + 1):
            self._at(0, SET, "bms{}.online".format(n), 1)
        if cab.mains_sense:
            self._mains(0, 1)
        if cab.armed:
            self._cmd(0, "arm")
        # The hour of the week at the start and at every hour boundary.
        week = scn.week_ms(0)
        self._at(0, SET, "sys.week_hour", week // 3600000)
        t = 3600000 - week % 3600000
        while t <= scn.duration_ms:
            self._at(t, SET, "sys.week_hour", scn.week_ms(t) // 3600000)
            t += 3600000
        for s in scn.schedules:
            self._windows("sched." + s.name, s.start_min, s.end_min, s.days)

    def _daily(self, minute: int, days: tuple[int, ...] = tuple(range(7))) -> Iterator[int]:
        """Scenario ms of every local ``minute`` of the day on ``days``."""
        wd, now_min = self.scn.local_minute(0)
        day0 = -(now_min * 60000 + self.scn.week_ms(0) % 60000)   # ms of local midnight, day 0
        d = -1
        while True:
            t = day0 + d * 86400000 + minute * 60000
            if t > self.scn.duration_ms:
                return
            if (wd + d) % 7 in days:
                yield t
            d += 1

    def _windows(self, signal: str, start_min: int, end_min: int, days: tuple[int, ...]) -> None:
        length = ((end_min - start_min) % 1440 or 1440) * 60000
        for t in self._daily(start_min, days):
            self._window(signal, t, t + length)

    def _window(self, signal: str, start: int, end: int) -> None:
        """A schedule window; windows of one name overlap as a union."""
        if end > 0:
            self._at(max(start, 0), WINDOW, signal, 1)
            self._at(end, WINDOW, signal, -1)

    def _poisson(self, rng: random.Random, per_ms: float, t0: int, t1: int) -> Iterator[int]:
        t = t0
        while per_ms > 0:
            t += int(rng.expovariate(per_ms))
            if t >= t1:
                return
            yield t

    def _in_hours(self, hours: list[str]) -> Iterator[tuple[int, int]]:
        a, b = parse_clock(hours[0]), parse_clock(hours[1])
        assert a is not None and b is not None
        length = ((b - a) % 1440 or 1440) * 60000
        for t in self._daily(a):
            yield t, t + length

    # -- background processes -------------------------------------------------
    def _process_crane(self, p: dict, rng: random.Random) -> None:
        for t0, t1 in self._in_hours(p["hours"]):
            t = t0 + int(rng.expovariate(1.0 / p["gap"]))
            while t < t1:
                length = int(p["cycle"] * rng.uniform(0.8, 1.2))
                level = rng.uniform(0.7, 1.3)
                self._ep(t, length, "vib", "crane", p["rms_mg"] * level, p["peak_mg"] * level, p["sway_period"])
                t += length + int(rng.expovariate(1.0 / p["gap"]))

    def _process_truck(self, p: dict, rng: random.Random) -> None:
        for t0, t1 in self._in_hours(p["hours"]):
            for t in self._poisson(rng, p["per_hour"] / 3600000.0, t0, t1):
                size = rng.uniform(0.5, 1.5)
                self._ep(t, int(p["pass"] * rng.uniform(0.7, 1.3)), "vib", "truck",
                         p["rms_mg"] * size, p["peak_mg"] * size)

    def _weather(self, p: dict, rng: random.Random) -> Iterator[tuple[int, int]]:
        starts = list(self._poisson(rng, p["per_day"] / 86400000.0, -p["length"], self.scn.duration_ms))
        starts += [self._offset(x) for x in p["at"]]
        for t in sorted(starts):
            yield t, int(p["length"] * rng.uniform(0.7, 1.3))

    def _offset(self, value: object) -> int:
        off = parse_duration(value)
        if off is None:  # an absolute time: the loader checked it
            when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
            off = int((when - self.scn.start).total_seconds() * 1000)
        return off

    def _process_storm(self, p: dict, rng: random.Random) -> None:
        for t, length in self._weather(p, rng):
            self._ep(t, length, "vib", "gusty", p["rms_mg"], p["peak_mg"])
            self._ep(t, length, "tilt", "wobble", p["tilt_mdeg"], 0.0, p["period"])
            self._ep(t, length, "tio", "swell", -15.0)

    def _process_rain(self, p: dict, rng: random.Random) -> None:
        for t, length in self._weather(p, rng):
            self._ep(t, length, "vib", "gusty", p["rms_mg"], p["peak_mg"])
            self._ep(t, length, "tio", "swell", -10.0 * p["cool_c"])

    def _process_wind(self, p: dict, rng: random.Random) -> None:
        self._ep(0, self.scn.duration_ms + 1, "vib", "burst", p["rms_mg"], p["rms_mg"] * 3.0)
        for t in self._poisson(rng, 1.0 / p["gust_every"], 0, self.scn.duration_ms):
            length = int(rng.uniform(4000, 15000))
            self._ep(t, length, "vib", "gusty", p["gust_mg"], p["gust_mg"] * 3.0)
            self._ep(t, length, "tilt", "wobble", p["tilt_mdeg"], 0.0, p["period"])

    def _visit(self, t: int, length: int, auth: str, delay: int, tools: tuple[float, float]) -> None:
        """An authorised visit: unlock, open, authenticate within the entry
        delay, work, close, lock, sign off."""
        self.visits.append((t, t + 1000, t + length, t + length + 5000, auth))
        self._at(t, SET, "io.door_bolt", 0)
        self._at(t + 1000, SET, "io.door_open", 1)
        if auth == "maint":
            self._cmd(t + 1000 + delay, "maint_start", length + 300000)
        else:
            self._cmd(t + 1000 + delay, "disarm")
        self._ep(t + 30000, max(length - 60000, 1000), "vib", "gusty", tools[0], tools[1])
        self._at(t + length, SET, "io.door_open", 0)
        self._at(t + length + 2000, SET, "io.door_bolt", 1)
        if auth == "maint":
            self._cmd(t + length + 5000, "maint_stop")
        elif self.cab.armed:
            self._cmd(t + length + 5000, "arm")

    def _process_shift(self, p: dict, rng: random.Random) -> None:
        lo, hi = (parse_duration(x) for x in p["auth_delay"])
        assert lo is not None and hi is not None
        half = p["window"] // 2
        for clock in p["times"]:
            minute = parse_clock(clock)
            assert minute is not None
            for t in self._daily(minute):
                self._window("sched." + p["schedule"], t - half, t + half)
                if rng.random() < p["visit_prob"]:
                    start = t + int(rng.uniform(-half / 2, half / 2))
                    if start > 0:
                        self._visit(start, int(p["visit"] * rng.uniform(0.6, 1.4)), p["auth"],
                                    int(rng.uniform(lo, hi)), (20.0, 90.0))

    def _process_maintenance(self, p: dict, rng: random.Random) -> None:
        minute = parse_clock(p["at"])
        assert minute is not None
        days = tuple(("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(d) for d in p["days"])
        for t in self._daily(minute, days):
            if t < 0:
                continue
            self._window("sched." + p["schedule"], t, t + p["length"])
            visit = p["length"] - 300000
            self._visit(t + 120000, visit, "maint", int(rng.uniform(5000, 15000)), (p["rms_mg"], p["peak_mg"]))
            if p["swap_module"]:
                self._at(t + visit // 3, MODULES, "bms1", -1)
                self._at(t + visit // 3 + 600000, MODULES, "bms1", 1)

    def _process_bms(self, p: dict, rng: random.Random) -> None:
        for key, sign in (("charge", -1.0), ("discharge", 1.0)):
            minute = parse_clock(p[key + "_at"])
            assert minute is not None
            for t in self._daily(minute):
                amps = sign * p[key + "_a"] * rng.uniform(0.85, 1.15)
                self.cycles.append((t, t + p[key], amps))
        self.cycles.sort()
        self.bms_noise = p["noise_a"]
        self.bms_ramp = max(p["ramp"], 1)

    # -- scripted actions --------------------------------------------------------
    def _action_door_open(self, t: int, p: dict, item: Item) -> None:
        if p["unbolt"]:
            self._at(t, SET, "io.door_bolt", 0)
        self._at(t + 1000, SET, "io.door_open", 1)

    def _action_door_close(self, t: int, p: dict, item: Item) -> None:
        self._at(t, SET, "io.door_open", 0)
        if p["bolt"]:
            self._at(t + 1000, SET, "io.door_bolt", 1)

    def _action_door_forced(self, t: int, p: dict, item: Item) -> None:
        self._ep(t, 2000, "vib", "burst", p["rms_mg"], p["peak_mg"])
        self._at(t + 1000, SET, "io.door_open", 1)

    def _action_vibration(self, t: int, p: dict, item: Item) -> None:
        self._ep(t, p["duration"], "vib", "burst", p["rms_mg"], p["peak_mg"])

    def _action_tilt(self, t: int, p: dict, item: Item) -> None:
        self._ep(t, p["duration"], "tilt", "ramp", p["deg"] * 1000.0, float(p["ramp"]))

    def _action_lift(self, t: int, p: dict, item: Item) -> None:
        held = p["duration"] if p["set_down"] else self.scn.duration_ms + 1 - t   # carried off: never set down
        self._ep(t, 2000, "lift", "step", p["accel_mg"])
        self._ep(t, held, "tilt", "ramp", p["deg"] * 1000.0, 2000.0)
        self._ep(t, held, "vib", "burst", 150.0, 600.0)

    def _action_tow(self, t: int, p: dict, item: Item) -> None:
        """A cabinet on wheels (a trailer, a skid) hitched or pushed and rolled
        away: a jolt and the tongue's tilt, then rolling vibration, for good."""
        held = self.scn.duration_ms + 1 - t
        self._ep(t, 2000, "lift", "step", p["accel_mg"])
        self._ep(t, held, "tilt", "ramp", p["deg"] * 1000.0, 2000.0)
        self._ep(t, held, "vib", "burst", p["rms_mg"], p["peak_mg"])

    def _action_module_remove(self, t: int, p: dict, item: Item) -> None:
        self._ep(t, 3000, "vib", "burst", 25.0, 90.0)
        self._at(t + 2000, MODULES, p["battery"], -p["count"])
        if p["dummy"]:
            self._at(t + 2000, DUMMIES, p["battery"], -p["count"])

    def _action_module_insert(self, t: int, p: dict, item: Item) -> None:
        self._ep(t, 3000, "vib", "burst", 25.0, 90.0)
        self._at(t + 2000, MODULES, p["battery"], p["count"])
        if p["dummy"]:                # counted in its slot, but no cells: it adds no voltage
            self._at(t + 2000, DUMMIES, p["battery"], p["count"])
        if p["serial"]:
            self._at(t + 2000, SERIAL, p["battery"], p["serial"])

    def _devices(self, device: str) -> list[str]:
        bms = ["bms{}".format(n) for n in range(1, self.cab.batteries + 1)]
        return ["io"] + bms if device == "bus" else [device]

    def _action_cable_cut(self, t: int, p: dict, item: Item) -> None:
        for dev in self._devices(p["device"]):
            self._force(t, dev + ".online", 0, p["duration"])
            if dev != "io":
                self._force(t, dev + ".current_ma", 0, p["duration"])

    def _force(self, t: int, signal: str, value: object, duration: int) -> None:
        """``signal`` reads ``value`` from ``t`` for ``duration`` (0: for good); the
        faults of one signal combine in ``_stack_forces``."""
        start = (t // self.scan) * self.scan
        end = ((t + duration) // self.scan) * self.scan if duration else -1
        self._seq += 2          # its start's place among the events at a time, and its end's
        self.forces.setdefault(signal, []).append((start, end, value, self._seq - 1, self._seq))

    def _stack_forces(self) -> None:
        """The FORCE and RELEASE events of the forces planned: while several
        faults force one signal (a loose plug during a power cut, a cut on
        top of another), the latest still lasting wins, and the signal is
        released only when the last one ends."""
        for signal, forces in self.forces.items():
            edges: dict[int, int] = {}     # time -> the first place of a start or an end there
            for start, end, _v, seq_start, seq_end in forces:
                edges[start] = min(edges.get(start, seq_start), seq_start)
                if end >= 0:
                    edges[end] = min(edges.get(end, seq_end), seq_end)
            # At each edge, the forces that started by then and have not ended: a sweep
            # in time order (a loose connector makes thousands of short forces).
            by_start = sorted(forces, key=lambda f: (f[0], f[3]))
            lasting: list[tuple[int, int, object, int, int]] = []
            k = 0
            shown: tuple[object, ...] = ()       # (): released; (value,): forced to value
            for t in sorted(edges):
                while k < len(by_start) and by_start[k][0] <= t:
                    lasting.append(by_start[k])
                    k += 1
                lasting = [f for f in lasting if f[1] < 0 or f[1] > t]
                now = (lasting[-1][2],) if lasting else ()     # the latest started still lasting
                if now != shown and 0 <= t <= self.scn.duration_ms:
                    self.events.append((t, edges[t], FORCE, signal, now[0]) if now else (t, edges[t], RELEASE, signal, 0))
                shown = now

    def _action_power_cut(self, t: int, p: dict, item: Item) -> None:
        self._force(t, "io.supply_mv", 0, p["duration"])
        self._force(t + 200, "io.online", 0, p["duration"])

    def _action_gateway_restart(self, t: int, p: dict, item: Item) -> None:
        """Nothing in the world: the gateway's restart is the evaluation's (simulator/evaluate.py)."""

    def _hill(self, t: int, rise: int, hold: int, back: int) -> tuple[int, float]:
        """(length, hold) of a "hill" episode: up over ``rise``, held ``hold``
        (FOR_EVER: to the scenario's end), back over ``back``."""
        if hold >= 0:
            return rise + hold + back, float(hold)
        return self.scn.duration_ms + 1 - t, float(self.scn.duration_ms)

    def _action_thermal_ramp(self, t: int, p: dict, item: Item) -> None:
        rise = p["duration"]
        length, hold = self._hill(t, rise, p["hold"], p["cool"])
        self._ep(t, length, "t" + p["battery"], "hill", p["rise_c"], float(rise), hold)
        self._ep(t, length, "tio", "hill", p["rise_c"] * 2.5, float(rise), hold)

    def _action_cell_imbalance(self, t: int, p: dict, item: Item) -> None:
        """The battery's cell spread (``cell_vmax_mv`` - ``cell_vmin_mv``) widens by ``spread_mv``."""
        length, hold = self._hill(t, p["duration"], p["hold"], p["back"])
        self._ep(t, length, "s" + p["battery"], "hill", float(p["spread_mv"]), float(max(p["duration"], 1)), hold)

    def _action_hot_cell(self, t: int, p: dict, item: Item) -> None:
        """A cell heating with the current: ``rise_c`` above the pack at a steady ``amps``, as A²."""
        length = p["duration"] or self.scn.duration_ms + 1 - t
        self._ep(t, length, "h" + p["battery"], "step", p["rise_c"] / p["amps"] ** 2, float(p["tau"]))

    def _action_weather_front(self, t: int, p: dict, item: Item) -> None:
        """The outdoor temperature moves by ``delta_c`` (°C): the cabinet and, slowly, its packs follow."""
        length, hold = self._hill(t, p["ramp"], p["hold"], p["back"])
        self._ep(t, length, "amb", "hill", p["delta_c"], float(max(p["ramp"], 1)), hold)

    def _action_booked_window(self, t: int, p: dict, item: Item) -> None:
        self._window("sched." + p["schedule"], t, t + p["length"])

    def _action_panel_open(self, t: int, p: dict, item: Item) -> None:
        """A panel pried or sprung: the enclosure's tamper switch trips until it is shut."""
        self._ep(t, 2000, "vib", "burst", p["rms_mg"], p["peak_mg"])
        self._at(t + 1000, SET, "io.tamper", 1)
        if p["duration"]:
            self._at(t + 1000 + p["duration"], SET, "io.tamper", 0)

    def _action_sensor_fault(self, t: int, p: dict, item: Item) -> None:
        fault, signal = p["fault"], p["signal"]
        if fault == "offline":
            self._force(t, signal.split(".")[0] + ".online", 0, p["duration"])
        elif fault == "stuck":
            self._force(t, signal, FREEZE, p["duration"])
        elif fault == "zero":
            self._force(t, signal, 0, p["duration"])
        else:                                 # a spike: a moment, unless told otherwise
            self._force(t, signal, p["value"], p["duration"] or 1000)

    def _action_sensor_failure(self, t: int, p: dict, item: Item) -> None:
        """The same effect as a ``sensor_fault``, but nobody's act: the sensor died on its own."""
        self._action_sensor_fault(t, dict(p, value=0), item)

    def _action_grid_outage(self, t: int, p: dict, item: Item) -> None:
        """The port's power fails: for the cabinet, the same as its own feed cut (FOR_EVER: never back),
        and its mains sense, upstream of the feed, reads the mains down meanwhile."""
        self._action_power_cut(t, {"duration": max(p["duration"], 0)}, item)
        if self.cab.mains_sense:
            self._mains(t, 0)
            if p["duration"] > 0:
                self._mains(t + p["duration"], 1)

    def _mains(self, t: int, up: int) -> None:
        """The mains sense (a gateway input: read at once, never through the bus) reads ``up``."""
        self._at(t, SET, "sys.mains_up", up)
        self._at(t, SET, "sys.mains_down", 1 - up)

    def _action_theft_slow(self, t: int, p: dict, item: Item) -> None:
        d = p["duration"]
        self._at(t, SET, "io.door_bolt", 0)
        self._at(t + 20000, SET, "io.door_open", 1)
        self._ep(t, d - 10000, "vib", "gusty", p["rms_mg"], p["peak_mg"])   # work stops as the bolt engages
        n = p["modules"]
        for k in range(n):
            self._at(t + int(d * (0.25 + 0.6 * k / max(n - 1, 1))), MODULES, p["battery"], -1)
        self._at(t + d - 30000, SET, "io.door_open", 0)
        self._at(t + d - 10000, SET, "io.door_bolt", 1)

    def _action_command(self, t: int, p: dict, item: Item) -> None:
        self._cmd(t, p["name"], p["arg"])

    def _action_responder(self, t: int, p: dict, item: Item) -> None:
        """Nothing in the world: the response team's takeover is the scoring's (simulator/evaluate.py)."""

    # -- honest faults: nobody's act ----------------------------------------------
    def _action_loose_connector(self, t: int, p: dict, item: Item) -> None:
        rng = random.Random("{}/{}/{}".format(self.scn.seed, item.line, item.kind))
        end = t + p["duration"]
        for start in self._poisson(rng, 1.0 / p["every"], t, end):
            for dev in self._devices(p["device"]):
                self._force(start, dev + ".online", 0, max(self.scan, int(p["drop"] * rng.uniform(0.5, 1.5))))

    def _action_crc_burst(self, t: int, p: dict, item: Item) -> None:
        for dev in self._devices(p["device"]):
            for k in range(max(1, p["duration"] // 1000)):      # one failed poll a second
                self._at(t + 1000 * k, CRC, dev + ".comm_crc")
            if p["duration"] > 2000:                             # offline from the poller's second failed poll
                self._force(t + 2000, dev + ".online", 0, p["duration"] - 2000)

    def _action_bms_reboot(self, t: int, p: dict, item: Item) -> None:
        self._force(t, p["battery"] + ".online", 0, p["down"])

    def _action_glitch(self, t: int, p: dict, item: Item) -> None:
        self._at(t, GLITCH, p["signal"], p["value"])

    def _action_sensor_drift(self, t: int, p: dict, item: Item) -> None:
        self._bias(t, p["signal"], "ramp", p["value"], float(p["duration"]))

    def _action_sensor_offset(self, t: int, p: dict, item: Item) -> None:
        self._bias(t, p["signal"], "step", p["value"], 0.0, p["duration"])

    def _bias(self, t: int, signal: str, shape: str, a: float, b: float, length: int = 0) -> None:
        """A reading that is off by the episode's level (lasting, unless ``length``)."""
        self._ep(t, length or self.scn.duration_ms + 1 - t, "bias:" + signal, shape, a, b)

    # -- the stream -------------------------------------------------------------
    def stream(self) -> Iterator[tuple[int, list[tuple[int, int]], list[tuple[int, int]]]]:
        """Yield ``(t, changes, commands)`` at every scan where something happened."""
        return Stream(self).run()
