"""A simulated GNSS receiver at a port: fix quality, jitter, multipath, a cabinet carried away.

``PortGnss(seed, ...)`` yields one fix per second (``fix_at(t_s)``, t in
whole seconds from 0, called in order) of a receiver on a cabinet at
``(lat, lon)``:

- HDOP wanders between 1 and 4 (a random walk, reflected at the ends);
- the error is time-correlated, per axis: an AR(1) process with a 30 s
  time constant and a standard deviation of 0.7 m x HDOP, as standalone
  GPS in open sky;
- multipath bursts, on average one an hour: for 1 to 20 s the position is
  off by 10 to 60 m in one direction (a reflection off a container stack,
  a crane or a hull).  In 60 % of them the receiver also sees fewer
  satellites and HDOP rises to 4.5-9 (blocked sky); in the rest HDOP
  stays as it was;
- fix outages, on average one every 6 h: 5 to 60 s with no fix;
- ``carry(start_s, speed_mps, distance_m)``: from ``start_s`` the cabinet
  moves away in a straight line, accelerating at 1.5 m/s² (a loaded
  forklift or truck) to ``speed_mps``, until ``distance_m`` out.

``gga(fix, t_s)`` is the NMEA 0183 GGA sentence of a fix (pynmea2 writes
it, checksum included), for a receiver on a pty; ``receiver_signals(fix,
t_s)`` are the signals of a receiver on the Modbus bus (class
``gnss_receiver``), which a ``SimDevice`` of its profile encodes into its
registers, and ``ModbusReceiver`` plays the model into such a device, one
fix a period, so the gateway polls it on the simulated wire.  The numbers are the
model's, stated in docs/simulator.md; the figures (``cabguard bench
--only senses``) say what the position filter makes of them.
"""

from __future__ import annotations

import math
import random
import threading

from drivers.gnss import Fix
from simulator.slave import SimDevice

SIGMA_PER_HDOP_M = 0.7
TAU_S = 30.0
BURST_PER_S = 1 / 3600
OUTAGE_PER_S = 1 / (6 * 3600)
EARTH_M = 6_371_000.0
CARRY_ACCEL_MPS2 = 1.5
_AR = math.exp(-1 / TAU_S)              # the error's AR(1) step, per second
_AR_NOISE = math.sqrt(1 - _AR * _AR)


