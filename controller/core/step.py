"""``step()``: one scan of the cabinet, as a deterministic function.

``step(state, inputs, now)`` reads the input image and the commands of
this scan, advances the mode machine, the siren policy and the rules, and
returns ``(outputs, events)``.  Its result depends only on its arguments:
``state`` is the explicit accumulator that the caller owns and passes to
every scan (updated in place so that a scan allocates next to nothing), and
``now`` is the tick in milliseconds (``ticks.wrap`` of a monotonic clock).
Replaying the same inputs from the same initial state gives the same
outputs and events, bit for bit, on CPython and MicroPython.

The returned ``outputs`` list is the state's own; copy it to keep it.
"""

from . import modes, ticks
from .escalation import (
    STEP_CAMERA, STEP_LIGHTS, STEP_LOCK, STEP_SIREN, STEP_STROBE, STEP_UPLINK, Escalation, Plans, group_of,
)
from .events import (
    ACT_FAULT, ACT_LOCK, ACT_SILENT, ALARM, CMD_ACK, CMD_ARM, CMD_DISARM,
    CMD_DURESS, CMD_FAULT, CMD_LOCK, CMD_MAINT_START, CMD_MAINT_STOP,
    CMD_SILENCE, CMD_TEST_SIREN, CMD_TEST_STROBE, CMD_UNLOCK, CRITICAL,
    EV_DEVICE, EV_DURESS, EV_ESCALATION, EV_FAULT, EV_INVENTORY, EV_LOCK, EV_MODE, EV_OUTPUT_TEST,
    EV_REFUSED, EV_RULE, EV_SILENCED, EV_SIREN_LIMIT,
)
from .errors import CoreError, ModeError
from .outputs import (
    LED_FOR_MODE, N_OUTPUTS, OUT_CAMERA, OUT_LED, OUT_LIGHTS, OUT_LOCK, OUT_SIREN, OUT_STROBE,
)

_NO_EVENTS = ()

# Commands that are mode events, and the mode event each one is.
_MODE_COMMANDS = {
    CMD_ARM: modes.ARM,
    CMD_DISARM: modes.DISARM,
    CMD_MAINT_START: modes.MAINT_START,
    CMD_MAINT_STOP: modes.MAINT_STOP,
    CMD_ACK: modes.ACK,
}

# The lock's cause field for a command (rules use their index + 1).
LOCK_BY_COMMAND = 0


# The entry route (EN 50131): the bolt released, then the door opened; the
# entry delay runs from whichever comes first.  A site's default, and eval's.
DEFAULT_ENTRY_ZONES = ["io.door_open", "!io.door_bolt"]


class CoreConfig:
    """Timing and zone settings of the core; every duration in ms.

    ``values`` may also hold ``"escalation"``: the escalation plans that
    differ from the defaults (core/escalation.py, ``Plans``)."""

    DEFAULTS = (
        ("exit_delay_ms", 30000),
        ("entry_delay_ms", 30000),
        ("maint_default_ms", 30 * 60000),
        ("maint_max_ms", 4 * 3600000),
        ("siren_max_ms", 3 * 60000),
        ("siren_retriggers", 3),
        ("test_max_ms", 10000),
    )

    def __init__(self, values=None, entry_zones=()):
        values = values or {}
        self.escalation = Plans(values.get("escalation"))
        for name, default in self.DEFAULTS:
            v = values.get(name, default)
            if not isinstance(v, int) or v < 0 or v > ticks.MAX_SPAN:
                raise ValueError(
                    "core setting {} = {!r}: want a whole number of ms from 0 to {}".format(
                        name, v, ticks.MAX_SPAN
                    )
                )
            setattr(self, name, v)
        for name in values:
            if name != "escalation" and name not in [d[0] for d in self.DEFAULTS]:
                raise ValueError("unknown core setting '{}'".format(name))
        # The signals that start the entry delay (EN 50131's entry route): the
        # index of one that opens its zone by rising, ~index (negative) of one
        # that opens it by falling (Catalog.zone).
        self.entry_zones = tuple(entry_zones)

    def as_dict(self):
        d = dict((name, getattr(self, name)) for name, _ in self.DEFAULTS)
        plans = self.escalation.as_dict()
        if plans:
            d["escalation"] = plans
        return d


