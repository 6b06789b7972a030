"""The cabinet's sensors in virtual time: a world's timeline
(simulator/world.py) sampled as its devices report it -- the I/O module
once per second (temperature and supply every 10 s), each BMS every 4 s and
at once after anything that changes its pack -- with faults forcing what
a signal reads.  ``Stream(world).run()`` is ``CabinetWorld.stream()``.
"""

from __future__ import annotations

from math import sin, sqrt
from typing import TYPE_CHECKING, Iterator

from drivers.modbus.profiles import BATTERY_SIGNALS, IO_SIGNALS

if TYPE_CHECKING:
    from simulator.scenario import Cabinet
    from simulator.world import CabinetWorld, Episode

IO_PERIOD_MS = 1000
IO_SLOW_EVERY = 10          # temperature and supply: every 10th I/O sample
BMS_PERIOD_MS = 4000
CELLS_PER_MODULE = 16        # cells in series in a module: what bms16-vendor states, a SunSpec 805 NCell reads
BMS_ALARM_POWER_LOST = 0x0004   # the BMS's own "DC link lost" event bit

# Discrete event operations.
SET, CMD, FORCE, RELEASE, MODULES, SERIAL, WINDOW, CRC, GLITCH, DUMMIES = range(10)
FREEZE = None                   # FORCE value: hold the last reported value
_NO_SPREADS: dict[str, float] = {}
_NO_HEAT: dict[str, Episode] = {}
_NO_OFFSETS: dict[str, float] = {}


class _Battery:
    __slots__ = ("name", "soc", "temp", "modules", "serial", "alarm", "current", "electric_idx", "temp_idx", "slow_idx",
                 "current_idx", "electric", "dummies", "hot", "tau")

    def __init__(self, number: int, cab: Cabinet, index: dict[str, int]):
        name = self.name = "bms{}".format(number)
        self.soc = cab.soc_pct / 100.0
        self.temp = cab.temp_c + 2.0
        self.modules = cab.modules
        self.serial = cab.serial + number - 1
        self.alarm = 0
        self.current = 0.0
        idx = [index[name + "." + s[0]] for s in BATTERY_SIGNALS]
        self.electric_idx = tuple(idx[:5])     # sampled every time: pack, current, soc, cell extremes,
        self.temp_idx = tuple(idx[5:7])        # temperatures
        self.slow_idx = tuple(idx[7:])     # modules, serial, alarm bits, cells per module: on events
        self.current_idx = index[name + ".current_ma"]
        # (soc, modules, current, dummies, extra spread, what _electric made of them):
        # reported again only when it changes
        self.electric: tuple | None = None
        self.dummies = 0                        # of ``modules``: dummy modules, no cells (module_insert dummy)
        self.hot = 0.0                          # a hot cell's rise above the pack, °C (hot_cell)
        self.tau = 1.0                          # its time constant, ms


