"""A bus's timetable, sans I/O: what the bus thread does next, and when.

As ``DeviceLink`` (drivers/modbus/link.py) is one slave's link state,
``Schedule`` is the bus's poll schedule as plain integers: it is asked what
comes next (``next``) and which devices go ahead of a piece of a long read
(``ahead_of``), and told what was done (``polled``, ``job_stepped``).  It
never reads a clock or a port; the caller passes monotonic microseconds and
does the I/O.  tests/test_modbus_schedule.py drives it with tables, no pty.

Theory of operation
-------------------
Each device is polled on its own period, staggered over its period at
start, keeping its phase: a poll that overran skips the slots it missed.  A
device polled once per scan of an aligned loop (``align``) is polled just
early enough that its answer is in the snapshot when the scan copies it: its
poll's mean duration plus twice its deviation (EWMAs of 1/8 and 1/4) plus
``ALIGN_MARGIN_US`` before the scan.

What goes first, in order:

1. a queued command (a coil write: the siren; or a job to queue): on a busy
   wire a poll is always due, and the write would wait for ever;
2. a step of a queued job (a technician's ``bus scan``), while no poll is
   due, and on a busy wire every other transaction, so a scan neither delays
   polls much nor starves;
3. of the devices due, one late by a whole period of its own, or not
   online (coming online, after a start or a lost port), earliest due
   first: none starves (on a saturated wire a slow device is polled at
   least every other period), and a cabinet is back as soon as the wire
   allows;
4. else the one of the shortest period (rate-monotonic), earliest due among
   equals; its poll starts only if its longest read ends before any device
   of a shorter period falls due: otherwise the bus waits for that device.
   On the demo bus (an I/O module every 100 ms, batteries whose 37-register
   reads take 80 ms with their turnarounds) a battery read that starts in
   the I/O module's gap delays its poll past the scan, and a door then
   waits a whole scan more;
5. otherwise, waiting until the first poll is due (or the lost port's
   reopening time, if sooner).

A long block is read in pieces (frames.split_reads); a piece starts only
if no device of a shorter period falls due before it would end: otherwise
the bus waits for that device's time, polls it, and then reads the piece
(``ahead_of``).  So the I/O module is polled on its time, neither held up
by a battery's 111 registers nor polled early to make room for them (its
reading staler at its scan, and a second poll of it after the piece).

An aligned poll's lead is at most one period: a poll longer than the
scan's slot leaves starts at the scan instead of skipping to the next one
(it used to be polled every other scan on a loaded host).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

ALIGN_MARGIN_US = 1500     # an aligned poll ends this long before the scan that reads it

# What the bus thread does next (Action.kind).
COMMAND = "command"        # take the queued command (a write, or a job to queue)
JOB = "job"                # one step of the first queued job
POLL = "poll"              # poll device ``Action.device``
WAIT = "wait"              # nothing is due before ``Action.at_us`` (a command may come meanwhile)


class Action(NamedTuple):
    kind: str
    device: int = -1       # POLL: the device's index
    at_us: int = 0         # WAIT: until when


class Schedule:
    """The poll schedule of one bus's devices, by index; the bus thread owns it."""

    def __init__(self, periods_us: Sequence[int], now_us: int) -> None:
        n = len(periods_us)
        self.period_us = list(periods_us)
        self.due_us = [now_us + p * i // max(1, n) for i, p in enumerate(periods_us)]   # staggered
        self.poll_us = [0] * n          # EWMA of a whole poll of each device
        self.poll_dev_us = [0] * n      # ... and of its deviation from that mean
        self.grid: tuple[int, int] | None = None   # the scan loop's (anchor, period), see align()
        self.job_turn = False           # a poll ran since the last job step

    def align(self, anchor_us: int, period_us: int) -> None:
        """Phase-lock the devices polled once per scan to the scan loop, whose scans start
        at ``anchor_us + k * period_us``."""
        self.grid = (anchor_us, period_us)

    def first_due(self) -> int:
        """The device whose poll is due first."""
        return min(range(len(self.due_us)), key=self.due_us.__getitem__)

    def next(self, now_us: int, commands: bool = False, jobs: bool = False,
             reopen_at_us: int | None = None, read_us: Sequence[int] = (),
             online: Sequence[bool] = ()) -> Action:
        """What to do at ``now_us``: ``commands`` and ``jobs`` say whether any are queued,
        ``reopen_at_us`` when to try a lost port again (None while it is open), ``read_us``
        how long each device's longest read should take (none given: 0), ``online`` which
        devices are (none given: all)."""
        if commands:
            return Action(COMMAND)
        due = self.due_us[self.first_due()]
        if due <= now_us:
            waiting = [i for i, t in enumerate(self.due_us) if t <= now_us]
            urgent = [i for i in waiting if now_us - self.due_us[i] >= self.period_us[i]
                      or (online and not online[i])]
            if urgent:
                pick = min(urgent, key=self.due_us.__getitem__)
                return Action(JOB) if jobs and self.job_turn else Action(POLL, pick)
            pick = min(waiting, key=lambda i: (self.period_us[i], self.due_us[i]))
            ends = now_us + (read_us[pick] if read_us else 0)
            held = [self.due_us[j] for j, p in enumerate(self.period_us)
                    if p < self.period_us[pick] and self.due_us[j] <= ends]
            if not held:
                return Action(JOB) if jobs and self.job_turn else Action(POLL, pick)
            due = min(held)   # it would hold up a shorter period's poll: wait for that one
        if jobs:
            return Action(JOB)
        return Action(WAIT, at_us=due if reopen_at_us is None else min(due, reopen_at_us))

    def ahead_of(self, device: int, now_us: int, piece_us: int, online: bool = True) -> tuple[int, list[int]]:
        """What goes before a piece of ``device``'s poll that takes ``piece_us``: the devices
        of a shorter period whose poll falls due before it would end (earliest first), and
        when to poll them: when the first of them is due, rather than early (a reading
        staler at its scan, and polled twice around the piece) or late (behind the piece);
        at once while ``device`` is not ``online`` (coming online goes first)."""
        period = self.period_us[device]
        ends = now_us + piece_us
        first = sorted((self.due_us[i], i) for i, p in enumerate(self.period_us) if p < period and self.due_us[i] <= ends)
        return (first[0][0] if first and online else now_us), [i for _due, i in first]

    def polled(self, device: int, started_us: int, ended_us: int) -> int:
        """``device`` was polled from ``started_us`` to ``ended_us``; returns its next due time."""
        took = ended_us - started_us
        self.poll_dev_us[device] += (abs(took - self.poll_us[device]) - self.poll_dev_us[device]) // 4
        self.poll_us[device] += (took - self.poll_us[device]) // 8
        self.due_us[device] = self._next_due(device, ended_us)
        self.job_turn = True
        return self.due_us[device]

    def job_stepped(self) -> None:
        self.job_turn = False

    def port_reopened(self, now_us: int) -> None:
        """Poll everyone now: the devices come back one period sooner."""
        self.due_us = [min(due, now_us) for due in self.due_us]

    def _next_due(self, device: int, now_us: int) -> int:
        """On the device's own period, keeping its phase; or, for a device polled once per
        scan of an aligned loop, just early enough that its answer is in the snapshot when
        the scan copies it (most polls end in time, not half)."""
        period = self.period_us[device]
        if self.grid is not None and self.grid[1] == period:
            anchor, _ = self.grid
            lead = min(period, self.poll_us[device] + 2 * self.poll_dev_us[device] + ALIGN_MARGIN_US)
            return anchor + ((now_us + lead - anchor) // period + 1) * period - lead
        due = self.due_us[device] + period
        if due < now_us:   # overrun: skip missed slots, keep the phase
            due += ((now_us - due) // period + 1) * period
        return due
