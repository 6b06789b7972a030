"""Records: what the journal stores, one CBOR map with small integer keys.

The schema is docs/records.cddl.  Every record has the common keys below;
``DATA`` holds the fields of its type, again with small integer keys.
The journal adds ``SEQ``, ``BOOT``, ``GATEWAY`` and ``PREV`` when it seals a
record, so a record map built here is complete except for its place in
the chain.  Encoding is deterministic CBOR (drivers.cose.encode).

``from_event`` turns each event of ``step()`` into a record, so the runtime
journals every event with one call.
"""

from __future__ import annotations

from typing import Sequence

from controller.core import events as ev, modes
from controller.core.escalation import STEP_UPLINK

# Common keys.
SEQ = 1
BOOT = 2
WALL_MS = 3
TIME_QUALITY = 4
MONO_MS = 5
GATEWAY = 6
TYPE = 7
SEVERITY = 8
RULE = 9
SNAPSHOT = 10
PREV = 11
DATA = 12

# Time quality: is the wall clock worth believing?
TIME_UNTRUSTED = 0   # free-running since boot, never synchronised
TIME_TRUSTED = 1     # synchronised (NTP, GNSS or a set RTC)

# Record types: the core's events keep their event codes (1-11).
GENESIS = 32
RECOVERED = 33
KEY_ROTATION = 34
CHECKPOINT = 35
COMMAND = 36
LOGIN = 37
INCIDENT = 38
TELEMETRY = 39
HEALTH = 40
RETENTION = 41
CATALOG = 42
EVIDENCE = 43
FLOOD = 44
VIDEO_BOOKMARK = 45

TYPE_NAMES = {**ev.EVENT_NAMES, GENESIS: "genesis", RECOVERED: "recovered",
              KEY_ROTATION: "key_rotation", CHECKPOINT: "checkpoint", COMMAND: "command",
              LOGIN: "login", INCIDENT: "incident", TELEMETRY: "telemetry",
              HEALTH: "health", RETENTION: "retention", CATALOG: "catalog",
              EVIDENCE: "evidence", FLOOD: "flood", VIDEO_BOOKMARK: "video_bookmark"}

# Data keys of the core events: 1, 2, 3 are the event's a, b, c
# (controller.core.events.EVENT_FIELDS names them).
EVENT_A, EVENT_B, EVENT_C = 1, 2, 3

# Health codes (HEALTH records, data key 1).
HEALTH_JOURNAL_FULL = 1     # over the disk budget with unsent records: info refused (and back under it)
HEALTH_LATE_SCANS = 2       # scans started late (detail: how many so far)
HEALTH_BUS = 3              # a bus event: exception answer, port missing, write result
HEALTH_CONFIG_FALLBACK = 4  # the new config was invalid: running on the last good one
HEALTH_TABLE_REFUSED = 5    # a rule table failed its checks: the previous one stays
HEALTH_UPLINK = 6           # the broker refused us, or TLS failed
HEALTH_CONSOLE_LOCKOUT = 7  # repeated failed console logins
HEALTH_STARTED = 8          # the gateway started (detail: version, config)
HEALTH_STOPPED = 9          # the gateway stopped cleanly (detail: why)
HEALTH_INPUT_REFUSED = 10   # a file the gateway reads was refused: running without it (detail: why)
HEALTH_ROOT_KEY = 11        # the root record key is on the gateway (forward security is void while it is)
HEALTH_LAN = 12             # the cabinet LAN: its MQTT broker away or refusing, the webhook unable to listen
HEALTH_CLOCK_STEP = 13      # the wall clock was stepped (a time service set it; detail: by how much)