class Stream:
    """The running state of one CabinetWorld's stream.

    Speed (``cabguard eval`` samples every second of every cabinet): the
    active episodes are kept by channel, grouped again only when one starts
    or ends; a signal that no fault, bias or glitch touches (none in
    ``special``) is reported as measured, without looking further; a
    pack at rest is not computed again.  The noise is drawn in the same
    order as ever, so a scenario's stream does not depend on any of this.
    """

    def __init__(self, world: CabinetWorld):
        self.w = world
        self.rng = world.noise
        self.rnd = world.noise.random
        cat = world.catalog
        self.index = cat.index
        self.last: list[int | None] = [None] * cat.size
        self.truth: list[int | None] = [None] * cat.size    # what it would read unforced
        self.forced: dict[int, int | None] = {}
        self.bias: dict[int, list[Episode]] = {}      # signal -> its active drifts and offsets
        self.glitch: dict[int, int] = {}              # signal -> what its next measurement reads
        self.special: set[int] = set()                # signals forced, biased or glitched
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
        # The active episodes by channel, each in the order they started.
        self.vib: list[Episode] = []
        self.tilt: list[Episode] = []
        self.lift: list[Episode] = []
        self.tio: list[Episode] = []
        self.amb: list[Episode] = []
        self.packs: list[tuple[str, Episode]] = []    # (battery, episode) of pack temperature offsets
        self.ep_next = 0
        self.ep_due = world.episodes[0].start if world.episodes else 1 << 62   # next start or end
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
        truth, last, changes, special = self.truth, self.last, self.changes, self.special
        if special:
            for i, v in zip(idx, values):
                truth[i] = v
                if i in special:
                    v = self._faulted(i, v)
                if v != last[i]:
                    last[i] = v
                    changes.append((i, v))
            return
        for i, v in zip(idx, values):       # no fault anywhere: the common case, without the test
            truth[i] = v
            if v != last[i]:
                last[i] = v
                changes.append((i, v))

    def _faulted(self, i: int, v: int) -> int:
        """What signal ``i`` reads for the measured ``v``: biased, glitched, forced."""
        bias = self.bias.get(i)
        if bias:
            v += int(sum(e.level(self.now) for e in bias))
        if i in self.glitch:
            v = self.glitch.pop(i)
            self._specials()
        forced = self.forced
        if i in forced:
            f = forced[i]
            last = self.last[i]
            v = f if f is not None else (last if last is not None else v)
        return v

    def _specials(self) -> None:
        """A fault came or went: the fast path's set, and every pack measured again in full."""
        self.special = set(self.forced) | set(self.glitch) | set(self.bias)
        for b in self.batteries:
            b.electric = None

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
        never = end + 1
        ev_t = events[0][0] if n_ev else never
        next_io = 0
        next_bms = 0
        io_count = 0
        apply, sample_io, sample_bms = self._apply, self._sample_io, self._sample_bms
        while True:
            t = ev_t if ev_t < next_io else next_io
            if t > end:
                return
            changes = self.changes = []
            self.now = t
            cmds: list[tuple[int, int]] = []
            bms_event = False
            if ev_t == t:
                while ei < n_ev and events[ei][0] == t:
                    bms_event |= apply(events[ei], cmds)
                    ei += 1
                ev_t = events[ei][0] if ei < n_ev else never
            if t == next_io:
                sample_io(t, io_count % IO_SLOW_EVERY == 0)
                io_count += 1
                next_io += IO_PERIOD_MS
            if bms_event or t == next_bms:
                sample_bms(t, bms_event or t == 0)
                if t == next_bms:
                    next_bms += BMS_PERIOD_MS
            if changes or cmds:
                yield t, changes, cmds

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
            self._specials()
        elif op == FORCE:
            i = self.index[a]
            self.forced[i] = b
            self._specials()
            if a.endswith(".online"):
                self.offline.add(a[:-7])
            if b is not None:
                self._emit(i, b)
            return True
        elif op == RELEASE:
            i = self.index[a]
            self.forced.pop(i, None)
            self._specials()
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

    def _episodes(self, t: int) -> None:
        """Episodes that start by ``t`` join the active ones; those ended leave."""
        eps = self.w.episodes
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
            self._specials()
        by = {"vib": [], "tilt": [], "lift": [], "tio": [], "amb": []}
        packs = []
        for e in active:
            ch = e.channel
            if ch in by:
                by[ch].append(e)
            elif ch[0] == "t":                # "t<battery>": a pack's temperature offset
                packs.append((ch[1:], e))
        self.vib, self.tilt, self.lift, self.tio, self.amb = by["vib"], by["tilt"], by["lift"], by["tio"], by["amb"]
        self.packs = packs
        nxt = eps[self.ep_next].start if self.ep_next < len(eps) else 1 << 62
        self.ep_due = nxt if nxt < self.active_end else self.active_end

    def _sample_io(self, t: int, slow: bool) -> None:
        if self.ep_due <= t:
            self._episodes(t)
        rng = self.rng
        rnd = self.rnd
        sq = 1.0 + 2.0 * rnd()       # the sensor's own floor, about 1-1.7 mg
        peak = 3.0 + 3.0 * rnd()
        for e in self.vib:
            if e.shape == "burst":      # inline: the wind's, all month long
                r, p = e.a * (0.9 + 0.2 * rnd()), e.b * (0.8 + 0.2 * rnd())
            else:
                r, p = e.vib(t, rng)
            sq += r * r
            if p > peak:
                peak = p
        if "io" in self.offline:
            return
        rms = sqrt(sq)
        v_rms = int(rms)
        v_peak = int(peak if peak > rms else rms)
        v_tilt = v_lift = 0         # (no episode: most seconds; levels draw no noise)
        if self.tilt:
            tilt = 0.0
            for e in self.tilt:
                tilt += e.level(t)
            v_tilt = int(tilt)
        if self.lift:
            lift = 0.0
            for e in self.lift:
                lift += e.level(t)
            v_lift = int(lift)
        if self.special:
            self.report(self.io_fast_idx, (v_rms, v_peak, v_tilt, v_lift))
        else:
            # report()'s case without faults, written out: this runs every
            # second of every cabinet, and tilt and lift rarely move.
            truth, last, changes = self.truth, self.last, self.changes
            i_rms, i_peak, i_tilt, i_lift = self.io_fast_idx
            truth[i_rms] = v_rms
            if v_rms != last[i_rms]:
                last[i_rms] = v_rms
                changes.append((i_rms, v_rms))
            truth[i_peak] = v_peak
            if v_peak != last[i_peak]:
                last[i_peak] = v_peak
                changes.append((i_peak, v_peak))
            truth[i_tilt] = v_tilt
            if v_tilt != last[i_tilt]:
                last[i_tilt] = v_tilt
                changes.append((i_tilt, v_tilt))
            truth[i_lift] = v_lift
            if v_lift != last[i_lift]:
                last[i_lift] = v_lift
                changes.append((i_lift, v_lift))
        if slow:
            tio = 0.0                   # only read with the slow values
            for e in self.tio:
                tio += e.level(t)
            self.put(self.io_idx[8], int(self._ambient(t) * 10 + 30 + tio))

    def _ambient(self, t: int) -> float:
        """Outside temperature: the cabinet's mean with a daily swing, and any weather front, °C."""
        day = (self.day0 + t) % 86400000 / 86400000.0
        front = sum(e.level(t) for e in self.amb) if self.w.fronts else 0.0
        return self.w.cab.temp_c + 4.0 * sin(6.2832 * (day - 0.375)) + front

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
        warm = self._ambient(t) + 2.0           # where a pack at rest settles, °C
        offsets = _NO_OFFSETS
        if self.packs:
            offsets = {}
            for name, e in self.packs:
                offsets[name] = offsets.get(name, 0.0) + e.level(t)
        spreads, heat = self._cell_faults(t) if w.cells else (_NO_SPREADS, _NO_HEAT)
        forced, offline, report, special = self.forced, self.offline, self.report, self.special
        last, truth = self.last, self.truth
        settle = min(1.0, dt / 3600.0)          # how far a pack's temperature follows in dt
        capacity = cab.capacity_ah
        for b in self.batteries:
            name = b.name
            lost = b.current_idx in forced
            i_now = 0.0 if lost else amps
            b.current = i_now
            soc = b.soc - i_now * dt / 3600.0 / capacity
            b.soc = soc = 1.0 if soc > 1.0 else (soc if soc > 0.02 else 0.02)
            temp = b.temp = b.temp + (warm + 0.0015 * i_now * i_now - b.temp) * settle
            if heat or b.hot:
                self._heat(b, heat.get(name), i_now, dt)
            if name in offline:
                continue
            extra = spreads.get(name, 0.0) / 2 if spreads else 0.0
            key = b.electric
            if (key is None or key[0] != soc or key[2] != i_now or key[1] != b.modules
                    or key[3] != b.dummies or key[4] != extra):
                b.electric = (soc, b.modules, i_now, b.dummies, extra,
                              self._electric(b.modules - b.dummies, soc, i_now, extra))
                report(b.electric_idx, b.electric[5])
            elif special:                       # unchanged, but a fault may read them otherwise
                report(b.electric_idx, key[5])
            if offsets or b.hot:
                t_max = int((temp + offsets.get(name, 0.0) + b.hot) * 10 + 5)
            else:                               # (temp + 0.0 + 0.0 is temp)
                t_max = int(temp * 10 + 5)
            t_min = int(temp * 10 - 5)
            i_max, i_min = b.temp_idx
            # (a pack's temperatures move a tenth of a degree now and then:
            # report() only when it could change something)
            if (special or t_max != last[i_max] or t_min != last[i_min] or t_max != truth[i_max]
                    or t_min != truth[i_min]):
                report(b.temp_idx, (t_max, t_min))
            if event:
                report(b.slow_idx, (b.modules, b.serial, b.alarm | (BMS_ALARM_POWER_LOST if lost else 0),
                                    CELLS_PER_MODULE))

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

    def _electric(self, cells: int, soc: float, i_now: float, extra: float) -> tuple[int, ...]:
        """A pack's pack voltage, current, state of charge and cell extremes from its
        ``cells`` (modules that have cells: not dummies) and ``extra`` cell spread
        (unchanged while it rests: computed again only when one of its inputs moves)."""
        module_mv = self.w.cab.module_mv * (0.92 + 0.16 * soc) - i_now * 2.0
        cell = module_mv / CELLS_PER_MODULE
        spread = 6 + abs(i_now) * 0.05 + extra
        return (int(cells * module_mv), int(i_now * 1000), int(soc * 100),
                int(cell + spread) if cells else 0, int(cell - spread) if cells else 0)
