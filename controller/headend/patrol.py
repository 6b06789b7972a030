"""``cabguard headend patrol``: where and when the guards should look in the next shift, and why.

From the records the head end holds (docs/headend.md, "Patrol hints"),
for each gateway and each hour of the day over the last ``days`` days:

- visits: a maintenance visit started or a disarm, and door events (the
  door or bolt of an armed cabinet opened: its entry delay).  They teach
  the cabinet's habits: an hour with a visit or door event on fewer than
  one day in ten is one of its *quiet hours*;
- alarms (the cabinet went to ALARM) and near misses: a rule raised at
  warning severity, a command refused (console or downlink), a failed
  console login.

An hour of the shift scores each alarm 5 and each near miss 2, twice over
when it came in the last 7 days, and twice over again in a quiet hour,
where nothing routine explains it.  The hints are the open incidents first
(a cabinet in alarm, silent, duress or equivocating needs someone now),
then the (gateway, hour) pairs of the shift by score, each with its reason.

Records are read as stored: a record sealed with COSE_Encrypt0 has an
unreadable body, so only its type and severity count: its alarms and
rules rising at warning severity count; its visits, refused commands and
failed logins cannot be told.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cbor2

from controller.errors import CabguardError
from controller.headend.store import Store, open_store
from controller.journal import records as R
from drivers import cose
from drivers.errors import CoseError

EV = R.ev
MODES = R.modes
DAY_MS = 86_400_000
WEIGHTS = {"alarm": 5.0, "near_miss": 2.0}
RECENT_DAYS = 7          # records this recent count twice
QUIET_SHARE = 0.1        # an hour with visits on fewer than this share of days is quiet
QUIET_FACTOR = 2.0


class PatrolError(CabguardError):
    """Patrol options that cannot be used; the message says which and what is wanted."""


@dataclass
class Hour:
    """One gateway's hour of the day over the window."""
    visit_days: set[int] = field(default_factory=set)
    alarms: int = 0
    near_misses: int = 0
    recent: int = 0          # alarms and near misses in the last RECENT_DAYS
    score_raw: float = 0.0   # weighted, recency counted; the quiet factor is applied by ``rank``


