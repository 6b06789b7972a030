"""A device's link and a port's reopening, sans I/O: what the poller decides from
the outcomes of its transactions.

As h11 keeps HTTP's state machine apart from the socket, ``DeviceLink`` is
the Modbus side of one slave as plain integers: it is told what a
transaction came to (``answered``, ``failed``, ``late``) and what a whole
poll came to (``poll_ok``, ``poll_failed``), and it answers with the
``BusEvent`` list to report.  It never reads a clock or a port; the caller
measures times (microseconds) and does the I/O.  ``PortLink`` does the same
for the backoff of a lost serial port.  tests/test_modbus_link.py drives both
with tables, no pty.

Theory of operation
-------------------
Timeouts follow the device's measured turnaround as TCP's retransmission
timer follows round trips (RFC 6298): the wire time of the request and
answer, plus the turnaround's mean (an EWMA of 1/8), plus four times its
mean deviation (an EWMA of 1/4), plus 2 ms, clamped to [floor, ceiling].  A
steady device gets a tight timeout, so a silent one is found within a few
poll periods; one whose turnaround wanders gets room for it.  Until a
device has answered once its timeout is the ceiling (first contact: a slow
BMS must get the chance to show how slow it is), with no retry; its first
answer sets the turnaround, later ones (late answers too, as the master sees
them arrive while it waits for a quiet line) average into it.  A failed read
is retried at most ``retries`` times, so a silent or exception-answering
device holds the bus at most ``(1 + retries) * timeout`` per read.  A device goes offline after
``offline_after`` failed polls in a row and back online after
``online_after`` good polls (hysteresis); a lost port silences every device
at once (``port_gone``).
"""

from __future__ import annotations

from drivers.modbus import frames
from drivers.modbus.events import EXCEPTION, MISMATCH, OFFLINE, ONLINE, BusEvent
from drivers.modbus.options import BusOptions

COUNTER_MASK = 0x7FFFFFFF  # counters wrap inside 31 bits, like every image value
PORT_LOST = 256            # ``comm_exc`` while the bus's port is gone (docs/signals.md): no Modbus code

# What one transaction came to (DeviceLink.failed).
TIMEOUT, GARBLED, REFUSED, PORT_GONE = 1, 2, 3, 4   # no answer; CRC/frame error; exception; port failed

MARGIN_US = 2000           # added to every learned timeout
REOPEN_FIRST_US = 100_000  # a lost port is tried again after this long ...
REOPEN_MAX_US = 500_000    # ... doubling up to this: a port back is in use within half a second
REOPEN_HELD_US = 10 * REOPEN_MAX_US   # a port that held this long starts its backoff afresh


def wire_us(count: int, baud: int) -> int:
    """A register read's request (8 characters) and answer (5 + 2N) on the wire, 11 bits each."""
    return (13 + 2 * count) * 11 * 1_000_000 // baud


