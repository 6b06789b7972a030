"""A GNSS receiver on a serial port: NMEA 0183 sentences in, fixes out.

``parse_gga`` reads one ``$..GGA`` sentence with pynmea2 (the ``gnss``
extra; its checksum is checked) into a ``Fix``: fix quality (0 none,
1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning), satellites
used, HDOP, latitude and longitude.  Other sentences are not needed and
are skipped.

``NmeaReader`` is one thread that owns the port (a serial device, or the
simulator's pty): it reads lines, keeps the fixes in a bounded deque for
the scan loop to drain (``drain``: no lock held, never blocks), and
reopens a port that fails, with backoff, counting what it could not read.
"""

from __future__ import annotations

import collections
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