class CoreState:
    """Everything ``step()`` remembers between scans."""

    def __init__(self, catalog, config, rules=None):
        self.catalog = catalog
        self.config = config
        self.machine = modes.ModeMachine(config)
        self.outputs = [0] * N_OUTPUTS
        self.drive_key = None       # what _drive computed the outputs from
        self.lock = 0
        self.siren_on = 0           # 1 while the alarm siren may sound
        self.siren_since = 0        # tick it started
        self.siren_retriggers = 0
        self.test_until = [0, 0]    # siren, strobe test deadlines
        self.test_on = [0, 0]
        self.zone_prev = [0] * len(config.entry_zones)     # 1: that zone is open
        self.zone_online = tuple(-1 if z >= 0 else _online_twin(catalog, ~z) for z in config.entry_zones)
        online = [catalog.index[d + ".online"] for d in catalog.devices]
        self.online_idx = tuple(online)
        self.online_prev = [0] * len(online)
        # The batteries' inventory: per device with both a ``modules`` and a
        # ``serial`` signal, (modules index, serial index, online index), and
        # the last (modules index, modules, serial) read while it answered
        # (-1: never read).  A tuple replaced only when a reading changes, so
        # ``persisted()`` stays cheap to compare.
        batteries = []
        for d in catalog.devices:
            m, s = catalog.index.get(d + ".modules"), catalog.index.get(d + ".serial")
            if m is not None and s is not None:
                batteries.append((m, s, catalog.index[d + ".online"]))
        self.battery_idx = tuple(batteries)
        self.inventory = tuple((b[0], -1, -1) for b in batteries)
        self.inventory_before = None   # after a restart: the previous run's inventory, until each battery is read
        # Every image index that _devices, _inventory and _zones read, and
        # (at the same index) what it read there when they last ran (None:
        # not known).  A scan where none moved has nothing for the three to
        # do (most scans): one short loop instead of their three.
        read = set(online) | set(self.zone_online) | set(z if z >= 0 else ~z for z in config.entry_zones)
        for b in batteries:
            read.update(b)
        read.discard(-1)
        self.inputs_idx = tuple(sorted(read))
        self.inputs_last = [None] * catalog.size
        self.rules = rules          # an evaluator (controller.core.table) or None
        self.escalation = Escalation()
        self.scans = 0

    @property
    def mode(self):
        return self.machine.mode

    def persisted(self):
        """What must survive a restart: ``(mode, resume, lock, escalation, siren, inventory)``.

        ``escalation`` is the running plan's progress (severity, group, since,
        steps taken, cause) and ``siren`` the alarm siren's (on, since,
        re-triggers); ``since`` values are ticks.  ``inventory`` is each
        battery's last reading, ``(modules index, modules, serial)``, -1 where
        never read.  It changes only when the mode, the lock, a step taken,
        the siren or a battery's modules or serial change, never with time."""
        return (self.machine.mode, self.machine.resume, self.lock,
                tuple(self.escalation.snapshot()), (self.siren_on, self.siren_since, self.siren_retriggers),
                self.inventory)

    def resume_after_restart(self, persisted, now, then):
        """Resume from ``persisted()`` of the previous run (modes.restore has the mode policy).

        ``then`` is this instant read on the previous run's tick clock (equal
        to ``now`` when the clock ran on, as it does over a process restart),
        or UNKNOWN when the time since is not known (a reboot before the wall
        clock is trusted) or longer than any step's delay.  A latched alarm's
        escalation resumes: steps taken stay taken, pending steps come due at
        their original times (those due while the gateway was down, at its
        first scan), and a sounding siren keeps its on-time.  With the time UNKNOWN an interrupted delay is
        never granted again: every pending step is due at once and a sounding
        siren starts a new on-time.  A persisted state without the escalation
        (an older gateway's, or the entry delay that comes back as ALARM)
        escalates afresh from the restart, as an alarm raised while armed.

        The persisted inventory is compared with each battery's first reading
        (``_inventory``): modules gone or another serial across the time the
        gateway was down, while it guards, are an alarm."""
        mode, resume, lock = persisted[0], persisted[1], persisted[2]
        self.machine.restore(mode, resume, now)
        if len(persisted) > 5:
            self._restore_inventory(persisted[5])
        self.lock = 1 if lock else 0
        esc = persisted[3] if len(persisted) > 3 else None
        if self.machine.mode == modes.ALARM and esc is not None and esc[0] >= 0:
            self.escalation.restore(esc)
            plan = self.config.escalation.plan(esc[0], esc[1])
            self.escalation.since = _carried(esc[2], now, then, plan[-1][1] if plan else 0)
            on, since, retriggers = persisted[4]
            self.siren_on, self.siren_retriggers = on, retriggers
            self.siren_since = _carried(since, now, then, 0) if on else 0
        elif self.machine.mode == modes.ALARM:
            _escalate(self, ALARM, modes.ARMED, now, 0, None)
        _drive(self, now)

    def _restore_inventory(self, saved):
        """Take the previous run's inventory: kept as ours until a battery is
        read (a restart before it answers loses nothing), and compared with
        its first reading.  Entries for a signal this catalog no longer has
        at that index (the site's devices changed) are dropped."""
        inventory = list(self.inventory)
        before = [None] * len(inventory)
        for entry in saved:
            for k in range(len(inventory)):
                if inventory[k][0] == entry[0] and len(entry) == 3:
                    inventory[k] = (entry[0], entry[1], entry[2])
                    before[k] = (entry[1], entry[2])
        self.inventory = tuple(inventory)
        self.inventory_before = before
        self.inputs_last = [None] * self.catalog.size

    def snapshot(self):
        """What a replay needs to start here: plain integers and lists.

        Evidence windows carry it (docs/trace.md, header key "start"), with
        the rules' state ("rules") when there are rules and the anomaly
        model's ("model") when it runs in front of them."""
        m = self.machine
        snap = {
            "mode": m.mode, "deadline": m.deadline, "resume": m.resume, "lock": self.lock,
            "siren": [self.siren_on, self.siren_since, self.siren_retriggers],
            "tests": [self.test_on[0], self.test_on[1], self.test_until[0], self.test_until[1]],
            "zones": list(self.zone_prev), "online": list(self.online_prev),
            "escalation": self.escalation.snapshot(),
            "inventory": [list(e) for e in self.inventory],
        }
        if self.inventory_before is not None:
            snap["inventory_before"] = [list(b) if b is not None else None for b in self.inventory_before]
        rules = self.rules
        if rules is not None:
            table = rules.rule_state()
            if table is not None:
                snap["rules"] = table
            if hasattr(rules, "model_state"):      # the anomaly model (core/modelrules.py)
                snap["model"] = rules.model_state()
        return snap

    def restore(self, snap):
        """Start from a ``snapshot()``; CoreError names what does not fit."""
        try:
            siren, tests = snap["siren"], snap["tests"]
            zones, online = snap["zones"], snap["online"]
            if len(siren) != 3 or len(tests) != 4:
                raise CoreError("start: 'siren' needs 3 numbers and 'tests' 4")
            if len(zones) != len(self.zone_prev) or len(online) != len(self.online_prev):
                raise CoreError("start: 'zones' needs {} values and 'online' {}".format(
                    len(self.zone_prev), len(self.online_prev)))
            if snap["mode"] not in range(len(modes.MODE_NAMES)):
                raise CoreError("start: unknown mode {!r}".format(snap["mode"]))
            m = self.machine
            m.mode, m.deadline, m.resume = snap["mode"], snap["deadline"], snap["resume"]
            self.lock = snap["lock"]
        except (KeyError, TypeError) as e:
            raise CoreError("start: not a core snapshot ({!r} missing or malformed)".format(e.args[0] if e.args else e))
        self.siren_on, self.siren_since, self.siren_retriggers = siren[0], siren[1], siren[2]
        self.test_on = [tests[0], tests[1]]
        self.test_until = [tests[2], tests[3]]
        self.zone_prev = list(zones)
        self.online_prev = list(online)
        self.inputs_last = [None] * self.catalog.size    # what _devices, _zones and _inventory compare with changed
        if snap.get("rules") is not None and self.rules is not None:
            self.rules.restore_rule_state(snap["rules"])
        if snap.get("model") is not None and hasattr(self.rules, "restore_model_state"):
            # Without the model (a replay given only a table) the rules read its score off the image.
            self.rules.restore_model_state(snap["model"])
        inventory = snap.get("inventory")
        if inventory is not None:      # evidence written before the inventory has none
            if len(inventory) != len(self.inventory):
                raise CoreError("start: 'inventory' needs {} entries".format(len(self.inventory)))
            self.inventory = tuple((e[0], e[1], e[2]) for e in inventory)
            before = snap.get("inventory_before")
            self.inventory_before = [tuple(b) if b is not None else None for b in before] if before is not None else None
        esc = snap.get("escalation")
        if esc is not None:      # evidence written before escalation plans has none
            if not isinstance(esc, list) or len(esc) != 5:
                raise CoreError("start: 'escalation' needs 5 numbers")
            self.escalation.restore(esc)


