"""Events and commands: the plain values that go in and out of ``step()``.

An event is a 4-tuple of integers ``(code, a, b, c)``; what ``a``, ``b``
and ``c`` mean depends on ``code`` (see EVENT_FIELDS).  A command is a
2-tuple ``(code, arg)``.  Integers keep events cheap on a small runtime and
make the replay digest independent of how a platform prints things.
"""

# Event codes.
EV_MODE = 1          # (old mode, new mode, cause: a modes.* event)
EV_REFUSED = 2       # (command code, mode at the time, the command's index in the scan's list)
EV_RULE = 3          # (rule index, severity, 1 raised / 0 cleared)
EV_DEVICE = 4        # (index of the <dev>.online signal, 1 online / 0 offline, 0)
EV_SIREN_LIMIT = 5   # (milliseconds the siren sounded, re-triggers so far, 0)
EV_LOCK = 6          # (1 locked / 0 unlocked, cause: command or rule index + 1, 0)
EV_SILENCED = 7      # (0, 0, 0)
EV_OUTPUT_TEST = 8   # (output index, milliseconds, 0)
EV_DURESS = 9        # (technician number, 0, 0): silent, goes upstream at once
EV_FAULT = 10        # (fault code from the shell, mode at the time, 0)
EV_ESCALATION = 11   # (escalation step, plan severity, 1 taken / 0 cancelled by an ack): core/escalation.py
EV_INVENTORY = 12    # (index of the <battery>.modules or .serial signal, value before the restart, value now)

EVENT_NAMES = {
    EV_MODE: "mode", EV_REFUSED: "refused", EV_RULE: "rule",
    EV_DEVICE: "device", EV_SIREN_LIMIT: "siren_limit", EV_LOCK: "lock",
    EV_SILENCED: "silenced", EV_OUTPUT_TEST: "output_test",
    EV_DURESS: "duress", EV_FAULT: "fault", EV_ESCALATION: "escalation",
    EV_INVENTORY: "inventory",
}

EVENT_FIELDS = {
    EV_MODE: ("from", "to", "cause"),
    EV_REFUSED: ("command", "mode", "index"),
    EV_RULE: ("rule", "severity", "raised"),
    EV_DEVICE: ("signal", "online", "-"),
    EV_SIREN_LIMIT: ("sounded_ms", "retriggers", "-"),
    EV_LOCK: ("locked", "cause", "-"),
    EV_SILENCED: ("-", "-", "-"),
    EV_OUTPUT_TEST: ("output", "ms", "-"),
    EV_DURESS: ("technician", "-", "-"),
    EV_FAULT: ("code", "mode", "-"),
    EV_ESCALATION: ("step", "severity", "taken"),
    EV_INVENTORY: ("signal", "before", "now"),
}

# Severities, lowest first, and the extra actions a rule may ask for: part of
# the rule-table format (controller/core/table.py).  info and warning are
# recorded; alarm sounds siren and strobe; critical also locks the battery output.
INFO = 0
WARNING = 1
ALARM = 2
CRITICAL = 3
SEVERITY_NAMES = ("info", "warning", "alarm", "critical")

# Extra actions a rule may ask for on top of what its severity implies.
ACT_LOCK = 1      # lock the battery output
ACT_SILENT = 2    # no local sound or light (upstream only)
ACT_FAULT = 4     # put the gateway into FAULT
ACT_UPLINK = 8    # send upstream at once, ahead of older telemetry
ACTION_BITS = (("lock", ACT_LOCK), ("silent", ACT_SILENT), ("fault", ACT_FAULT), ("uplink", ACT_UPLINK))


def severity_code(name):
    """The severity number for its name, or -1."""
    for i in range(len(SEVERITY_NAMES)):
        if SEVERITY_NAMES[i] == name:
            return i
    return -1


# Commands: what people (console, downlink) and the shell ask of the core.
CMD_ARM = 1
CMD_DISARM = 2
CMD_MAINT_START = 3   # arg: duration in ms (0 = the configured default)
CMD_MAINT_STOP = 4
CMD_ACK = 5
CMD_SILENCE = 6
CMD_LOCK = 7
CMD_UNLOCK = 8
CMD_TEST_SIREN = 9    # arg: ms (capped)
CMD_TEST_STROBE = 10  # arg: ms (capped)
CMD_DURESS = 11       # arg: technician number
CMD_FAULT = 12        # arg: fault code found by the shell (e.g. coil readback)

COMMAND_NAMES = {
    CMD_ARM: "arm", CMD_DISARM: "disarm", CMD_MAINT_START: "maint_start",
    CMD_MAINT_STOP: "maint_stop", CMD_ACK: "ack", CMD_SILENCE: "silence",
    CMD_LOCK: "lock", CMD_UNLOCK: "unlock", CMD_TEST_SIREN: "test_siren",
    CMD_TEST_STROBE: "test_strobe", CMD_DURESS: "duress", CMD_FAULT: "fault",
}
COMMAND_CODES = {}
for _code in COMMAND_NAMES:
    COMMAND_CODES[COMMAND_NAMES[_code]] = _code

