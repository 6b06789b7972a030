"""The cabinet's sensors in virtual time: a world's timeline
(simulator/world.py) sampled as its devices report it -- the I/O module
once per second (temperature and supply every 10 s), each BMS every 4 s and
at once after anything that changes its pack -- with faults forcing what
a signal reads.  ``Stream(world).run()`` is ``CabinetWorld.stream()``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import TYPE_CHECKING, Iterator

from drivers.modbus.profiles import BATTERY_SIGNALS, IO_SIGNALS

if TYPE_CHECKING:
    from simulator.scenario import Cabinet
    from simulator.world import CabinetWorld, Episode

IO_PERIOD_MS = 1000
IO_SLOW_EVERY = 10          # temperature and supply: every 10th I/O sample
BMS_PERIOD_MS = 4000
CELLS_PER_MODULE = 16
BMS_ALARM_POWER_LOST = 0x0004   # the BMS's own "DC link lost" event bit

# Discrete event operations.
SET, CMD, FORCE, RELEASE, MODULES, SERIAL, WINDOW, CRC, GLITCH, DUMMIES = range(10)
FREEZE = None                   # FORCE value: hold the last reported value
_NO_NAMES: frozenset[str] = frozenset()
_NO_SPREADS: dict[str, float] = {}
_NO_HEAT: dict[str, Episode] = {}


class _Battery:
    __slots__ = ("name", "soc", "temp", "modules", "serial", "alarm", "current", "idx", "fast_idx", "slow_idx",
                 "current_name", "dummies", "hot", "tau")

    def __init__(self, number: int, cab: Cabinet, index: dict[str, int]):
        name = self.name = "bms{}".format(number)
        self.soc = cab.soc_pct / 100.0
        self.temp = cab.temp_c + 2.0
        self.modules = cab.modules
        self.serial = cab.serial + number - 1
        self.alarm = 0
        self.current = 0.0
        self.idx = [index[name + "." + s[0]] for s in BATTERY_SIGNALS]
        self.fast_idx = tuple(self.idx[:7])     # sampled every time
        self.slow_idx = tuple(self.idx[7:])     # modules, serial, alarm bits: on events
        self.current_name = name + ".current_ma"
        self.dummies = 0                        # of ``modules``: dummy modules, no cells (module_insert dummy)
        self.hot = 0.0                          # a hot cell's rise above the pack, °C (hot_cell)
        self.tau = 1.0                          # its time constant, ms


class Stream:
    """The running state of one CabinetWorld's stream."""

    def __init__(self, world: CabinetWorld):
        self.w = world
        cat = world.catalog
        self.index = cat.index
        self.last: list[int | None] = [None] * cat.size
        self.truth: list[int | None] = [None] * cat.size    # what it would read unforced
        self.forced: dict[int, int | None] = {}
        self.bias: dict[int, list[Episode]] = {}      # signal -> its active drifts and offsets
        self.glitch: dict[int, int] = {}              # signal -> what its next measurement reads
        self.now = 0
        self.offline: set[str] = set()
        self.hidden: dict[str, set[int]] = {}   # offline device -> its signals set meanwhile
        self.windows: dict[str, int] = {}     # schedule signal -> windows open now
        cab = world.cab
        self.batteries = [_Battery(n, cab, cat.index) for n in range(1, cab.batteries + 1)]
        self.io_idx = [cat.index["io." + s[0]] for s in IO_SIGNALS]
        self.io_fast_idx = tuple(self.io_idx[3:7])    # vibration rms and peak, tilt, lift
        self.changes: list[tuple[int, int]] = []
        self.active: list[Episode] = []
        self.ep_next = 0
        self.active_end = 1 << 62          # the earliest end among the active episodes
        self.bms_t = 0
        self.cycle_next = 0
        self.cycles_active: list[tuple[int, int, float]] = []
        self.day0 = world.scn.week_ms(0) % 86400000     # local time of day at the start, ms

    def put(self, i: int, v: int) -> None:
        """Report what signal ``i`` reads now, unless a fault forces it."""
        self.report((i,), (v,))

    def report(self, idx: tuple[int, ...], values: tuple[int, ...]) -> None:
        """``put`` each signal of ``idx`` with its value in ``values``, in
        order (one call per device sample: the samplers are the hot path)."""
        truth, last, forced, changes, bias = self.truth, self.last, self.forced, self.changes, self.bias
        for k in range(len(idx)):
            i = idx[k]
            v = truth[i] = values[k]
            if bias and i in bias:
                v += int(sum(e.level(self.now) for e in bias[i]))
            if self.glitch and i in self.glitch:
                v = self.glitch.pop(i)
            if forced and i in forced:
                f = forced[i]
                v = f if f is not None else (last[i] if last[i] is not None else v)
            if v != last[i]:
                last[i] = v
                changes.append((i, v))

    def _emit(self, i: int, v: int) -> None:
        if v != self.last[i]:
            self.last[i] = v
            self.changes.append((i, v))

    def run(self) -> Iterator[tuple[int, list[tuple[int, int]], list[tuple[int, int]]]]:
        w = self.w
        events = w.events
        n_ev = len(events)
        ei = 0
        end = w.scn.duration_ms
        next_io = 0
        next_bms = 0
        io_count = 0
        while True:
            t = events[ei][0] if ei < n_ev else end + 1
            if next_io < t:
                t = next_io
            if t > end:
                return
            self.changes = []
            self.now = t
            cmds: list[tuple[int, int]] = []
            bms_event = False
            while ei < n_ev and events[ei][0] == t:
                bms_event |= self._apply(events[ei], cmds)
                ei += 1
            if t == next_io:
                self._sample_io(t, io_count % IO_SLOW_EVERY == 0)
                io_count += 1
                next_io += IO_PERIOD_MS
            if bms_event or t == next_bms:
                self._sample_bms(t, bms_event or t == 0)
                if t == next_bms:
                    next_bms += BMS_PERIOD_MS
            if self.changes or cmds:
                yield t, self.changes, cmds

    def _apply(self, ev: tuple, cmds: list[tuple[int, int]]) -> bool:
        """Apply one discrete event; True when the BMS must be re-sampled."""
        _t, _seq, op, a, b = ev
        if op == SET:
            dev = a.split(".")[0]
            if dev in self.offline:
                # Nobody reads a silent device: the change waits for its first answer.
                i = self.index[a]
                self.truth[i] = b
                self.hidden.setdefault(dev, set()).add(i)
            else:
                self.put(self.index[a], b)
        elif op == CMD:
            cmds.append((a, b))
        elif op == WINDOW:
            n = self.windows[a] = self.windows.get(a, 0) + b
            self.put(self.index[a], 1 if n > 0 else 0)
        elif op == CRC:
            i = self.index[a]
            self._emit(i, (self.last[i] or 0) + 1)
        elif op == GLITCH:
            self.glitch[self.index[a]] = b
        elif op == FORCE:
            i = self.index[a]
            self.forced[i] = b
            if a.endswith(".online"):
                self.offline.add(a[:-7])
            if b is not None:
                self._emit(i, b)
            return True
        elif op == RELEASE:
            i = self.index[a]
            self.forced.pop(i, None)
            if a.endswith(".online"):
                self.offline.discard(a[:-7])
            truth = self.truth[i]
            if truth is not None:
                self.put(i, truth)
            if a.endswith(".online"):
                for k in sorted(self.hidden.pop(a[:-7], ())):
                    self.put(k, self.truth[k])
            return True
        else:
            batt = self.batteries[int(a[3:]) - 1]
            if op == MODULES:
                batt.modules = max(0, batt.modules + b)
                batt.dummies = min(batt.dummies, batt.modules)
            elif op == DUMMIES:
                batt.dummies = max(0, min(batt.modules, batt.dummies + b))
            else:
                batt.serial = b
            return True
        return False

    def _sample_io(self, t: int, slow: bool) -> None:
        w = self.w
        eps = w.episodes
        active = self.active
        biased = False
        while self.ep_next < len(eps) and eps[self.ep_next].start <= t:
            e = eps[self.ep_next]
            active.append(e)
            if e.end < self.active_end:
                self.active_end = e.end
            self.ep_next += 1
            biased |= e.channel[0] == "b"
        if self.active_end <= t:
            biased |= bool(self.bias)
            active[:] = [e for e in active if e.end > t]
            self.active_end = min([e.end for e in active]) if active else 1 << 62
        if biased:
            self.bias = {}
            for e in active:
                if e.channel[0] == "b":
                    self.bias.setdefault(self.index[e.channel[5:]], []).append(e)
        rng = w.noise
        sq = 1.0 + 2.0 * rng.random()       # the sensor's own floor, about 1-1.7 mg
        peak = 3.0 + 3.0 * rng.random()
        tilt = 0.0
        lift = 0.0
        tio = 0.0
        for e in active:
            ch = e.channel
            if ch == "vib":
                r, p = e.vib(t, rng)
                sq += r * r
                if p > peak:
                    peak = p
            elif ch == "tilt":
                tilt += e.level(t)
            elif ch == "lift":
                lift += e.level(t)
            elif ch == "tio" and slow:        # only read with the slow values
                tio += e.level(t)
        if "io" in self.offline:
            return
        rms = math.sqrt(sq)
        self.report(self.io_fast_idx, (int(rms), int(peak if peak > rms else rms), int(tilt), int(lift)))
        if slow:
            self.put(self.io_idx[8], int(self._ambient(t) * 10 + 30 + tio))

    def _ambient(self, t: int) -> float:
        """Outside temperature: the cabinet's mean with a daily swing, and any weather front, °C."""
        day = (self.day0 + t) % 86400000 / 86400000.0
        front = sum(e.level(t) for e in self.active if e.channel == "amb") if self.w.fronts else 0.0
        return self.w.cab.temp_c + 4.0 * math.sin(6.2832 * (day - 0.375)) + front

    def _amps(self, t: int) -> float:
        """The planned pack current at ``t`` (+ discharge, - charge)."""
        w = self.w
        cyc = w.cycles
        while self.cycle_next < len(cyc) and cyc[self.cycle_next][0] <= t:
            self.cycles_active.append(cyc[self.cycle_next])
            self.cycle_next += 1
        amps = 0.0
        for c in self.cycles_active:
            if c[1] <= t:
                continue
            ramp = w.bms_ramp
            x = min(1.0, (t - c[0]) / ramp, (c[1] - t) / ramp)
            amps += c[2] * x
        if self.cycles_active and self.cycles_active[0][1] <= t:
            self.cycles_active = [c for c in self.cycles_active if c[1] > t]
        if amps:
            amps += w.noise.gauss(0.0, w.bms_noise)
        return amps

    def _sample_bms(self, t: int, event: bool) -> None:
        """Sample every pack; ``event``: also the slow values (modules,
        serial, alarm bits), which only discrete events change."""
        w = self.w
        cab = w.cab
        dt = (t - self.bms_t) / 1000.0
        self.bms_t = t
        amps = self._amps(t) if w.cycles else 0.0
        ambient = self._ambient(t)
        offsets = {}
        for e in self.active:
            if e.channel[0] == "t" and e.channel != "tilt" and e.channel != "tio":
                offsets[e.channel[1:]] = offsets.get(e.channel[1:], 0.0) + e.level(t)
        spreads, heat = self._cell_faults(t) if w.cells else (_NO_SPREADS, _NO_HEAT)
        cut = self._forced_names() if self.forced else _NO_NAMES
        for b in self.batteries:
            lost = b.current_name in cut
            i_now = 0.0 if lost else amps
            b.current = i_now
            b.soc = min(1.0, max(0.02, b.soc - i_now * dt / 3600.0 / cab.capacity_ah))
            b.temp += (ambient + 2.0 + 0.0015 * i_now * i_now - b.temp) * min(1.0, dt / 3600.0)
            if heat or b.hot:
                self._heat(b, heat.get(b.name), i_now, dt)
            if b.name in self.offline:
                continue
            module_mv = cab.module_mv * (0.92 + 0.16 * b.soc) - i_now * 2.0
            cells = b.modules - b.dummies
            pack = int(cells * module_mv)
            cell = module_mv / CELLS_PER_MODULE
            spread = 6 + abs(i_now) * 0.05 + (spreads.get(b.name, 0.0) / 2 if spreads else 0.0)
            temp = b.temp + offsets.get(b.name, 0.0) + b.hot
            self.report(b.fast_idx, (pack, int(i_now * 1000), int(b.soc * 100),
                                     int(cell + spread) if cells else 0, int(cell - spread) if cells else 0,
                                     int(temp * 10 + 5), int(b.temp * 10 - 5)))
            if event:
                self.report(b.slow_idx, (b.modules, b.serial, b.alarm | (BMS_ALARM_POWER_LOST if lost else 0)))

    def _cell_faults(self, t: int) -> tuple[dict[str, float], dict[str, Episode]]:
        """Per battery: a ``cell_imbalance``'s extra cell spread (mV) and a ``hot_cell``'s fault now."""
        spreads: dict[str, float] = {}
        heat: dict[str, Episode] = {}
        for e in self.active:
            if e.channel[0] == "s":
                spreads[e.channel[1:]] = spreads.get(e.channel[1:], 0.0) + e.level(t)
            elif e.channel[0] == "h" and e.end > t:
                heat[e.channel[1:]] = e
        return spreads, heat

    @staticmethod
    def _heat(b: _Battery, fault: Episode | None, amps: float, dt: float) -> None:
        """A hot cell moves towards its fault's heat per A² × A² with the fault's
        time constant; once repaired it cools back with the same constant."""
        if fault is not None:
            b.tau = fault.b
        target = fault.a * amps * amps if fault is not None else 0.0
        b.hot += (target - b.hot) * min(1.0, dt * 1000.0 / b.tau)

    def _forced_names(self) -> set[str]:
        names = self.w.catalog.names
        return {names[i] for i in self.forced}
