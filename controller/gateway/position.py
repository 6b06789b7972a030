"""Position on the image: a GNSS receiver's fixes as ``pos.*``, and the surveyed place.

The receiver's thread (drivers/gnss.py, ``NmeaReader``) queues fixes, or,
for a receiver on the Modbus bus (``[gnss] device``, a ``gnss_receiver``
profile), ``DeviceFixes`` takes each new fix from the device's decoded
signals on the image; each scan the loop feeds them to the position track
(``PositionTrack``, the filter against jitter and multipath, in
drivers/gnss.py) and writes its values on the image:

    pos.online    a sentence within ``fresh_s`` (a receiver unplugged or
                  silent is known dead; never heard: 0)
    pos.fix       the GGA fix quality of the newest fix (0 = no fix)
    pos.sats      satellites used
    pos.hdop      HDOP x 100
    pos.surveyed  1 once a surveyed position exists
    pos.dist_m    metres from the surveyed position, of the filtered position
    pos.err_m     the fix's error allowance, ``2 x hdop`` metres, for a
                  rule's HDOP-aware threshold
    pos.away      x 100, the away score: how steadily the filtered
                  position moves away from the surveyed one, beyond what
                  jitter at this HDOP does (``PositionTrack``)

The surveyed position is where the cabinet stands (console ``pos survey``
at commissioning), kept in ``<state_dir>/position.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.core.catalog import POSITION_SIGNALS, Catalog
from controller.errors import CabguardError
from drivers.atomicfile import write_atomic
from drivers.gnss import Fix, GnssError, PositionTrack, TrackSettings, fix_from_signals
from drivers.modbus.profiles import GNSS_RECEIVER_SIGNALS
from drivers.safefile import KIB, InputFileError, parse_json, read_bytes


class PositionError(CabguardError):
    """A survey that cannot be made or a position file that cannot be read."""


class PositionFilter:
    """The track, and where its values go on the image."""

    def __init__(self, catalog: Catalog, settings: TrackSettings, surveyed: tuple[float, float] | None = None):
        self.track = PositionTrack(settings, surveyed)
        self.idx = [(name.split(".", 1)[1], catalog.index[name]) for name, _u, _s in POSITION_SIGNALS]

    @property
    def surveyed(self) -> tuple[float, float] | None:
        return self.track.surveyed

    def feed(self, fix: Fix) -> None:
        self.track.feed(fix)

    def fill(self, image: list[int], now_ms: int) -> None:
        values = self.track.values(now_ms)
        for short, i in self.idx:
            image[i] = values[short]

    def survey(self, now_ms: int) -> tuple[float, float, int, float]:
        try:
            return self.track.survey(now_ms)
        except GnssError as e:
            raise PositionError(str(e)) from None


class DeviceFixes:
    """The new fixes of a GNSS receiver on the bus, read from its signals on the image.

    The poller copies the device's newest decoded fix onto the image each
    scan; a fix is new when the device is online and its ``utc_ms`` (the
    fix's time) differs from the one taken last, so a fix polled twice is
    fed once, and a receiver that stops updating goes stale as a silent
    serial port does (``pos.online`` 0 after ``fresh_s``)."""

    def __init__(self, catalog: Catalog, device: str):
        self.online = catalog.index[device + ".online"]
        self.idx = [(name, catalog.index[device + "." + name]) for name, _u, _s in GNSS_RECEIVER_SIGNALS]
        self.last_utc: int | None = None

    def take(self, image: list[int], now_ms: int) -> list[Fix]:
        if not image[self.online]:
            return []
        values = {name: image[i] for name, i in self.idx}
        if values["utc_ms"] == self.last_utc:
            return []
        self.last_utc = values["utc_ms"]
        return [fix_from_signals(values, now_ms)]


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