def _body(blob: bytes) -> dict:
    """The record's CBOR map if its body is readable (COSE_Mac0), else {}."""
    try:
        msg = cose.decode(bytes(blob))
        if msg.encrypted:
            return {}
        rec = cbor2.loads(msg.body)
    except (CoseError, ValueError, cbor2.CBORDecodeError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _kind(rtype: int, severity: int | None, rec: dict) -> str | None:
    """What a record tells the patrol: "visit", "alarm", "near_miss", or None."""
    data = rec.get(R.DATA) if isinstance(rec.get(R.DATA), dict) else {}
    if rtype == EV.EV_MODE:
        if severity == EV.ALARM:            # the change to ALARM (records.event_severity)
            return "alarm"
        new, cause = data.get(R.EVENT_B), data.get(R.EVENT_C)
        if new in (MODES.MAINTENANCE, MODES.ENTRY) or (new == MODES.DISARMED and cause == MODES.DISARM):
            return "visit"
        return None
    if rtype == EV.EV_RULE and severity == EV.WARNING:     # rising (a rule's clearing is info)
        return "near_miss"
    if rtype == R.COMMAND and data.get(R.COMMAND_ACCEPTED) is False:
        return "near_miss"
    if rtype == R.LOGIN and data.get(R.LOGIN_OK) is False:
        return "near_miss"
    return None


def tally(store: Store, until_ms: int, days: int, tz: ZoneInfo) -> dict[str, list[Hour]]:
    """Per gateway, its 24 hours of the day over the ``days`` days before ``until_ms``."""
    since_ms = until_ms - days * DAY_MS
    recent_ms = until_ms - RECENT_DAYS * DAY_MS
    hours: dict[str, list[Hour]] = defaultdict(lambda: [Hour() for _ in range(24)])
    for gw, wall, rtype, severity, blob in store.execute(
            "SELECT gateway, wall_ms, type, severity, record FROM records WHERE wall_ms >= ? AND wall_ms < ? "
            "AND type IN (?,?,?,?) ORDER BY gateway, seq",
            (since_ms, until_ms, EV.EV_MODE, EV.EV_RULE, R.COMMAND, R.LOGIN)).fetchall():
        kind = _kind(rtype, severity, _body(blob))
        if kind is None:
            continue
        local = datetime.fromtimestamp(wall / 1000, tz)
        h = hours[gw][local.hour]
        if kind == "visit":
            h.visit_days.add((wall - since_ms) // DAY_MS)
            continue
        weight = WEIGHTS[kind] * (2 if wall >= recent_ms else 1)
        h.score_raw += weight
        h.recent += wall >= recent_ms
        if kind == "alarm":
            h.alarms += 1
        else:
            h.near_misses += 1
    return dict(hours)


def shift_hours(spec: str) -> list[int]:
    """``"22-06"`` -> [22, 23, 0, ..., 5]: the hours of the day a shift covers."""
    try:
        a, b = (int(x) for x in spec.split("-"))
    except ValueError:
        raise PatrolError("--shift {!r}: want START-END in whole hours, e.g. 22-06".format(spec)) from None
    if not (0 <= a < 24 and 0 <= b <= 24) or a == b % 24:
        raise PatrolError("--shift {!r}: hours 0..24, start and end not the same".format(spec))
    return [(a + i) % 24 for i in range((b - a) % 24)]


def _reason(h: Hour, quiet: bool, days: int) -> str:
    parts = []
    if h.alarms:
        parts.append("{} alarm{}".format(h.alarms, "s" if h.alarms > 1 else ""))
    if h.near_misses:
        parts.append("{} near miss{}".format(h.near_misses, "es" if h.near_misses > 1 else ""))
    text = "{} in {} days".format(" and ".join(parts), days)
    if h.recent:
        text += ", {} in the last {}".format(h.recent, RECENT_DAYS)
    if quiet:
        text += "; a quiet hour (visits on {} of {} days)".format(len(h.visit_days), days)
    else:
        text += "; visits on {} of {} days".format(len(h.visit_days), days)
    return text


def rank(store: Store, until_ms: int, days: int, shift: list[int], tz: ZoneInfo) -> list[dict]:
    """The hints, most urgent first: open incidents, then scored (gateway, hour) pairs."""
    hints = []
    for i, gw, kind, detail in store.execute("SELECT id, gateway, kind, detail FROM incidents WHERE state='open' "
                                             "ORDER BY id").fetchall():
        hints.append({"gateway": gw, "hour": None, "score": None,
                      "why": "incident #{} open ({}): {}".format(i, kind, detail)})
    scored = []
    for gw, hours in tally(store, until_ms, days, tz).items():
        for hour in shift:
            h = hours[hour]
            if not h.score_raw:
                continue
            quiet = len(h.visit_days) < QUIET_SHARE * days
            score = h.score_raw * (QUIET_FACTOR if quiet else 1.0)
            scored.append({"gateway": gw, "hour": hour, "score": score, "why": _reason(h, quiet, days)})
    scored.sort(key=lambda s: (-s["score"], s["gateway"], shift.index(s["hour"])))
    return hints + scored


def _when(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PatrolError("--at {!r}: want an ISO 8601 time, e.g. 2026-12-01T21:00:00Z".format(text)) from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def main(args: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PatrolError("--tz {!r}: not a time zone name (e.g. UTC, Asia/Shanghai)".format(args.tz)) from None
    if args.days < 1:
        raise PatrolError("--days {}: want 1 or more".format(args.days))
    at = _when(args.at)
    start = (at.astimezone(tz) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    shift = shift_hours(args.shift) if args.shift else [(start.hour + i) % 24 for i in range(8)]
    hints = rank(open_store(args.db), int(at.timestamp() * 1000), args.days, shift, tz)[:args.top]
    label = "{:02d}:00-{:02d}:00 {}".format(shift[0], (shift[-1] + 1) % 24, args.tz)
    if args.json:
        json.dump({"shift": shift, "tz": args.tz, "at": at.isoformat(), "days": args.days, "hints": hints},
                  sys.stdout, sort_keys=True)
        print()
        return 0
    print("patrol hints for {}, from {} days of records before {}".format(
        label, args.days, at.astimezone(tz).strftime("%Y-%m-%d %H:%M")))
    for n, h in enumerate(hints, 1):
        where = "now" if h["hour"] is None else "{:02d}:00".format(h["hour"])
        score = "-" if h["score"] is None else "{:.0f}".format(h["score"])
        print("{:>2}. {} {} (score {}): {}".format(n, h["gateway"], where, score, h["why"]))
    if not hints:
        print("nothing stands out: patrol as usual")
    return 0
