"""Reading a journal as a person does: records as lines, filters, incidents.

``entries`` turns the verified records of a journal folder (the gateway's,
or a copy: only the record key is needed) into ``Entry`` values with their
names resolved by the catalog record of their boot: rule ids, signal and
device names.  ``incidents`` pairs each incident record with its trigger
and its evidence window.  ``cabguard journal`` (controller/cli/journalcmd.py)
prints them; docs/journal.md describes the command.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from controller.core.catalog import Catalog
from controller.core.events import EVENT_NAMES, EV_DEVICE, EV_RULE, SEVERITY_NAMES
from controller.core.modelrules import RULE_NAME as MODEL_RULE
from controller.gateway.timeline import describe
from controller.journal import records as R
from controller.journal.evidence import verified_records
from drivers.keys import CoseKey, EpochKeys
from rules.errors import RuleError
from rules.payload import decode_payload

HEALTH_NAMES = {R.HEALTH_JOURNAL_FULL: "journal full", R.HEALTH_LATE_SCANS: "late scans", R.HEALTH_BUS: "bus",
                R.HEALTH_CONFIG_FALLBACK: "config fallback", R.HEALTH_TABLE_REFUSED: "rule table refused",
                R.HEALTH_UPLINK: "uplink", R.HEALTH_CONSOLE_LOCKOUT: "console lockout",
                R.HEALTH_STARTED: "started", R.HEALTH_STOPPED: "stopped"}


@dataclass
class Entry:
    """One record, readable: its names resolved with the catalog of its boot."""
    seq: int
    boot: int
    wall_ms: int
    trusted: bool
    type: str
    severity: str
    rule: str           # the rule's id for rule events, else ""
    devices: tuple[str, ...]
    text: str
    record: dict = field(repr=False)

    @property
    def time(self) -> str:
        """ISO 8601 UTC, with '?' when the gateway's clock was not trusted."""
        stamp = dt.datetime.fromtimestamp(self.wall_ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z") + ("" if self.trusted else "?")

    def as_json(self) -> dict:
        return {"seq": self.seq, "boot": self.boot, "time": self.time, "wall_ms": self.wall_ms,
                "clock_trusted": self.trusted, "type": self.type, "severity": self.severity,
                "rule": self.rule, "devices": list(self.devices), "text": self.text}


class _Names:
    """The catalog and rule ids in force: they change at each catalog record."""

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.rules: tuple[str, ...] = ()

    def update(self, data: dict) -> None:
        self.catalog = Catalog([tuple(s) for s in data.get(R.CATALOG_SPECS, [])])
        self.rules = ()
        table = data.get(R.CATALOG_TABLE)
        if table is not None:
            try:
                self.rules = tuple(r[0] for r in decode_payload(table, "the catalog record").get("rules", []))
            except (RuleError, TypeError, IndexError, KeyError):
                self.rules = ()
        self.rules += (MODEL_RULE,)     # the model's rule comes after the table's (core/modelrules.py)

    def rule(self, index: int) -> str:
        return self.rules[index] if 0 <= index < len(self.rules) else "#{}".format(index)


def _event_text(rec: dict, names: _Names) -> tuple[str, str, tuple[str, ...]]:
    """(text, rule id, devices) of a core event record."""
    data = rec.get(R.DATA, {})
    event = (rec[R.TYPE], data.get(R.EVENT_A, 0), data.get(R.EVENT_B, 0), data.get(R.EVENT_C, 0))
    if names.catalog is None:
        return "{} {}".format(EVENT_NAMES.get(event[0], event[0]), event[1:]), "", ()
    try:
        text = describe(event, names.catalog, names.rules)
    except (IndexError, KeyError):
        text = "{} {}".format(EVENT_NAMES.get(event[0], event[0]), event[1:])
    rule = names.rule(event[1]) if event[0] == EV_RULE else ""
    devices: tuple[str, ...] = ()
    if rule and "." in rule:
        devices = (rule.rsplit(".", 1)[1],)         # per-device rules are ID.DEVICE (docs/rules.md)
    elif event[0] == EV_DEVICE and 0 <= event[1] < len(names.catalog.names):
        devices = (names.catalog.names[event[1]][: -len(".online")],)
    return text, rule, devices


def _text(rec: dict, names: _Names) -> tuple[str, str, tuple[str, ...]]:
    rtype, data = rec.get(R.TYPE), rec.get(R.DATA, {})
    if rtype in EVENT_NAMES:
        return _event_text(rec, names)
    if rtype == R.HEALTH:
        detail = str(data.get(R.HEALTH_DETAIL, ""))
        first = detail.split(" ", 1)[0].rstrip(":")
        devices = (first,) if names.catalog is not None and first in names.catalog.devices else ()
        return "{}: {}".format(HEALTH_NAMES.get(data.get(R.HEALTH_CODE), "health"), detail), "", devices
    if rtype == R.COMMAND:
        verdict = "accepted" if data.get(R.COMMAND_ACCEPTED) else "refused: " + str(data.get(R.COMMAND_REASON, ""))
        return "{} from {} (arg {}) {}".format(data.get(R.COMMAND_NAME), data.get(R.COMMAND_SOURCE),
                                                data.get(R.COMMAND_ARG), verdict), "", ()
    if rtype == R.LOGIN:
        return "login {} as {}: {}".format(data.get(R.LOGIN_USER), data.get(R.LOGIN_LEVEL),
                                           "ok" if data.get(R.LOGIN_OK) else "FAILED"), "", ()
    if rtype == R.INCIDENT:
        return "incident: alarm seq {}, evidence seq {}".format(
            data.get(R.INCIDENT_TRIGGER), data.get(R.INCIDENT_EVIDENCE)), "", ()
    if rtype == R.EVIDENCE:
        return "evidence for seq {}: {} scans".format(
            data.get(R.EVIDENCE_INCIDENT), len(data.get(R.EVIDENCE_DELTAS, []))), "", ()
    if rtype == R.VIDEO_BOOKMARK:
        span_s = (data.get(R.BOOKMARK_END_MS, 0) - data.get(R.BOOKMARK_START_MS, 0)) / 1000
        return "video bookmark: camera {} for alarm seq {}, {:.0f} s clip{}".format(
            data.get(R.BOOKMARK_CAMERA), data.get(R.BOOKMARK_INCIDENT), span_s,
            ", NVR asked to protect it" if data.get(R.BOOKMARK_PROTECT) else ""), "", ()
    if rtype == R.CATALOG:
        return "catalog: {} signals, {} rules".format(len(data.get(R.CATALOG_SPECS, [])),
                                                       len(names.rules) - 1), "", ()
    return R.TYPE_NAMES.get(rtype, str(rtype)), "", ()


def entries(directory: str | Path, provisioning: CoseKey) -> Iterator[Entry]:
    """Every verified record of the journal, oldest first."""
    names = _Names()
    for rec in verified_records(Path(directory), EpochKeys(provisioning)):
        if rec.get(R.TYPE) == R.CATALOG:
            names.update(rec.get(R.DATA, {}))
        text, rule, devices = _text(rec, names)
        severity = rec.get(R.SEVERITY, 0)
        yield Entry(rec.get(R.SEQ, -1), rec.get(R.BOOT, 0), rec.get(R.WALL_MS, 0),
                    rec.get(R.TIME_QUALITY) == R.TIME_TRUSTED, R.TYPE_NAMES.get(rec.get(R.TYPE), str(rec.get(R.TYPE))),
                    SEVERITY_NAMES[severity] if 0 <= severity < len(SEVERITY_NAMES) else str(severity),
                    rule, devices, text, rec)


@dataclass
class Filter:
    """What ``cabguard journal list`` keeps; an empty field keeps everything."""
    since_ms: int | None = None
    until_ms: int | None = None
    min_severity: int = 0
    types: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def keeps(self, e: Entry) -> bool:
        return ((self.since_ms is None or e.wall_ms >= self.since_ms)
                and (self.until_ms is None or e.wall_ms < self.until_ms)
                and SEVERITY_NAMES.index(e.severity) >= self.min_severity
                and (not self.types or e.type in self.types)
                and (not self.rules or any(e.rule == r or e.rule.split(".")[0] == r for r in self.rules))
                and (not self.devices or any(d in e.devices for d in self.devices)))


@dataclass
class Incident:
    seq: int                # the incident record: what `replay --incident` takes (its trigger's seq works too)
    time: str
    severity: str
    trigger: Entry | None
    evidence_seq: int
    window_ms: int          # the evidence window's length (0: not written yet)
    scans: int
    bookmarks: list[dict] = field(default_factory=list)   # its cameras' video bookmarks (docs/journal.md)


def incidents(all_entries: Iterable[Entry]) -> list[Incident]:
    by_seq: dict[int, Entry] = {}
    found: list[Incident] = []
    windows: dict[int, tuple[int, int]] = {}    # evidence seq -> (window ms, scans)
    marks: dict[int, list[dict]] = {}           # trigger seq -> its video bookmarks
    for e in all_entries:
        by_seq[e.seq] = e
        data = e.record.get(R.DATA, {})
        if e.type == "evidence":
            deltas = data.get(R.EVIDENCE_DELTAS, [])
            windows[e.seq] = (sum(d[0] for d in deltas), len(deltas))
        elif e.type == "video_bookmark":
            marks.setdefault(data.get(R.BOOKMARK_INCIDENT, -1), []).append({
                "seq": e.seq, "camera": data.get(R.BOOKMARK_CAMERA), "start_ms": data.get(R.BOOKMARK_START_MS),
                "end_ms": data.get(R.BOOKMARK_END_MS), "protect": data.get(R.BOOKMARK_PROTECT, False)})
        elif e.type == "incident":
            found.append(Incident(e.seq, e.time, e.severity, by_seq.get(data.get(R.INCIDENT_TRIGGER, -1)),
                                  data.get(R.INCIDENT_EVIDENCE, -1), 0, 0))
    for inc in found:
        inc.window_ms, inc.scans = windows.get(inc.evidence_seq, (0, 0))
        inc.bookmarks = marks.get(inc.trigger.seq if inc.trigger else -1, [])
    return found


def parse_time(text: str, what: str) -> int:
    """Milliseconds since 1970 of an ISO 8601 time; without an offset it is UTC."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("{} {!r}: want an ISO 8601 time like 2026-03-14T22:00 or "
                         "2026-03-14T22:00:00+01:00 (no offset: UTC)".format(what, text)) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)
