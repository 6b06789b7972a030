"""A bus's timetable, sans I/O: what the bus thread does next, and when.

As ``DeviceLink`` (drivers/modbus/link.py) is one slave's link state,
``Schedule`` is the bus's poll schedule as plain integers: it is asked what
comes next (``next``), and told what was done (``reading``: one read of a
poll, more to come; ``polled``: a whole poll; ``job_stepped``).  It never
reads a clock or a port; the caller passes monotonic microseconds and does
the I/O.  tests/test_modbus_schedule.py drives it with tables, no pty.

Theory of operation
-------------------
Each device is polled on its own period, staggered over its period at
start, keeping its phase: a poll that overran skips the slots it missed.  A
device polled once per scan of an aligned loop (``align``) is polled just
early enough that its answer is in the snapshot when the scan copies it: its
poll's mean duration plus twice its deviation (EWMAs of 1/8 and 1/4, of the
polls that answered) plus ``ALIGN_MARGIN_US`` before the scan, at most one
period; one that ended after the scan it was for is followed at once by the
poll for the next scan (skipping that scan's slot left a door unread for
two scans).

The period is the priority (rate-monotonic): on the demo bus the I/O
module (door, bolt, tamper, vibration) every 100 ms goes before the
batteries every second.  A poll is a sequence of reads (a long block split
by frames.split_reads: 3 reads of 37 registers for a SunSpec battery at
19200 baud), and each read is scheduled on its own, so the I/O module is
polled between a battery's reads rather than behind all of them.

What goes next, in order:

1. a queued command (a coil write: the siren; or a job to queue): on a busy
   wire a poll is always due, and the write would wait for ever;
2. a device whose poll failed while it is online (``polled(...,
   failed_online=True)``): polled again at once, so a silent device is
   offline after its ``offline_after`` failed polls back to back;
3. a step of a queued job (a technician's ``bus scan``), while no poll is
   due, and on a busy wire every other poll, so a scan neither delays
   polls much nor starves;
4. of the devices due, one not online (first contact, a port back) whose
   last poll did not fail, earliest due first: a cabinet is back as soon as
   the wire allows, and a battery that is gone (offline, failing its polls)
   does not take the I/O module's scans;
5. else the one of the shortest period, earliest due among equals; its next
   read starts only if it ends before any device of a shorter period falls
   due: otherwise the next of the devices due, in the same order, whose read
   does end in time goes (a relay module polled every second, as a battery
   is, after a starving battery whose read does not fit the I/O module's
   gaps: the relay was polled every 3 s instead, as a steal), or else the bus
   waits for that device (door state never waits behind battery
   telemetry).  Nothing of a longer period goes between the reads of a
   shorter period's poll;
6. a device late by a whole period of its own (starving: the wire is
   busier than the periods allow, as on a bus above 100 % of its wire) goes anyway,
   but at most once every ``STEAL_PERIODS`` shortest periods: each such
   read costs the I/O module a scan (its poll then ends after it), so a
   battery on an overloaded bus is polled less often than its period,
   never the door;
7. otherwise, waiting until the first poll is due (or the lost port's
   reopening time, if sooner).

A device polled much less often than its period (6. on an overloaded bus)
is ``stretched``: the mean time between its polls (an EWMA of 1/4) above
``STRETCHED_FACTOR`` periods, and again on pace below ``ON_PACE_FACTOR``.
The poller reports both, so an installer learns from the journal that a
battery's values are seconds old, not from a missed theft.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

ALIGN_MARGIN_US = 1500     # an aligned poll ends this long before the scan that reads it
STEAL_PERIODS = 10         # a starving device goes ahead of a shorter period's poll once in this many such periods
STRETCHED_FACTOR = 3       # polled this many periods apart on average: stretched
ON_PACE_FACTOR = 3 / 2     # ... and on pace again below this

# What the bus thread does next (Action.kind).
COMMAND = "command"        # take the queued command (a write, or a job to queue)
JOB = "job"                # one step of the first queued job
POLL = "poll"              # poll device ``Action.device``
WAIT = "wait"              # nothing is due before ``Action.at_us`` (a command may come meanwhile)


class Action(NamedTuple):
    kind: str
    device: int = -1       # POLL: the device's index
    at_us: int = 0         # WAIT: until when


_COMMAND = Action(COMMAND)
_JOB = Action(JOB)


class Schedule:
    """The poll schedule of one bus's devices, by index; the bus thread owns it."""

    def __init__(self, periods_us: Sequence[int], now_us: int) -> None:
        n = len(periods_us)
        self.period_us = list(periods_us)
        self.shortest_us = min(periods_us, default=0)
        self.due_us = [now_us + p * i // max(1, n) for i, p in enumerate(periods_us)]   # staggered
        self.poll_us = [0] * n          # EWMA of a whole poll of each device
        self.poll_dev_us = [0] * n      # ... and of its deviation from that mean
        self.grid: tuple[int, int] | None = None   # the scan loop's (anchor, period), see align()
        self.scan_us: list[int | None] = [None] * n   # an aligned device's: the scan its next poll is for
        self.confirm = [False] * n      # its poll failed while online: poll it again at once
        self.active = [False] * n       # between the reads of its poll
        self.silent = [False] * n       # its last poll failed (not online: it is not coming online)
        self.stolen_us = -(1 << 62)     # when a starving device last went ahead of a shorter period
        self.ended_us: list[int | None] = [None] * n   # when its last poll ended (None: none since start or a port back)
        self.gap_us = list(periods_us)  # EWMA of the time between its polls
        self.stretched = [False] * n    # polled much less often than its period (see the module's doc)
        self.job_turn = False           # a poll ran since the last job step
        self._polls = [Action(POLL, i) for i in range(n)]   # built once: next() returns them

    def align(self, anchor_us: int, period_us: int) -> None:
        """Phase-lock the devices polled once per scan to the scan loop, whose scans start
        at ``anchor_us + k * period_us``."""
        self.grid = (anchor_us, period_us)

    def next(self, now_us: int, commands: bool = False, jobs: bool = False,
             reopen_at_us: int | None = None, read_us: Sequence[int] = (),
             online: Sequence[bool] = ()) -> Action:
        """What to do at ``now_us``: ``commands`` and ``jobs`` say whether any are queued,
        ``reopen_at_us`` when to try a lost port again (None while it is open), ``read_us``
        how long each device's next read should take (none given: 0), ``online`` which
        devices are (none given: all).  A POLL that goes ahead of a shorter period's poll
        because its device starves is counted against the next such (``STEAL_PERIODS``).

        Called once per transaction by the bus thread, which wakes for it with cold caches:
        the usual case (one device due, on the shortest period) reads each list once and
        builds nothing but the waiting list."""
        if commands:
            return _COMMAND
        due_us = self.due_us
        due = min(due_us)
        waiting = self._waiting(now_us) if due <= now_us else []
        if waiting:
            if True in self.confirm:
                confirming = [i for i in waiting if self.confirm[i]]
                if confirming:   # an online device gone quiet: whether it is offline goes first
                    return self._polls[min(confirming, key=due_us.__getitem__)]
            if online:
                silent = self.silent
                coming = [i for i in waiting if not online[i] and not silent[i]]
                if coming:   # first contact, a port back: the cabinet is back as soon as the wire allows
                    return self._go(min(coming, key=due_us.__getitem__), jobs)
            pick = waiting[0] if len(waiting) == 1 else min(waiting, key=self._rank)
            held = self._held(pick, now_us, read_us)
            if not held:
                return self._go(pick, jobs)
            fits = [i for i in waiting if i != pick and not self._held(i, now_us, read_us)]
            if fits:   # one that ends in time goes while the first waits for a longer gap
                return self._go(min(fits, key=self._rank), jobs)
            starving = [i for i in waiting if now_us - due_us[i] >= self.period_us[i]]
            if starving and now_us - self.stolen_us >= STEAL_PERIODS * self.shortest_us:
                self.stolen_us = now_us
                return self._polls[min(starving, key=due_us.__getitem__)]
            due = min(held)   # it would hold up a shorter period's poll: wait for that one
        if jobs:
            return _JOB
        return Action(WAIT, at_us=due if reopen_at_us is None else min(due, reopen_at_us))

    def _rank(self, device: int) -> tuple[int, int]:
        """Which waiting device goes first: the shortest period, then the earliest due."""
        return self.period_us[device], self.due_us[device]

    def _go(self, device: int, jobs: bool) -> Action:
        """Poll ``device``, or step a job if it is the job's turn."""
        return _JOB if jobs and self.job_turn else self._polls[device]

    def _held(self, device: int, now_us: int, read_us: Sequence[int]) -> list[int]:
        """When the devices of a shorter period than ``device``'s fall due, of those that do
        before its next read would end."""
        period = self.period_us[device]
        if period == self.shortest_us:
            return []
        ends = now_us + (read_us[device] if read_us else 0)
        return [self.due_us[j] for j, p in enumerate(self.period_us) if p < period and self.due_us[j] <= ends]

    def _waiting(self, now_us: int) -> list[int]:
        """The devices due at ``now_us``, but those of a longer period than a poll between its
        reads: they do not go between them."""
        due = [i for i, t in enumerate(self.due_us) if t <= now_us]
        if True not in self.active:
            return due
        inside = min([p for p, active in zip(self.period_us, self.active) if active])
        return [i for i in due if self.period_us[i] <= inside]

    def reading(self, device: int) -> None:
        """A read of ``device``'s poll is done and more remain: they are due at once, each
        going only if it ends before a shorter period falls due (or its device starves)."""
        self.active[device] = True

    def polled(self, device: int, started_us: int, ended_us: int, failed: bool = False,
               online: bool = True) -> int:
        """``device`` was polled from ``started_us`` to ``ended_us``; returns its next due time.
        A poll that ``failed`` of a device still ``online`` (its offline hysteresis counts) is
        polled again at once, ahead of every other device, so a silent device is offline after
        its ``offline_after`` failed polls back to back, not one period apart (a failed poll's
        timeouts and retry overran its period, which then skipped a slot: 3.7 to 4.2 periods
        instead of at most 3).  One that failed while offline is no longer coming online: it
        waits its turn like the others."""
        self._pace(device, ended_us)
        failed_online = failed and online
        self.confirm[device] = failed_online
        self.silent[device] = failed
        self.active[device] = False
        self.job_turn = True
        if failed_online:
            self.due_us[device] = ended_us
            return ended_us
        took = ended_us - started_us
        self.poll_dev_us[device] += (abs(took - self.poll_us[device]) - self.poll_dev_us[device]) // 4
        self.poll_us[device] += (took - self.poll_us[device]) // 8
        self.due_us[device] = self._next_due(device, ended_us)
        return self.due_us[device]

    def _pace(self, device: int, ended_us: int) -> None:
        """Average the time since ``device``'s last poll into its gap, and say whether it is
        stretched, with a hysteresis so that one late poll is no news."""
        last, self.ended_us[device] = self.ended_us[device], ended_us
        if last is None:
            return
        self.gap_us[device] += (ended_us - last - self.gap_us[device]) // 4
        period = self.period_us[device]
        if self.stretched[device]:
            self.stretched[device] = self.gap_us[device] > ON_PACE_FACTOR * period
        else:
            self.stretched[device] = self.gap_us[device] > STRETCHED_FACTOR * period

    def job_stepped(self) -> None:
        self.job_turn = False

    def port_reopened(self, now_us: int) -> None:
        """Poll everyone now: the devices come back one period sooner.  Polls in progress
        when the port went are over (they failed)."""
        self.due_us = [min(due, now_us) for due in self.due_us]
        self.active = [False] * len(self.active)
        self.silent = [False] * len(self.silent)
        self.ended_us = [None] * len(self.ended_us)   # the outage is no gap between polls

    def _next_due(self, device: int, now_us: int) -> int:
        """On the device's own period, keeping its phase; or, for a device polled once per
        scan of an aligned loop, just early enough that its answer is in the snapshot when
        the scan copies it (most polls end in time, not half).  An aligned poll that ended
        after the scan it was for is followed at once by the poll for the next scan: skipping
        to the scan after (the slot's start had passed) left the I/O module unpolled for two
        scans, and a door opened meanwhile waited 200 ms for its next reading."""
        period = self.period_us[device]
        if self.grid is not None and self.grid[1] == period:
            anchor, _ = self.grid
            lead = min(period, self.poll_us[device] + 2 * self.poll_dev_us[device] + ALIGN_MARGIN_US)
            missed = self.scan_us[device]
            if missed is not None and missed < now_us:
                scan = anchor + ((now_us - anchor) // period + 1) * period   # the next one it can make
            else:
                scan = anchor + ((now_us + lead - anchor) // period + 1) * period
            self.scan_us[device] = scan
            return scan - lead
        due = self.due_us[device] + period
        if due < now_us:   # overrun: skip missed slots, keep the phase
            due += ((now_us - due) // period + 1) * period
        return due