# Data keys per type beyond the core events (docs/records.cddl).
GENESIS_KID, GENESIS_ALG = 1, 2
RECOVERED_SEGMENT, RECOVERED_OFFSET, RECOVERED_CUT, RECOVERED_LAST_SEQ, RECOVERED_CORRUPT = 1, 2, 3, 4, 5
RECOVERED_KEY_MISMATCH = 6
ROTATION_OLD_KID, ROTATION_NEW_KID, ROTATION_REASON = 1, 2, 3
ROTATE_BOOT, ROTATE_DAY, ROTATE_COMMAND = 0, 1, 2
CHECKPOINT_SINCE_BOOT, CHECKPOINT_FIRST_SEQ, CHECKPOINT_BYTES = 1, 2, 3
COMMAND_SOURCE, COMMAND_NAME, COMMAND_ARG, COMMAND_ACCEPTED, COMMAND_REASON = 1, 2, 3, 4, 5
LOGIN_USER, LOGIN_LEVEL, LOGIN_OK = 1, 2, 3
INCIDENT_TRIGGER, INCIDENT_EVIDENCE = 1, 2
HEALTH_CODE, HEALTH_DETAIL = 1, 2
RETENTION_FIRST, RETENTION_LAST, RETENTION_KEPT_ALARMS = 1, 2, 3
CATALOG_SPECS, CATALOG_CORE, CATALOG_ZONES, CATALOG_DIGEST, CATALOG_TABLE, CATALOG_MODEL = 1, 2, 3, 4, 5, 6
FLOOD_SOURCE, FLOOD_COUNT, FLOOD_FIRST_MS, FLOOD_LAST_MS, FLOOD_DIGEST = 1, 2, 3, 4, 5
EVIDENCE_INCIDENT, EVIDENCE_T0, EVIDENCE_FIRST, EVIDENCE_DELTAS, EVIDENCE_START = 1, 2, 3, 4, 5
BOOKMARK_CAMERA, BOOKMARK_START_MS, BOOKMARK_END_MS, BOOKMARK_INCIDENT, BOOKMARK_PROTECT = 1, 2, 3, 4, 5


class Context:
    """What the shell knows at the moment of an event: the clocks and the image."""

    __slots__ = ("wall_ms", "trusted", "mono_ms", "image")

    def __init__(self, wall_ms: int, trusted: bool, mono_ms: int, image: Sequence[int] | None = None):
        self.wall_ms = wall_ms
        self.trusted = trusted
        self.mono_ms = mono_ms
        self.image = image


def make(rtype: int, severity: int, ctx: Context, data: dict[int, object] | None = None,
         rule: int | None = None, snapshot: bool = False) -> dict[int, object]:
    """A record map without its chain fields (the journal adds those)."""
    rec: dict[int, object] = {
        WALL_MS: ctx.wall_ms,
        TIME_QUALITY: TIME_TRUSTED if ctx.trusted else TIME_UNTRUSTED,
        MONO_MS: ctx.mono_ms,
        TYPE: rtype,
        SEVERITY: severity,
    }
    if rule is not None:
        rec[RULE] = rule
    if snapshot and ctx.image is not None:
        rec[SNAPSHOT] = list(ctx.image)
    if data:
        rec[DATA] = data
    return rec


def event_severity(event: tuple[int, int, int, int]) -> int:
    """How serious a core event is: it decides the fsync and the uplink."""
    code, a, b, c = event
    if code == ev.EV_RULE:   # a rule clearing is news, not an alarm
        return b if c and 0 <= b <= ev.CRITICAL else ev.INFO
    if code == ev.EV_MODE:
        return {modes.ALARM: ev.ALARM, modes.FAULT: ev.CRITICAL}.get(b, ev.INFO)
    if code in (ev.EV_DURESS, ev.EV_FAULT):
        return ev.CRITICAL
    if code == ev.EV_LOCK:
        return ev.ALARM if a else ev.WARNING
    if code == ev.EV_DEVICE:   # a device answering (at every start) is no trouble; one gone silent is
        return ev.INFO if b else ev.WARNING
    if code == ev.EV_ESCALATION:   # the plan's "push upstream": sealed and sent at once
        return ev.ALARM if a == STEP_UPLINK and c else ev.INFO
    if code in (ev.EV_REFUSED, ev.EV_SIREN_LIMIT, ev.EV_INVENTORY):   # an inventory change while guarding raises its own alarm
        return ev.WARNING
    return ev.INFO