# ``resume_after_restart``'s ``then`` when the time since the last run is not known.
UNKNOWN = -1


def _carried(since, now, then, unknown_age):
    """The tick ``since`` of the previous run's clock on this run's clock
    (``unknown_age``: its age when ``then`` is UNKNOWN); a negative age (a
    clock that went back) counts as 0."""
    age = ticks.diff(then, since) if then != UNKNOWN else unknown_age
    return ticks.add(now, -age if age > 0 else 0)


def step(state, inputs, now):
    """One scan.  ``inputs`` is ``(image, commands)``; returns ``(outputs, events)``."""
    image, commands = inputs
    events = None
    machine = state.machine
    index = 0
    for cmd in commands:
        events = _command(state, cmd, index, now, events)
        index += 1
    last = state.inputs_last
    moved = state.inventory_before is not None       # (a restart's first readings: compare them)
    if not moved:
        for i in state.inputs_idx:
            if image[i] != last[i]:
                moved = True
                break
    if moved:
        events = _devices(state, image, events)
        events = _inventory(state, image, now, events)
        events = _zones(state, image, now, events)
        for i in state.inputs_idx:
            last[i] = image[i]
    due = machine.expiry(now)
    if due >= 0:
        events = _fire(state, due, now, 0, events)
    if state.rules is not None:
        for change in state.rules.scan(image, now, machine.mode):
            events = _rule(state, change, now, events)
    if state.escalation.severity >= 0:      # running(), without a call on every scan
        events = _advance(state, now, events)
    if state.siren_on and ticks.diff(now, state.siren_since) >= state.config.siren_max_ms:
        state.siren_on = 0
        events = _emit(events, (EV_SIREN_LIMIT, state.config.siren_max_ms, state.siren_retriggers, 0))
    _drive(state, now)
    state.scans += 1
    return state.outputs, (events if events is not None else _NO_EVENTS)