class DeviceLink:
    """One slave's link state; the bus thread owns it."""

    def __init__(self, name: str, address: int, options: BusOptions) -> None:
        self.name = name
        self.address = address
        self.options = options
        self.floor_us = round(options.timeout_floor_ms * 1000)
        self.ceiling_us = round(options.timeout_ceiling_ms * 1000)
        self.gaps_us = round(2e6 * frames.t35_seconds(options.baud))   # t3.5 before and after a read
        self.online = 0
        self.good_run = 0                # good polls in a row
        self.bad_run = 0                 # failed polls in a row
        self.ok = self.timeouts = self.crc = self.exc = self.exc_count = 0
        self.latency_us = 0              # EWMA of the turnaround beyond wire time
        self.latency_dev_us = 0          # EWMA of its deviation from that mean
        self.answered = False            # it answered once: latency is measured, not guessed
        self.mismatch = False            # a SunSpec discovery failure was reported this episode
        self.reason = ""                 # why the last transaction failed, for the offline event

    def twins(self) -> list[int]:
        """online, comm_ok, comm_timeouts, comm_crc, comm_exc (drivers.modbus.poller.TWINS)."""
        return [self.online, self.ok, self.timeouts, self.crc, self.exc]

    # ---- one transaction ---------------------------------------------------

    def timeout_us(self, count: int) -> int:
        """How long to wait for the answer to a read of ``count`` registers."""
        if not self.answered:
            return self.ceiling_us
        t = wire_us(count, self.options.baud) + self.latency_us + 4 * self.latency_dev_us + MARGIN_US
        return min(self.ceiling_us, max(self.floor_us, t))

    def expected_us(self, count: int) -> int:
        """How long a good read of ``count`` registers should take: wire, gaps and turnaround."""
        return wire_us(count, self.options.baud) + self.gaps_us + self.latency_us

    def attempts(self, write: bool = False) -> int:
        """Tries for one transaction.  A read at first contact is tried once: it already waits
        the ceiling.  A write always gets its retries: an output must not fail on one lost frame."""
        return 1 + self.options.retries if self.answered or write else 1

    def answered_in(self, elapsed_us: int, count: int) -> list[BusEvent]:
        """A good answer ``elapsed_us`` after the request started (wire time included)."""
        self._learn(elapsed_us - wire_us(count, self.options.baud))
        self.ok = (self.ok + 1) & COUNTER_MASK
        return []

    def late(self, turnaround_us: int) -> None:
        """An answer that came after its request had timed out: it teaches the turnaround."""
        self._learn(turnaround_us)

    def failed(self, outcome: int, why: str, code: int = 0) -> list[BusEvent]:
        """A transaction that did not bring a good answer; ``code`` is an exception's."""
        self.reason = why
        if outcome in (TIMEOUT, PORT_GONE):
            self.timeouts = (self.timeouts + 1) & COUNTER_MASK
        elif outcome == GARBLED:
            self.crc = (self.crc + 1) & COUNTER_MASK
        elif outcome == REFUSED:
            self.answered = True     # it answered: retrying will not change its mind
            return self.refused(code)
        return []

    def refused(self, code: int) -> list[BusEvent]:
        """A Modbus exception answer (to a read or a write): reported when the code changes."""
        self.exc_count = (self.exc_count + 1) & COUNTER_MASK
        events = []
        if code != self.exc:
            events.append(BusEvent(self.name, EXCEPTION, code,
                                   "Modbus exception {} from address {}".format(code, self.address)))
        self.exc = code
        return events

    def _learn(self, turnaround_us: int) -> None:
        """The first turnaround is the estimate (give or take a quarter of it), later ones average in."""
        turnaround_us = max(0, turnaround_us)
        if self.answered:
            self.latency_dev_us += (abs(turnaround_us - self.latency_us) - self.latency_dev_us) // 4
            self.latency_us += (turnaround_us - self.latency_us) // 8
        else:
            self.latency_us = turnaround_us
            self.latency_dev_us = turnaround_us // 4
        self.answered = True

    # ---- one poll (all of a device's reads) ----------------------------------

    def poll_ok(self) -> list[BusEvent]:
        self.mismatch = False
        self.bad_run = 0
        self.good_run += 1
        events = []
        if not self.online and self.good_run >= self.options.online_after:
            self.online = 1
            events.append(BusEvent(self.name, ONLINE, 0, "answering"))
        self.exc = 0
        return events

    def poll_failed(self) -> list[BusEvent]:
        self.good_run = 0
        self.bad_run += 1
        if self.online and self.bad_run >= self.options.offline_after:
            self.online = 0
            return [BusEvent(self.name, OFFLINE, self.exc, "{} failed polls; last: {}".format(
                self.bad_run, self.reason))]
        return []

    def not_sunspec(self, why: str) -> list[BusEvent]:
        """A failed poll whose device is not the SunSpec device expected: said once per episode."""
        events = self.poll_failed()
        if not self.mismatch:
            events.append(BusEvent(self.name, MISMATCH, 0, why))
        self.mismatch = True
        return events

    def port_gone(self, why: str) -> list[BusEvent]:
        """The port itself is gone: no answer can come, so the device is offline now,
        not after the hysteresis that rides out a glitch, and says why on ``comm_exc``."""
        self.exc = PORT_LOST
        self.reason = why
        self.bad_run = max(self.bad_run, self.options.offline_after - 1)
        return self.poll_failed()

    def unpolled(self, why: str) -> list[BusEvent]:
        """Nobody polls the device any more (the bus thread died): its values are unknown."""
        self.good_run = 0
        if self.online:
            self.online = 0
            return [BusEvent(self.name, OFFLINE, self.exc, why)]
        return []


class PortLink:
    """When to try a lost port again: ``REOPEN_FIRST_US`` doubling up to ``REOPEN_MAX_US``;
    a port that held ``REOPEN_HELD_US`` starts afresh, one that flaps (a loose plug) keeps
    backing off.  Times are the caller's monotonic microseconds."""

    def __init__(self) -> None:
        self.delay_us = REOPEN_FIRST_US
        self.reopen_at = 0
        self.lost_at = 0
        self.opened_at = 0

    def lost(self, now_us: int) -> int:
        """The port failed at ``now_us``; returns when to try it again."""
        held = now_us - self.opened_at > REOPEN_HELD_US
        self.delay_us = REOPEN_FIRST_US if held else min(REOPEN_MAX_US, 2 * self.delay_us)
        self.lost_at = now_us
        self.reopen_at = now_us + self.delay_us
        return self.reopen_at

    def open_failed(self, now_us: int) -> int:
        self.delay_us = min(REOPEN_MAX_US, 2 * self.delay_us)
        self.reopen_at = now_us + self.delay_us
        return self.reopen_at

    def opened(self, now_us: int) -> int:
        """The port opened at ``now_us``; returns how long it was gone."""
        self.opened_at = now_us
        return now_us - self.lost_at
