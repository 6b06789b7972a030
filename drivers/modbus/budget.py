"""A bus's wire budget: the share of the wire its devices' polls take (docs/profiles.md).

Each read costs (13 + 2N)·11/baud + 2·t3.5 seconds (N registers; a bit read
answers ceil(N/8) data bytes): request and answer on the wire and the
silences around them, plus the device's expected turnaround (the bus is
held while the slave prepares its answer; ``turnaround_ms`` of its
``[[device]]``, ``DEFAULT_TURNAROUND_MS`` unless set).  A device's load is
its reads' time over its poll period; a bus's load is the sum.  A bus above
``WARN_LOAD`` has little room for slow slaves and retries (a warning, also
above ``MAX_LOAD``: turnarounds are expected, not measured), and one whose
wire time alone is above ``MAX_LOAD`` cannot keep its poll periods at all
(an error).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from drivers.modbus import frames
from drivers.modbus.profiles import Profile

DEFAULT_TURNAROUND_MS = 20    # a field device's typical answer delay (5-50 ms; the simulator's 5-40)
WARN_LOAD = 0.60
MAX_LOAD = 1.00
READ_LIMIT_FLOOR_S = 2 * frames.SLOWEST_TURNAROUND_S   # a read may always take this long


class DeviceLoad(NamedTuple):
    name: str
    reads: int           # reads per poll
    poll_s: float        # time of one poll on the bus: wire time and expected turnarounds
    period_s: float
    turnaround_s: float = 0.0   # the expected turnarounds of one poll (in poll_s)

    @property
    def share(self) -> float:
        return self.poll_s / self.period_s

    @property
    def wire_share(self) -> float:
        """The share of the wire time alone (no turnarounds)."""
        return (self.poll_s - self.turnaround_s) / self.period_s


def read_limit_s(ceiling_s: float, periods_s: Iterable[float]) -> float:
    """The longest a read may take (request, slowest turnaround, answer): the timeout
    ceiling, and no longer than the bus's shortest poll period (but READ_LIMIT_FLOOR_S at
    least, or reads would shrink to a register or two), so a long block is split and the
    devices polled often are polled between its reads (frames.split_reads)."""
    return min(ceiling_s, max(READ_LIMIT_FLOOR_S, min(periods_s, default=ceiling_s)))


def read_seconds(function: int, count: int, baud: int) -> float:
    data = (count + 7) // 8 if function in frames.BIT_FUNCTIONS else 2 * count
    return frames.wire_seconds(13 + data, baud) + 2 * frames.t35_seconds(baud)


def device_load(name: str, profile: Profile, period_ms: int, baud: int, limit_s: float,
                turnaround_ms: float = DEFAULT_TURNAROUND_MS) -> DeviceLoad:
    """One device's polls, read as the poller reads them (long blocks split to ``limit_s``,
    see read_limit_s), each read with its expected turnaround; a SunSpec device at its
    default layout."""
    regmap = profile.bind(profile.sim_layout(), {}) if profile.sunspec else profile.bind()   # what a poll reads
    reads = [(frames.READ_FUNCTION[b.table], n) for b in regmap.blocks
             for _s, n in frames.split_reads(frames.READ_FUNCTION[b.table], b.start, b.count, baud, limit_s)]
    turnarounds_s = len(reads) * turnaround_ms / 1000
    return DeviceLoad(name, len(reads), sum(read_seconds(f, n, baud) for f, n in reads) + turnarounds_s,
                      period_ms / 1000, turnarounds_s)


def bus_load(devices: Iterable[DeviceLoad]) -> float:
    return sum(d.share for d in devices)


def verdict(bus: str, baud: int, devices: list[DeviceLoad]) -> tuple[str, str]:
    """("ok" | "warning" | "error", a line for the installer naming the device to slow down)."""
    load = bus_load(devices)
    parts = ", ".join("{} {:.0f} %".format(d.name, 100 * d.share) for d in devices)
    line = "bus {}: wire load {:.0f} % at {} baud ({})".format(bus, 100 * load, baud, parts or "no devices")
    if load <= WARN_LOAD:
        return "ok", line
    worst = max(devices, key=lambda d: d.share)
    # The period that brings the bus back to WARN_LOAD if only the worst device slows down.
    room = WARN_LOAD - (load - worst.share)
    period_ms = 1000 * worst.poll_s / room if room > 0 else None
    advice = ("slow down {} (poll_ms = {:.0f} or more)".format(worst.name, period_ms) if period_ms
              else "slow down {} and others".format(worst.name))
    if sum(d.wire_share for d in devices) > MAX_LOAD:
        return "error", "{}: over 100 % without turnarounds, polls cannot keep their periods: {} or raise the " \
            "baud".format(line, advice)
    if load > MAX_LOAD:
        # The turnarounds are expected, not measured: a warning, however slow they are.
        return "warning", "{}: over 100 % with the devices' expected turnarounds, polls will run late: {} or " \
            "raise the baud".format(line, advice)
    return "warning", "{}: above {:.0f} %, little room for slow slaves and retries: {} or raise the baud".format(
        line, 100 * WARN_LOAD, advice)