def _emit(events, ev):
    if events is None:
        events = []
    events.append(ev)
    return events


def _fire(state, mode_event, now, arg, events, cause=0):
    """Apply a mode event; report and react to a change of mode.  ``cause``
    is the lock's cause field should the escalation lock (rule index + 1)."""
    machine = state.machine
    old = machine.fire(mode_event, now, arg)
    new = machine.mode
    if new != old:
        events = _emit(events, (EV_MODE, old, new, mode_event))
        if new == modes.ALARM:
            severity = CRITICAL if mode_event == modes.RAISE_CRITICAL else ALARM
            events = _escalate(state, severity, old, now, cause, events)
        elif old == modes.ALARM:
            state.siren_on = 0
            state.siren_retriggers = 0
            esc = state.escalation
            severity = esc.severity
            for code in esc.stop(state.config.escalation):
                events = _emit(events, (EV_ESCALATION, code, severity, 0))
    return events


def _escalate(state, severity, mode_before, now, cause, events):
    """Start the escalation (or raise its plan's severity) and take what is due."""
    state.escalation.start(severity, group_of(mode_before), now, cause)
    return _advance(state, now, events)


def _advance(state, now, events):
    """Take the escalation's steps that are due: the siren starts, the lock
    locks, the lights and camera follow in ``_drive``.  A step taken after
    a delay, and every ``uplink`` step, is an event; one at 0 ms comes with
    the alarm's own mode event."""
    esc = state.escalation
    for code, delay in esc.due(state.config.escalation, now):
        if code == STEP_SIREN:
            _start_siren(state, now)
        elif code == STEP_LOCK and not state.lock:
            state.lock = 1
            events = _emit(events, (EV_LOCK, 1, esc.cause, 0))
        if delay > 0 or code == STEP_UPLINK:
            events = _emit(events, (EV_ESCALATION, code, esc.severity, 1))
    return events


