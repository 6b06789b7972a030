"""Position: GNSS fixes onto the image as ``pos.*``, filtered for a steel-walled port.

The surveyed position is where the cabinet stands (console ``pos survey``
at commissioning, kept in ``<state_dir>/position.json``).  Each scan the
fixes read since the last one are filtered and the image gets:

    pos.online    a sentence within ``fresh_s`` (a receiver unplugged or
                  silent is known dead; never heard: 0)
    pos.fix       the GGA fix quality of the newest fix (0 = no fix)
    pos.sats      satellites used
    pos.hdop      HDOP x 100
    pos.surveyed  1 once a surveyed position exists
    pos.dist_m    metres from the surveyed position, of the filtered position
    pos.err_m     the filter's error allowance: ``2 x hdop`` metres (a
                  receiver's horizontal error is about 0.7 m x HDOP per axis
                  in open sky), for a rule's HDOP-aware threshold

The filter, on fixes with a fix and HDOP <= ``max_hdop``:

1. a motion gate: the track predicts the next fix from its velocity
   (over the last accepted fixes, at most ``max_speed``); a fix further
   from the prediction than a vehicle can get by accelerating
   (``ACCEL_MPS2``, 3 m/s²) plus 3 sigma of jitter (0.7 m x HDOP) plus a
   metre is a jump: multipath off a container stack or a hull, not a
   cabinet on a truck, and is ignored.  While fixes are ignored the gate
   does not widen with the time since the last good one (a jump that
   persists is still a jump) ...
2. ... until no fix has passed the gate for ``reacquire_s``: then the
   newest fix is taken as it is (after a long outage or a long burst the
   cabinet may really be elsewhere: the rule then decides);
3. the filtered position is the per-axis median of the last 3 accepted
   fixes (one stray fix that slipped through moves nothing).

docs/config.md ("Position") has the settings and the noise the filter is
evaluated against (simulator/gnss.py, ``cabguard bench --only senses``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from controller.core.catalog import Catalog
from controller.errors import CabguardError
from drivers.atomicfile import write_atomic
from drivers.gnss import Fix
from drivers.safefile import KIB, InputFileError, parse_json, read_bytes

EARTH_M = 6_371_000.0
ACCEL_MPS2 = 3.0
SIGMA_PER_HDOP_M = 0.7
SURVEY_MIN_FIXES = 30
POSITION_SIGNALS = (
    ("pos.online", "bool", 0), ("pos.fix", "code", 0), ("pos.sats", "count", 0), ("pos.hdop", "count", -2),
    ("pos.surveyed", "bool", 0), ("pos.dist_m", "m", 0), ("pos.err_m", "m", 0),
)


class PositionError(CabguardError):
    """A survey that cannot be made or a position file that cannot be read."""


@dataclass(frozen=True)
class PositionSettings:
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
    return 2.0 * hdop_x100 / 100


class PositionFilter:
    def __init__(self, catalog: Catalog, settings: PositionSettings, surveyed: tuple[float, float] | None = None):
        self.s = settings
        self.surveyed = surveyed
        self.idx = {name: catalog.index[name] for name, _u, _s in POSITION_SIGNALS}
        self.last_ms: int | None = None       # newest sentence
        self.newest: Fix | None = None
        self.accepted: deque[tuple[float, float]] = deque(maxlen=3)
        self.track: deque[tuple[int, float, float]] = deque(maxlen=4)    # accepted fixes (ms, east, north)
        self.estimate: tuple[float, float] | None = None   # filtered (east, north) from the survey
        self.accepted_ms = 0
        self.recent: deque[Fix] = deque(maxlen=600)          # good fixes, for a survey
        self.jumps = 0

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
        self.accepted.append(here)
        self.track.append((fix.at_ms, here[0], here[1]))
        self.accepted_ms = fix.at_ms
        self.estimate = (statistics.median(p[0] for p in self.accepted), statistics.median(p[1] for p in self.accepted))

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
        return ACCEL_MPS2 / 2 + 3 * SIGMA_PER_HDOP_M * fix.hdop_x100 / 100 + 1.0

    def fill(self, image: list[int], now_ms: int) -> None:
        idx = self.idx
        online = self.last_ms is not None and now_ms - self.last_ms <= self.s.fresh_ms
        fix = self.newest if online else None
        image[idx["pos.online"]] = 1 if online else 0
        image[idx["pos.fix"]] = fix.quality if fix else 0
        image[idx["pos.sats"]] = fix.sats if fix else 0
        image[idx["pos.hdop"]] = fix.hdop_x100 if fix else 0
        image[idx["pos.surveyed"]] = 1 if self.surveyed is not None else 0
        image[idx["pos.dist_m"]] = round(math.hypot(*self.estimate)) if fix and self.estimate else 0
        image[idx["pos.err_m"]] = math.ceil(err_m(fix.hdop_x100)) if fix else 0

    def survey(self, now_ms: int, span_ms: int = 60_000) -> tuple[float, float, int, float]:
        """The mean of the good fixes of the last ``span_ms``: (lat, lon, fixes, spread in m)."""
        fixes = [f for f in self.recent if now_ms - f.at_ms <= span_ms]
        if len(fixes) < SURVEY_MIN_FIXES:
            raise PositionError("only {} good fixes (a fix, HDOP <= {:.1f}) in the last {} s; need {}: "
                                "wait for the receiver to settle under open sky".format(
                                    len(fixes), self.s.max_hdop_x100 / 100, span_ms // 1000, SURVEY_MIN_FIXES))
        lat = statistics.fmean(f.lat for f in fixes)
        lon = statistics.fmean(f.lon for f in fixes)
        spread = max(math.hypot(*offset_m(lat, lon, f.lat, f.lon)) for f in fixes)
        self.surveyed = (lat, lon)
        self.estimate = None
        self.accepted.clear()
        self.track.clear()
        return lat, lon, len(fixes), spread


def load_survey(path: Path) -> tuple[float, float] | None:
    """The surveyed (lat, lon) kept in ``path``, or None before the first survey."""
    if not path.exists():
        return None
    try:
        doc = parse_json(read_bytes(path, "position file", 4 * KIB), path, "position file")
        lat, lon = float(doc["lat"]), float(doc["lon"])
    except (OSError, ValueError, KeyError, TypeError, InputFileError) as e:
        raise PositionError("{}: not a surveyed position ({}); survey again with `pos survey`".format(path, e)) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise PositionError("{}: latitude {} / longitude {} out of range; survey again".format(path, lat, lon))
    return lat, lon


def save_survey(path: Path, lat: float, lon: float, fixes: int, spread_m: float) -> None:
    write_atomic(path, json.dumps({"lat": lat, "lon": lon, "fixes": fixes, "spread_m": round(spread_m, 2)}).encode())
