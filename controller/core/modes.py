"""The cabinet's modes: one transition table, one file, no mode logic elsewhere.

Theory of operation
-------------------
A cabinet is always in exactly one mode:

    DISARMED     nobody expects trouble; only rules that do not ask for
                 ``mode("armed")`` can raise an alarm.
    ARMING       the exit delay: people may still be leaving, so the entry
                 zones (door contacts) are ignored until it runs out.
    ARMED        guarding.  An entry zone opening starts the entry delay.
    ENTRY        the entry delay: an authorised person has this long to
                 disarm or start maintenance; when it runs out, ALARM.
    MAINTENANCE  an authorised, time-limited visit.  Alarm-severity rules
                 are suppressed (recorded, no siren); critical ones are not.
                 When it is stopped or expires the cabinet resumes: back to
                 ARMING if it was armed before the visit, else DISARMED.
    ALARM        latched.  Only an acknowledgement leaves it.
    FAULT        the gateway cannot guard as configured (for example an
                 output whose readback disagrees).  A fault never disarms
                 a cabinet: raised while armed it is recorded and the mode
                 stays; arming from FAULT is allowed.

After a restart (power cut, crash, watchdog) the shell restores the last
persisted mode with ``restore``: ALARM stays latched, FAULT and DISARMED
stay, the exit delay and ARMED come back ARMED, MAINTENANCE comes back
with a fresh default window, and ENTRY comes back as ALARM — a gateway
that loses power during the entry delay is the classic "crash and smash"
attack, so the interrupted delay is never granted again.

Modes change only through *mode events*: operator commands (ARM, DISARM,
MAINT_START, MAINT_STOP, ACK) and the core's own findings (EXIT_DONE,
ENTRY_OPENED, ENTRY_EXPIRED, MAINT_EXPIRED, ALARM, CRITICAL, FAULT).  The
table below lists every legal (mode, event) pair.  Internal events are legal
in every mode (the table is complete for them); a command missing from a
mode's row raises ModeError naming both, which ``step()`` turns into a
"command refused" event.  Every change of mode is reported by ``step()``
as an event.
"""

from . import ticks
from .errors import ModeError

DISARMED = 0
ARMING = 1
ARMED = 2
ENTRY = 3
MAINTENANCE = 4
ALARM = 5
FAULT = 6

MODE_NAMES = ("disarmed", "arming", "armed", "entry", "maintenance", "alarm", "fault")

# Mode events.  Commands first (they come from people), then the core's own.
ARM = 0
DISARM = 1
MAINT_START = 2
MAINT_STOP = 3
ACK = 4
EXIT_DONE = 5
ENTRY_OPENED = 6
ENTRY_EXPIRED = 7
MAINT_EXPIRED = 8
RAISE_ALARM = 9
RAISE_CRITICAL = 10
RAISE_FAULT = 11

EVENT_NAMES = (
    "arm", "disarm", "maint_start", "maint_stop", "ack", "exit_done",
    "entry_opened", "entry_expired", "maint_expired", "alarm", "critical", "fault",
)
COMMAND_EVENTS = (ARM, DISARM, MAINT_START, MAINT_STOP, ACK)
INTERNAL_EVENTS = (
    EXIT_DONE, ENTRY_OPENED, ENTRY_EXPIRED, MAINT_EXPIRED,
    RAISE_ALARM, RAISE_CRITICAL, RAISE_FAULT,
)

# Pseudo-target: leave maintenance for the mode recorded on entry.
RESUME = -1

_ARMED_FAMILY = (ARMING, ARMED, ENTRY)