def _start_siren(state, now):
    state.siren_on = 1
    state.siren_since = now


def _command(state, cmd, index, now, events):
    """Apply one command; a refusal names the command's place in the scan's
    list (two commands of one code in one scan can fare differently)."""
    code, arg = cmd
    machine = state.machine
    mode_event = _MODE_COMMANDS.get(code)
    if mode_event is not None:
        try:
            return _fire(state, mode_event, now, arg, events)
        except ModeError:
            return _emit(events, (EV_REFUSED, code, machine.mode, index))
    if code == CMD_SILENCE:
        if machine.mode != modes.ALARM or not state.siren_on:
            return _emit(events, (EV_REFUSED, code, machine.mode, index))
        state.siren_on = 0
        return _emit(events, (EV_SILENCED, 0, 0, 0))
    if code == CMD_LOCK or code == CMD_UNLOCK:
        want = 1 if code == CMD_LOCK else 0
        if want != state.lock:
            state.lock = want
            events = _emit(events, (EV_LOCK, want, LOCK_BY_COMMAND, 0))
        return events
    if code == CMD_TEST_SIREN or code == CMD_TEST_STROBE:
        if machine.mode not in (modes.DISARMED, modes.MAINTENANCE):
            return _emit(events, (EV_REFUSED, code, machine.mode, index))
        which = 0 if code == CMD_TEST_SIREN else 1
        span = arg if 0 < arg < state.config.test_max_ms else state.config.test_max_ms
        state.test_on[which] = 1
        state.test_until[which] = ticks.add(now, span)
        return _emit(events, (EV_OUTPUT_TEST, which, span, 0))
    if code == CMD_DURESS:
        return _emit(events, (EV_DURESS, arg, 0, 0))
    if code == CMD_FAULT:
        events = _emit(events, (EV_FAULT, arg, machine.mode, 0))
        return _fire(state, modes.RAISE_FAULT, now, 0, events)
    return _emit(events, (EV_REFUSED, code, machine.mode, index))


def _devices(state, image, events):
    prev = state.online_prev
    k = 0
    for i in state.online_idx:
        v = image[i]
        if v != prev[k]:
            prev[k] = v
            events = _emit(events, (EV_DEVICE, i, v, 0))
        k += 1
    return events


def _inventory(state, image, now, events):
    """Keep each battery's last (modules, serial) reading; after a restart,
    compare its first reading with the previous run's: fewer modules (a
    critical alarm, as a module pulled while armed) or another serial (an
    alarm, as a pack swapped) while the cabinet guards (the armed family, or
    the alarm it latched) happened while nobody scanned: a gateway's power
    pulled during a break-in.  In maintenance or disarmed it is someone's
    work, or nothing guarded: the event alone puts it on the record."""
    inventory = state.inventory
    before = state.inventory_before
    k = -1
    for mi, si, oi in state.battery_idx:
        k += 1
        if not image[oi]:
            continue
        modules = image[mi]
        serial = image[si]
        if before is not None and before[k] is not None:
            was_modules, was_serial = before[k]
            before[k] = None
            guarding = state.machine.is_armed() or state.machine.mode == modes.ALARM
            if 0 <= modules < was_modules:
                events = _emit(events, (EV_INVENTORY, mi, was_modules, modules))
                if guarding:
                    events = _raise(state, CRITICAL, now, 0, events)
            if serial != was_serial and serial > 0 and was_serial > 0:
                events = _emit(events, (EV_INVENTORY, si, was_serial, serial))
                if guarding:
                    events = _raise(state, ALARM, now, 0, events)
        entry = inventory[k]
        if entry[1] != modules or entry[2] != serial:
            inventory = inventory[:k] + ((mi, modules, serial),) + inventory[k + 1:]
            state.inventory = inventory
    return events


