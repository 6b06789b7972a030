"""Escalation: what the cabinet does, and when, once it is in ALARM.

The site's config lists, per severity (``alarm``, ``critical``) and per
mode the cabinet was in when the alarm came (``armed``: exit delay, armed
or entry delay; ``disarmed``: disarmed or fault; ``maintenance``), a plan:
steps, each with a delay from the alarm.  A step is one of

    siren    start the siren (its on-time limit and re-triggers as before)
    strobe   the strobe
    lights   the port's floodlights (output ``lights``)
    camera   the camera's alarm preset (output ``camera``)
    uplink   push upstream at once (an ``escalation`` record of alarm
             severity, sent ahead of the queue's telemetry)
    lock     lock the battery output (latched until an ``unlock`` command)

An acknowledgement (leaving ALARM) ends the escalation: the steps not yet
taken are cancelled, so "lock after 120 s unless acknowledged" is
``{do = "lock", after_s = 120}``.  A critical raise during an alarm's
escalation switches to the critical plan from that moment; steps already
taken stay taken.

The default plans are the cabinet's behaviour before plans existed: siren
and strobe at once for an alarm, and the lock too for a critical one.

A plan is data: ``Plans`` checks it once (``ValueError`` names the plan
and the step), then ``step()`` reads it as tuples of integers.  It is part
of the core's settings, so a trace's header carries it and a replay
escalates exactly as the gateway did.
"""

from . import modes, ticks
from .events import ALARM, CRITICAL, SEVERITY_NAMES

STEP_SIREN = 0
STEP_STROBE = 1
STEP_LIGHTS = 2
STEP_CAMERA = 3
STEP_UPLINK = 4
STEP_LOCK = 5
STEP_NAMES = ("siren", "strobe", "lights", "camera", "uplink", "lock")

GROUP_ARMED = 0
GROUP_DISARMED = 1
GROUP_MAINTENANCE = 2
GROUP_NAMES = ("armed", "disarmed", "maintenance")

# The plans' severities: ALARM and CRITICAL (events.py), in that order.
PLAN_SEVERITIES = (ALARM, CRITICAL)

_DEFAULT_STEPS = {
    ALARM: ((STEP_SIREN, 0), (STEP_STROBE, 0)),
    CRITICAL: ((STEP_SIREN, 0), (STEP_STROBE, 0), (STEP_LOCK, 0)),
}


def group_of(mode):
    """The plan group of the mode the cabinet was in when the alarm came."""
    if mode == modes.MAINTENANCE:
        return GROUP_MAINTENANCE
    if mode == modes.ARMING or mode == modes.ARMED or mode == modes.ENTRY:
        return GROUP_ARMED
    return GROUP_DISARMED


def _index(names, name):
    for i in range(len(names)):
        if names[i] == name:
            return i
    return -1


class Plans:
    """Every (severity, group) plan: a tuple of ``(step, delay_ms)`` by delay.

    ``doc`` maps ``"<severity>.<group>"`` (``"critical.armed"``) to a list
    of ``[step name, delay_ms]``; a plan it leaves out keeps its default."""

    def __init__(self, doc=None):
        doc = doc or {}
        self.plans = []
        for sev in PLAN_SEVERITIES:
            self.plans.append([_DEFAULT_STEPS[sev]] * len(GROUP_NAMES))
        for key in doc:
            self._set(key, doc[key])
        self.custom = dict((k, [list(s) for s in doc[k]]) for k in doc)

    def _set(self, key, steps):
        parts = key.split(".") if isinstance(key, str) else ()
        sev = _index(SEVERITY_NAMES, parts[0]) if len(parts) == 2 else -1
        group = _index(GROUP_NAMES, parts[1]) if len(parts) == 2 else -1
        if sev not in PLAN_SEVERITIES or group < 0:
            raise ValueError("escalation plan {!r}: want '<alarm|critical>.<{}>'".format(
                key, "|".join(GROUP_NAMES)))
        if not isinstance(steps, (list, tuple)):
            raise ValueError("escalation plan {}: want a list of [step, delay_ms]".format(key))
        plan = []
        seen = []
        for s in steps:
            ok = isinstance(s, (list, tuple)) and len(s) == 2
            code = _index(STEP_NAMES, s[0]) if ok else -1
            delay = s[1] if ok else -1
            if code < 0 or not isinstance(delay, int) or isinstance(delay, bool) or delay < 0 or delay > ticks.MAX_SPAN:
                raise ValueError("escalation plan {}: step {!r}: want [one of {}, delay in ms 0..{}]".format(
                    key, s, ", ".join(STEP_NAMES), ticks.MAX_SPAN))
            if code in seen:
                raise ValueError("escalation plan {}: step '{}' is listed twice".format(key, s[0]))
            seen.append(code)
            plan.append((code, delay))
        plan.sort(key=lambda p: (p[1], p[0]))   # equal delays: in step order, on every platform
        self.plans[sev - ALARM][group] = tuple(plan)

    def plan(self, severity, group):
        return self.plans[severity - ALARM][group]

    def as_dict(self):
        """The plans given to the constructor (the defaults are implied)."""
        return self.custom


class Escalation:
    """The running escalation: which plan, since when, which steps are taken."""

    def __init__(self):
        self.severity = -1      # -1: none running
        self.group = 0
        self.since = 0
        self.done = 0           # bit per step taken
        self.cause = 0          # the lock's cause field: rule index + 1, or 0

    def running(self):
        return self.severity >= 0

    def taken(self, step):
        return (self.done >> step) & 1

    def start(self, severity, group, now, cause):
        """Start (or switch to the plan of a higher severity) at ``now``."""
        if self.severity < 0:
            self.group = group
            self.done = 0
        elif severity <= self.severity:
            return
        self.severity = severity
        self.since = now
        self.cause = cause

    def due(self, plans, now):
        """The steps due at ``now`` and not taken yet; marks them taken."""
        if self.severity < 0:
            return ()
        out = None
        elapsed = ticks.diff(now, self.since)
        for code, delay in plans.plan(self.severity, self.group):
            if delay > elapsed:
                break
            if not (self.done >> code) & 1:
                self.done |= 1 << code
                if out is None:
                    out = []
                out.append((code, delay))
        return out or ()

    def stop(self, plans):
        """End it (acknowledged): the steps of its plan not taken, cancelled."""
        if self.severity < 0:
            return ()
        pending = [code for code, _ in plans.plan(self.severity, self.group) if not (self.done >> code) & 1]
        self.severity = -1
        self.done = 0
        return pending

    def snapshot(self):
        return [self.severity, self.group, self.since, self.done, self.cause]

    def restore(self, snap):
        self.severity, self.group, self.since, self.done, self.cause = snap[0], snap[1], snap[2], snap[3], snap[4]