TRANSITIONS = {
    DISARMED: {
        ARM: ARMING, MAINT_START: MAINTENANCE, DISARM: DISARMED,
        EXIT_DONE: DISARMED, ENTRY_OPENED: DISARMED, ENTRY_EXPIRED: DISARMED,
        MAINT_EXPIRED: DISARMED, RAISE_ALARM: ALARM, RAISE_CRITICAL: ALARM,
        RAISE_FAULT: FAULT,
    },
    ARMING: {
        DISARM: DISARMED, MAINT_START: MAINTENANCE,
        EXIT_DONE: ARMED, ENTRY_OPENED: ARMING, ENTRY_EXPIRED: ARMING,
        MAINT_EXPIRED: ARMING, RAISE_ALARM: ALARM, RAISE_CRITICAL: ALARM,
        RAISE_FAULT: ARMING,
    },
    ARMED: {
        DISARM: DISARMED, MAINT_START: MAINTENANCE, ARM: ARMED,
        EXIT_DONE: ARMED, ENTRY_OPENED: ENTRY, ENTRY_EXPIRED: ARMED,
        MAINT_EXPIRED: ARMED, RAISE_ALARM: ALARM, RAISE_CRITICAL: ALARM,
        RAISE_FAULT: ARMED,
    },
    ENTRY: {
        DISARM: DISARMED, MAINT_START: MAINTENANCE,
        EXIT_DONE: ENTRY, ENTRY_OPENED: ENTRY, ENTRY_EXPIRED: ALARM,
        MAINT_EXPIRED: ENTRY, RAISE_ALARM: ALARM, RAISE_CRITICAL: ALARM,
        RAISE_FAULT: ENTRY,
    },
    MAINTENANCE: {
        DISARM: DISARMED, MAINT_START: MAINTENANCE, MAINT_STOP: RESUME,
        EXIT_DONE: MAINTENANCE, ENTRY_OPENED: MAINTENANCE,
        ENTRY_EXPIRED: MAINTENANCE, MAINT_EXPIRED: RESUME,
        RAISE_ALARM: MAINTENANCE, RAISE_CRITICAL: ALARM, RAISE_FAULT: MAINTENANCE,
    },
    ALARM: {
        ACK: DISARMED,
        EXIT_DONE: ALARM, ENTRY_OPENED: ALARM, ENTRY_EXPIRED: ALARM,
        MAINT_EXPIRED: ALARM, RAISE_ALARM: ALARM, RAISE_CRITICAL: ALARM,
        RAISE_FAULT: ALARM,
    },
    FAULT: {
        ARM: ARMING, DISARM: DISARMED, MAINT_START: MAINTENANCE, ACK: DISARMED,
        EXIT_DONE: FAULT, ENTRY_OPENED: FAULT, ENTRY_EXPIRED: FAULT,
        MAINT_EXPIRED: FAULT, RAISE_ALARM: ALARM, RAISE_CRITICAL: ALARM,
        RAISE_FAULT: FAULT,
    },
}


class ModeMachine:
    """The current mode plus the one deadline that the mode may carry.

    ``config`` supplies ``exit_delay_ms``, ``entry_delay_ms``,
    ``maint_default_ms`` and ``maint_max_ms``.
    """

    def __init__(self, config):
        self.config = config
        self.mode = DISARMED
        self.deadline = 0
        self.resume = DISARMED

    def target(self, event):
        """The mode that ``event`` leads to, or ModeError if it is illegal."""
        row = TRANSITIONS[self.mode]
        if event not in row:
            raise ModeError(
                "mode {} does not accept {}".format(
                    MODE_NAMES[self.mode], EVENT_NAMES[event]
                )
            )
        new = row[event]
        if new == RESUME:
            new = self.resume
        return new

    def fire(self, event, now, arg=0):
        """Apply ``event`` at tick ``now``; returns the previous mode.

        ``arg`` is the requested duration for MAINT_START (0 = default).
        Raises ModeError (and changes nothing) for an illegal event.
        """
        new = self.target(event)
        old = self.mode
        cfg = self.config
        if event == MAINT_START:
            # Only the command sets the visit's window: the door opening or
            # a rule raised during the visit must not shorten or stretch it.
            if old != MAINTENANCE:
                self.resume = ARMING if old in _ARMED_FAMILY else DISARMED
            span = arg if arg > 0 else cfg.maint_default_ms
            if span > cfg.maint_max_ms:
                span = cfg.maint_max_ms
            self.deadline = ticks.add(now, span)
        elif new != old:
            if new == ARMING:
                self.deadline = ticks.add(now, cfg.exit_delay_ms)
            elif new == ENTRY:
                self.deadline = ticks.add(now, cfg.entry_delay_ms)
            else:
                self.deadline = 0
        self.mode = new
        return old

    def restore(self, mode, resume, now):
        """Come back after a restart in the mode persisted before it."""
        if mode == ENTRY:
            mode = ALARM
        elif mode == ARMING:
            mode = ARMED
        if mode not in TRANSITIONS:
            mode = DISARMED
        self.mode = mode
        self.resume = resume if resume in (ARMING, DISARMED) else DISARMED
        self.deadline = ticks.add(now, self.config.maint_default_ms) if mode == MAINTENANCE else 0

    def expiry(self, now):
        """The internal event due at ``now`` because a deadline passed, or -1."""
        mode = self.mode
        if mode == ARMING or mode == ENTRY or mode == MAINTENANCE:
            if ticks.reached(now, self.deadline):
                if mode == ARMING:
                    return EXIT_DONE
                if mode == ENTRY:
                    return ENTRY_EXPIRED
                return MAINT_EXPIRED
        return -1

    def remaining(self, now):
        """Milliseconds left on the current deadline (0 when none runs)."""
        if self.mode in (ARMING, ENTRY, MAINTENANCE):
            left = ticks.diff(self.deadline, now)
            return left if left > 0 else 0
        return 0

    def is_armed(self):
        """True in the armed family: exit delay, armed, entry delay."""
        return self.mode in _ARMED_FAMILY

    def snapshot(self):
        return (self.mode, self.deadline, self.resume)