def _online_twin(catalog, index):
    """The image index of the ``online`` twin of the device that reports
    signal ``index``, or -1 for a signal no device reports."""
    twin = catalog.names[index].rsplit(".", 1)[0] + ".online"
    return catalog.index.get(twin, -1)


def _zones(state, image, now, events):
    # A device not polled yet reads 0 everywhere: closed for a zone that
    # opens by rising, open for one that opens by falling (a bolt), so the
    # latter is read only while its device answers, or every boot and
    # restart would open it.
    zones = state.config.entry_zones
    online = state.zone_online
    prev = state.zone_prev
    rose = False
    k = -1
    for z in zones:
        k += 1
        o = online[k]
        if o >= 0 and not image[o]:
            continue
        v = (1 if image[z] else 0) if z >= 0 else (0 if image[~z] else 1)
        if v != prev[k]:
            if v:
                rose = True
            prev[k] = v
    if rose:
        events = _fire(state, modes.ENTRY_OPENED, now, 0, events)
    return events


def _rule(state, change, now, events):
    """React to one rule that was raised or cleared this scan."""
    index, severity, actions, raised = change
    events = _emit(events, (EV_RULE, index, severity, raised))
    if not raised:
        return events
    silent = actions & ACT_SILENT
    # A rule's own lock action, and a silent critical rule (no ALARM, so no
    # escalation), lock at once; otherwise the escalation plan decides when.
    if actions & ACT_LOCK or (severity == CRITICAL and silent):
        if not state.lock:
            state.lock = 1
            events = _emit(events, (EV_LOCK, 1, index + 1, 0))
    if actions & ACT_FAULT:
        events = _fire(state, modes.RAISE_FAULT, now, 0, events)
    if severity >= ALARM and not silent:
        events = _raise(state, severity, now, index + 1, events)
    return events


def _raise(state, severity, now, cause, events):
    """Raise an alarm (``severity`` ALARM or CRITICAL); ``cause`` is the lock's
    cause field (a rule's index + 1, 0 for the core's own)."""
    before = state.machine.mode
    event = modes.RAISE_CRITICAL if severity == CRITICAL else modes.RAISE_ALARM
    events = _fire(state, event, now, 0, events, cause)
    if before == modes.ALARM:
        # Already in ALARM: a critical raise moves to the critical plan.
        events = _escalate(state, severity, before, now, cause, events)
    if before == modes.ALARM and not state.siren_on and state.escalation.taken(STEP_SIREN):
        # Re-trigger policy: a new raise restarts a siren that timed out
        # or was silenced, a bounded number of times per alarm.
        if state.siren_retriggers < state.config.siren_retriggers:
            state.siren_retriggers += 1
            _start_siren(state, now)
    return events


def _drive(state, now):
    """Compute the output image from the state after this scan's changes."""
    mode = state.machine.mode
    test_on = state.test_on
    if test_on[0] or test_on[1]:
        for which in (0, 1):
            if test_on[which] and ticks.reached(now, state.test_until[which]):
                test_on[which] = 0
    alarm = mode == modes.ALARM
    taken = state.escalation.done if alarm else 0
    # The outputs are a function of these alone: unchanged, they are as
    # the last scan left them (most scans).
    key = (mode, state.siren_on, state.lock, taken, test_on[0], test_on[1])
    if key == state.drive_key:
        return
    state.drive_key = key
    out = state.outputs
    out[OUT_SIREN] = 1 if (alarm and state.siren_on) or test_on[0] else 0
    out[OUT_STROBE] = 1 if (taken >> STEP_STROBE) & 1 or test_on[1] else 0
    out[OUT_LOCK] = state.lock
    out[OUT_LED] = LED_FOR_MODE[mode]
    out[OUT_LIGHTS] = (taken >> STEP_LIGHTS) & 1
    out[OUT_CAMERA] = (taken >> STEP_CAMERA) & 1
