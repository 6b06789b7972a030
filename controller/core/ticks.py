"""Millisecond ticks that wrap, with MicroPython's ticks-diff semantics.

MicroPython's ``time.ticks_ms()`` wraps at 2**30 and there is no monotonic
clock that does not.  The core therefore never compares two ticks directly:
it asks for their signed difference, which is correct as long as the two
instants are less than half a period (about 6.2 days) apart.  Deadlines
longer than that are not allowed in the core (the longest is a maintenance
window, capped far below it).
"""

PERIOD = 1 << 30
MASK = PERIOD - 1
HALF = PERIOD >> 1
MAX_SPAN = HALF - 1


def wrap(ms):
    """A raw millisecond count folded into the tick range."""
    return ms & MASK


def add(ticks, delta):
    """The tick ``delta`` milliseconds after ``ticks`` (delta may be < 0)."""
    return (ticks + delta) & MASK


def diff(a, b):
    """Signed milliseconds from ``b`` to ``a``, like ``time.ticks_diff``."""
    return ((a - b + HALF) & MASK) - HALF


def reached(now, deadline):
    """True once ``now`` is at or past ``deadline``."""
    return ((now - deadline + HALF) & MASK) - HALF >= 0
