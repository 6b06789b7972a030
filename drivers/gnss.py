"""A GNSS receiver on a serial port: NMEA 0183 sentences in, fixes out.

``parse_gga`` reads one ``$..GGA`` sentence with pynmea2 (the ``gnss``
extra; its checksum is checked) into a ``Fix``: fix quality (0 none,
1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning), satellites
used, HDOP, latitude and longitude.  Other sentences are not needed and
are skipped.  A receiver on the Modbus bus (class ``gnss_receiver``,
drivers/profiles/gnss-modbus.toml) gives the same fields as decoded
signals, which ``fix_from_signals`` makes the same ``Fix``.

``NmeaReader`` is one thread that owns the port (a serial device, or the
simulator's pty): it reads lines, keeps the fixes in a bounded deque for
the scan loop to drain (``drain``: no lock held, never blocks), and
reopens a port that fails, with backoff, counting what it could not read.

``PositionTrack`` turns fixes into the cabinet's filtered distance from
its surveyed place, and a score of how steadily it moves away, for the
gateway (controller/gateway/position.py) and the simulator's world alike.
"""

from __future__ import annotations

import collections
import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

import serial

from drivers.errors import DriverError


class GnssError(DriverError):
    """A GNSS port or sentence that cannot be used; names the port or the sentence."""


@dataclass(frozen=True)
class Fix:
    quality: int        # GGA fix quality: 0 = no fix
    sats: int
    hdop_x100: int      # HDOP x 100 (9999 when the receiver gives none)
    lat: float          # degrees, north positive
    lon: float          # degrees, east positive
    at_ms: int          # monotonic ms when the sentence was read


def parse_gga(line: str, at_ms: int) -> Fix | None:
    """A fix from a GGA sentence, None for any other sentence; GnssError for a bad one."""
    import pynmea2      # the gnss extra: only a site with a receiver needs it
    text = line.strip()
    if len(text) < 6 or text[0] != "$" or text[3:6] != "GGA":
        return None
    try:
        msg = pynmea2.parse(text, check=True)
        quality = int(msg.gps_qual or 0)
        sats = int(msg.num_sats or 0)
        hdop = float(msg.horizontal_dil) if msg.horizontal_dil else 99.99
        lat, lon = (msg.latitude, msg.longitude) if quality else (0.0, 0.0)
    except (pynmea2.ParseError, ValueError, TypeError, AttributeError) as e:
        raise GnssError("sentence {!r}: {}".format(text[:82], e)) from None
    return Fix(quality, sats, min(9999, round(hdop * 100)), lat, lon, at_ms)


def fix_from_signals(values: dict[str, int], at_ms: int) -> Fix:
    """The ``Fix`` of a ``gnss_receiver`` device's decoded signals (``lat``/``lon`` in 1e-7 degrees)."""
    quality = values["fix"]
    lat, lon = (values["lat"] / 1e7, values["lon"] / 1e7) if quality else (0.0, 0.0)
    return Fix(quality, values["sats"], min(9999, values["hdop"]), lat, lon, at_ms)