def from_event(event: tuple[int, int, int, int], ctx: Context) -> dict[int, object]:
    """The record of one ``step()`` event; the image goes in as the snapshot."""
    code, a, b, c = event
    if code not in ev.EVENT_NAMES:
        raise ValueError("event code {} is not a core event".format(code))
    rule = a if code == ev.EV_RULE else None
    return make(code, event_severity(event), ctx, {EVENT_A: a, EVENT_B: b, EVENT_C: c},
                rule=rule, snapshot=True)


def command(ctx: Context, source: str, name: str, arg: int, accepted: bool,
            reason: str = "") -> dict[int, object]:
    """A command from the console or the downlink, accepted or refused."""
    data: dict[int, object] = {COMMAND_SOURCE: source, COMMAND_NAME: name, COMMAND_ARG: arg,
                               COMMAND_ACCEPTED: accepted}
    if reason:
        data[COMMAND_REASON] = reason
    return make(COMMAND, ev.INFO if accepted else ev.WARNING, ctx, data)


def login(ctx: Context, user: str, level: str, ok: bool) -> dict[int, object]:
    return make(LOGIN, ev.INFO if ok else ev.WARNING, ctx,
                {LOGIN_USER: user, LOGIN_LEVEL: level, LOGIN_OK: ok})


def health(ctx: Context, code: int, detail: str, severity: int = ev.WARNING) -> dict[int, object]:
    """Something about the gateway itself that the head end should know."""
    return make(HEALTH, severity, ctx, {HEALTH_CODE: code, HEALTH_DETAIL: detail})


def flood(ctx: Context, source: str, count: int, first_wall_ms: int, last_wall_ms: int,
          digest: bytes) -> dict[int, object]:
    """One source's records over its limit (controller/floodgate.py), in place of them."""
    return make(FLOOD, ev.WARNING, ctx, {FLOOD_SOURCE: source, FLOOD_COUNT: count,
                                         FLOOD_FIRST_MS: first_wall_ms, FLOOD_LAST_MS: last_wall_ms,
                                         FLOOD_DIGEST: digest})


def video_bookmark(ctx: Context, camera: str, start_ms: int, end_ms: int, incident_seq: int,
                   severity: int, protect: bool) -> dict[int, object]:
    """One camera's clip window around an incident (wall ms), and whether the NVR was asked to protect it."""
    return make(VIDEO_BOOKMARK, severity, ctx, {BOOKMARK_CAMERA: camera, BOOKMARK_START_MS: start_ms,
                                                BOOKMARK_END_MS: end_ms, BOOKMARK_INCIDENT: incident_seq,
                                                BOOKMARK_PROTECT: protect})


def telemetry(ctx: Context) -> dict[int, object]:
    """A periodic snapshot of the whole image."""
    return make(TELEMETRY, ev.INFO, ctx, snapshot=True)


def catalog(ctx: Context, specs: Sequence[tuple[str, str, int]], core: dict[str, int],
            zones: Sequence[str], digest: bytes, table: bytes | None = None,
            model: dict | None = None) -> dict[int, object]:
    """The catalog (and the running rule table's payload, and the anomaly model's
    tables: ``ModelTables.as_doc()``) at each boot and table change, so evidence
    can be replayed from the journal with the same rules and model."""
    data: dict[int, object] = {CATALOG_SPECS: [list(s) for s in specs], CATALOG_CORE: dict(core),
                               CATALOG_ZONES: list(zones), CATALOG_DIGEST: digest}
    if table is not None:
        data[CATALOG_TABLE] = table
    if model is not None:
        data[CATALOG_MODEL] = model
    return make(CATALOG, ev.INFO, ctx, data)

