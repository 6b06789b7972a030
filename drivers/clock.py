"""Wall time and whether to trust it.

A gateway boots with whatever its RTC (or the last shutdown) says; until a
time service has synchronised the clock, wall times in records are flagged
untrusted and schedules follow their safe assumption.  The clock is taken
as synchronised when any of these holds:

1. systemd-timesyncd has created ``/run/systemd/timesync/synchronized``;
2. the kernel says so: ``adjtimex(2)`` reports STA_UNSYNC clear and a
   maximum error below 16 s (chrony and ntpd keep this up to date);
3. the site config says ``clock.assume_trusted = true`` (a GPS-disciplined
   clock the kernel does not know about).

And never while the wall clock reads earlier than this program's build
year: a board whose RTC battery died boots in 1970 or 2000.

A time service that finds the clock off by more than it may slew *steps*
it: wall time jumps, forward or back, while the monotonic clock (the scan
loop's) does not move.  ``stepped_ms()`` compares wall less monotonic time
with its last call; the gateway calls it once a second and journals a step
of a second or more (docs/runtime.md, "Field faults").  A slew (at most
500 ppm) never adds up to a step between two calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from pathlib import Path

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
STA_UNSYNC = 0x0040
MAX_ERROR_US = 16_000_000
EARLIEST_TRUSTED = 1767225600  # 2026-01-01T00:00:00Z
STEP_MS = 1000     # below verify's 2 s of slack for records stamped out of order


class _Timex(ctypes.Structure):
    # struct timex (x86_64 / aarch64 / armhf share the leading fields we read).
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


_libc: list[ctypes.CDLL | None] = []     # empty until looked for


def _load_libc() -> ctypes.CDLL | None:
    """The C library, looked for once: ``find_library`` runs ``ldconfig -p`` in
    a child process, which once a second cost the gateway 2 ms and a fork."""
    if not _libc:
        name = ctypes.util.find_library("c")
        try:
            _libc.append(ctypes.CDLL(name, use_errno=True) if name else None)
        except OSError:
            _libc.append(None)
    return _libc[0]


def kernel_synchronised() -> bool:
    """True if adjtimex(2) reports a disciplined clock (read-only call)."""
    libc = _load_libc()
    if libc is None:
        return False
    try:
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return False
    return state >= 0 and not tx.status & STA_UNSYNC and tx.maxerror < MAX_ERROR_US


class Clock:
    """The shell's clock: monotonic ticks for the core, wall time for records."""

    def __init__(self, assume_trusted: bool = False, flag: Path = TIMESYNC_FLAG):
        self.assume_trusted = assume_trusted
        self.flag = flag
        self.offset_ms: int | None = None     # wall less monotonic time at the last stepped_ms()

    @staticmethod
    def monotonic_ns() -> int:
        return time.monotonic_ns()

    @staticmethod
    def wall_s() -> float:
        return time.time()

    def trusted(self) -> bool:
        if self.wall_s() < EARLIEST_TRUSTED:
            return False
        return self.assume_trusted or self.flag.exists() or kernel_synchronised()

    def stepped_ms(self) -> int:
        """How far the wall clock was stepped since the last call (0: less than STEP_MS, or the first call)."""
        offset = int(self.wall_s() * 1000) - self.monotonic_ns() // 1_000_000
        last, self.offset_ms = self.offset_ms, offset
        if last is None or abs(offset - last) < STEP_MS:
            return 0
        return offset - last