class NmeaReader:
    """Reads fixes from ``port`` on its own thread."""

    def __init__(self, port: str, baud: int = 9600, clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
                 opener: Callable[[str, int], object] | None = None):
        self.port, self.baud = port, baud
        self.clock_ms = clock_ms
        self.opener = opener or (lambda p, b: serial.Serial(p, b, timeout=0.5))
        self.fixes: collections.deque[Fix] = collections.deque(maxlen=64)
        self.bad = 0            # sentences that failed their checksum or did not parse
        self.port_errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gnss", daemon=True)

    def start(self) -> "NmeaReader":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(2)

    def drain(self) -> list[Fix]:
        out = []
        while self.fixes:
            out.append(self.fixes.popleft())
        return out

    def _run(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                port = self.opener(self.port, self.baud)
            except (OSError, serial.SerialException):
                self.port_errors += 1
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            try:
                self._read(port)
            except (OSError, serial.SerialException):
                self.port_errors += 1
            finally:
                port.close()

    def _read(self, port) -> None:
        while not self.stopping.is_set():
            raw = port.readline()
            if not raw:
                continue
            try:
                fix = parse_gga(raw.decode("ascii", "replace"), self.clock_ms())
            except GnssError:
                self.bad += 1
                continue
            if fix is not None:
                self.fixes.append(fix)


# ---- the position track: fixes in, a filtered distance from the surveyed place out ----

EARTH_M = 6_371_000.0
ACCEL_MPS2 = 3.0
SIGMA_PER_HDOP_M = 0.7
SURVEY_MIN_FIXES = 30
AWAY_ALLOWANCE_PER_HDOP_MPS = 0.25
AWAY_CLIP_MPS = 2.0


@dataclass(frozen=True)
class TrackSettings:
    fresh_ms: int = 5_000
    max_hdop_x100: int = 500
    max_speed_mps: float = 15.0
    reacquire_ms: int = 30_000


def offset_m(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """(east, north) metres from (lat0, lon0): equirectangular, exact enough within kilometres."""
    east = math.radians(lon - lon0) * EARTH_M * math.cos(math.radians(lat0))
    north = math.radians(lat - lat0) * EARTH_M
    return east, north


def err_m(hdop_x100: int) -> float:
    """A fix's error allowance: 2 m x HDOP."""
    return 2.0 * hdop_x100 / 100


class PositionTrack:
    """The filtered position of a cabinet that should not move (docs/config.md, "Position").

    On fixes with a fix and HDOP <= ``max_hdop``:

    1. a motion gate: the track predicts the next fix from its velocity
       (over the last accepted fixes, at most ``max_speed``); a fix further
       from the prediction than a vehicle can get by accelerating
       (``ACCEL_MPS2``) plus 3 sigma of jitter (0.7 m x HDOP) plus a metre
       is a jump (multipath off a container stack or a hull, not a cabinet
       on a truck) and is ignored.  The HDOP is the lower of the fix's and
       the last accepted fix's: a fix whose geometry suddenly got worse (a
       blocked sky, the multipath case) does not widen its own gate.  While fixes are ignored the gate does
       not widen with the time since the last good one ...
    2. ... until no fix has passed it for ``reacquire_ms``: then the newest
       fix is taken as it is (after a long outage the cabinet may really
       be elsewhere: the rule then decides);
    3. the filtered position is the per-axis median of the last 3 accepted
       fixes (one stray fix that slipped through moves nothing);
    4. the away score: a cumulative sum (CUSUM) over the accepted fixes of
       the filtered position's outward speed from its anchor, clipped to
       +-``AWAY_CLIP_MPS``, less the jitter's allowance
       ``AWAY_ALLOWANCE_PER_HDOP_MPS`` x HDOP, divided by the HDOP, never
       below 0.  The anchor is the filtered position where the score last
       stood at 0: where the cabinet rested, jitter and all.  Outward from
       the surveyed place instead, a walk that starts from a jitter offset
       metres to its side counts only its cosine, or nothing while it
       passes the place.  A cabinet walked or driven away adds to it every
       second; jitter (a random walk about the place) keeps it near 0; a
       multipath jump that got through the gate is one step, which the clip
       makes worth at most one second of a walk, and its return takes the
       score back to 0.  It restarts with the track.

    ``values(now_ms)`` gives the ``pos.*`` signals' values by short name.
    """

    def __init__(self, settings: TrackSettings, surveyed: tuple[float, float] | None = None):
        self.s = settings
        self.surveyed = surveyed
        self.last_ms: int | None = None       # newest sentence
        self.newest: Fix | None = None
        self.accepted: collections.deque[tuple[float, float]] = collections.deque(maxlen=3)
        self.track: collections.deque[tuple[int, float, float]] = collections.deque(maxlen=4)
        self.estimate: tuple[float, float] | None = None   # filtered (east, north) from the survey
        self.accepted_ms = 0
        self.accepted_hdop_x100 = 0
        self.recent: collections.deque[Fix] = collections.deque(maxlen=600)   # good fixes, for a survey
        self.jumps = 0
        self.away = 0.0                         # the away score (4. above)
        self.anchor: tuple[float, float] = (0.0, 0.0)     # where the away score last stood at 0
        self.away_from: tuple[int, tuple[float, float]] | None = None   # (ms, estimate) it last used

    def feed(self, fix: Fix) -> None:
        self.last_ms = fix.at_ms
        self.newest = fix
        if fix.quality <= 0 or fix.hdop_x100 > self.s.max_hdop_x100:
            return
        self.recent.append(fix)
        if self.surveyed is None:
            return
        here = offset_m(self.surveyed[0], self.surveyed[1], fix.lat, fix.lon)
        if self.track and fix.at_ms - self.accepted_ms < self.s.reacquire_ms:
            if math.dist(here, self._predict(fix.at_ms)) > self._gate(fix):
                self.jumps += 1
                return
        else:
            self.accepted.clear()
            self.track.clear()
            self.away, self.away_from = 0.0, None
        self.accepted.append(here)
        self.track.append((fix.at_ms, here[0], here[1]))
        self.accepted_ms = fix.at_ms
        self.accepted_hdop_x100 = fix.hdop_x100
        self.estimate = (statistics.median(p[0] for p in self.accepted), statistics.median(p[1] for p in self.accepted))
        self._score_away(fix)

    def _score_away(self, fix: Fix) -> None:
        if self.away_from is not None and fix.at_ms > self.away_from[0]:
            dt = (fix.at_ms - self.away_from[0]) / 1000
            outward = math.dist(self.estimate, self.anchor) - math.dist(self.away_from[1], self.anchor)
            speed = max(-AWAY_CLIP_MPS, min(AWAY_CLIP_MPS, outward / dt))
            hdop = fix.hdop_x100 / 100
            self.away = max(0.0, self.away + (speed - AWAY_ALLOWANCE_PER_HDOP_MPS * hdop) * dt / hdop)
        if self.away == 0.0:
            self.anchor = self.estimate
        self.away_from = (fix.at_ms, self.estimate)

    def _predict(self, at_ms: int) -> tuple[float, float]:
        """Where the track would be at ``at_ms``: the last accepted fix moved on at its velocity."""
        t1, e1, n1 = self.track[-1]
        t0, e0, n0 = self.track[0]
        span = (t1 - t0) / 1000
        ve, vn = ((e1 - e0) / span, (n1 - n0) / span) if span > 0 else (0.0, 0.0)
        speed = math.hypot(ve, vn)
        if speed > self.s.max_speed_mps:
            ve, vn = ve * self.s.max_speed_mps / speed, vn * self.s.max_speed_mps / speed
        dt = min(1.0, (at_ms - t1) / 1000)       # no wider for the fixes ignored meanwhile
        return e1 + ve * dt, n1 + vn * dt

    def _gate(self, fix: Fix) -> float:
        hdop = min(fix.hdop_x100, self.accepted_hdop_x100) / 100
        return ACCEL_MPS2 / 2 + 3 * SIGMA_PER_HDOP_M * hdop + 1.0

    def values(self, now_ms: int) -> dict[str, int]:
        online = self.last_ms is not None and now_ms - self.last_ms <= self.s.fresh_ms
        fix = self.newest if online else None
        return {
            "online": 1 if online else 0,
            "fix": fix.quality if fix else 0,
            "sats": fix.sats if fix else 0,
            "hdop": fix.hdop_x100 if fix else 0,
            "surveyed": 1 if self.surveyed is not None else 0,
            "dist_m": round(math.hypot(*self.estimate)) if fix and self.estimate else 0,
            "err_m": math.ceil(err_m(fix.hdop_x100)) if fix else 0,
            "away": round(self.away * 100) if fix and self.estimate else 0,
        }

    def survey(self, now_ms: int, span_ms: int = 60_000) -> tuple[float, float, int, float]:
        """The mean of the good fixes of the last ``span_ms``: (lat, lon, fixes, spread in m)."""
        fixes = [f for f in self.recent if now_ms - f.at_ms <= span_ms]
        if len(fixes) < SURVEY_MIN_FIXES:
            raise GnssError("only {} good fixes (a fix, HDOP <= {:.1f}) in the last {} s; need {}: "
                            "wait for the receiver to settle under open sky".format(
                                len(fixes), self.s.max_hdop_x100 / 100, span_ms // 1000, SURVEY_MIN_FIXES))
        lat = statistics.fmean(f.lat for f in fixes)
        lon = statistics.fmean(f.lon for f in fixes)
        spread = max(math.hypot(*offset_m(lat, lon, f.lat, f.lon)) for f in fixes)
        self.surveyed = (lat, lon)
        self.estimate = None
        self.accepted.clear()
        self.track.clear()
        self.away, self.away_from = 0.0, None
        return lat, lon, len(fixes), spread