class PortGnss:
    def __init__(self, seed: int, lat: float = 51.9496, lon: float = 4.1453):
        self.rng = random.Random(seed)
        self.lat0, self.lon0 = lat, lon
        self.lon_m = EARTH_M * math.cos(math.radians(lat))      # metres per radian of longitude here
        self.hdop = 1.5
        self.err = [0.0, 0.0]
        self.burst_until = -1
        self.burst = (0.0, 0.0, False)     # east, north offset; HDOP raised
        self.outage_until = -1
        self.carries: list[tuple[int, float, float, float]] = []
        self.bursts = 0

    def carry(self, start_s: int, speed_mps: float, distance_m: float, bearing_deg: float = 60.0) -> None:
        self.carries.append((start_s, speed_mps, distance_m, math.radians(bearing_deg)))

    def moved_m(self, t_s: float) -> tuple[float, float]:
        east = north = 0.0
        for start, speed, dist, bearing in self.carries:
            t = max(0.0, t_s - start)
            ramp = speed / CARRY_ACCEL_MPS2
            d = CARRY_ACCEL_MPS2 * t * t / 2 if t < ramp else speed * ramp / 2 + speed * (t - ramp)
            d = min(dist, d)
            east += d * math.sin(bearing)
            north += d * math.cos(bearing)
        return east, north

    def fix_at(self, t_s: int, at_ms: int | None = None) -> Fix:
        """The fix of second ``t_s``, read at ``at_ms`` (default: ``t_s`` in ms)."""
        rng = self.rng
        self.hdop = min(4.0, max(1.0, self.hdop + rng.gauss(0, 0.05)))
        sigma = SIGMA_PER_HDOP_M * self.hdop
        err = self.err
        err[0] = _AR * err[0] + _AR_NOISE * rng.gauss(0, sigma)
        err[1] = _AR * err[1] + _AR_NOISE * rng.gauss(0, sigma)
        if t_s >= self.burst_until and rng.random() < BURST_PER_S:
            self.bursts += 1
            self.burst_until = t_s + rng.randint(1, 20)
            off, bearing = rng.uniform(10, 60), rng.uniform(0, 2 * math.pi)
            self.burst = (off * math.sin(bearing), off * math.cos(bearing), rng.random() < 0.6)
        if t_s >= self.outage_until and rng.random() < OUTAGE_PER_S:
            self.outage_until = t_s + rng.randint(5, 60)
        east, north = self.moved_m(t_s) if self.carries else (0.0, 0.0)
        east += err[0]
        north += err[1]
        hdop, sats = self.hdop, 9 + int(3 / self.hdop)
        if t_s < self.burst_until:
            east += self.burst[0]
            north += self.burst[1]
            if self.burst[2]:
                hdop, sats = rng.uniform(4.5, 9.0), 5
        if at_ms is None:
            at_ms = t_s * 1000
        if t_s < self.outage_until:
            return Fix(0, 3, 9999, 0.0, 0.0, at_ms)
        lat = self.lat0 + math.degrees(north / EARTH_M)
        lon = self.lon0 + math.degrees(east / self.lon_m)
        return Fix(1, sats, round(hdop * 100), lat, lon, at_ms)


def _dm(value: float, degree_digits: int) -> str:
    """Degrees as NMEA's dddmm.mmmm."""
    value = abs(value)
    deg = int(value)
    return "{:0{}d}{:07.4f}".format(deg, degree_digits, (value - deg) * 60)


def gga(fix: Fix, t_s: int) -> str:
    import pynmea2
    hh, mm, ss = (t_s // 3600) % 24, (t_s // 60) % 60, t_s % 60
    fields = ("{:02d}{:02d}{:02d}.00".format(hh, mm, ss),
              _dm(fix.lat, 2) if fix.quality else "", ("N" if fix.lat >= 0 else "S") if fix.quality else "",
              _dm(fix.lon, 3) if fix.quality else "", ("E" if fix.lon >= 0 else "W") if fix.quality else "",
              str(fix.quality), "{:02d}".format(fix.sats), "{:.1f}".format(fix.hdop_x100 / 100),
              "5.0", "M", "47.0", "M", "", "")
    return str(pynmea2.GGA("GP", "GGA", fields))


def receiver_signals(fix: Fix, t_s: int) -> dict[str, int]:
    """A ``gnss_receiver`` device's signals for ``fix`` at second ``t_s`` of the UTC day count."""
    lat, lon = (round(fix.lat * 1e7), round(fix.lon * 1e7)) if fix.quality else (0, 0)
    return {"utc_ms": t_s * 1000 % 86_400_000, "fix": fix.quality, "sats": fix.sats,
            "hdop": fix.hdop_x100, "lat": lat, "lon": lon}


class ModbusReceiver:
    """Plays ``gnss`` into ``device`` (a ``SimDevice`` of a ``gnss_receiver`` profile) on its own
    thread: the model's fix of second t every ``period_s`` (1 s as a receiver; shorter to run a
    test faster), from second ``first_s``."""

    def __init__(self, device: SimDevice, gnss: PortGnss, period_s: float = 1.0, first_s: int = 0):
        self.device, self.gnss, self.period_s = device, gnss, period_s
        self.t = first_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gnss-receiver", daemon=True)

    def start(self) -> "ModbusReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.device.set(**receiver_signals(self.gnss.fix_at(self.t), self.t))
            self.t += 1
            self.stopping.wait(self.period_s)
