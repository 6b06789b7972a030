"""A simulated month of a small port fleet, in a head-end database: what
`cabguard headend patrol` reads (its docs example and tests).

Three cabinets at site ``port-a``, each with its sealed record chain
(controller/devtools/sealed.py) stored through the collector's own
verify-and-store path (``Collector.record``), as if the uplink had sent it:

- every cabinet: shift-change visits (door opened while armed, a
  maintenance visit, re-armed 30-60 min later) around 06:00 and 14:00 on
  most days;
- gw-porta-017: an alarm at 23:40 three nights ago (acknowledged), and a
  near miss at 01:10 three weeks ago;
- gw-porta-018: vibration warnings between 02:00 and 03:00 on five of the
  last ten nights (someone trying the cabinet at the quietest hour);
- gw-porta-019: two failed console logins at 03:20 in the last week and an
  alarm an hour before ``end``, still open.

Usage: python -m controller.devtools.fleethistory DB --end ISO8601 [--days N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import datetime, timezone

from controller.devtools.sealed import SealedChain
from controller.headend import ledger
from controller.headend.collect import Collector
from controller.journal import records as R
from controller.link.wire import Topics

EV = R.ev
MODES = R.modes
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000
GATEWAYS = ("gw-porta-017", "gw-porta-018", "gw-porta-019")
VIBRATION_RULE = 4       # the rule index of the warnings (any index: the head end counts warnings)


def _mode(old: int, new: int, cause: int) -> tuple[int, int, dict]:
    return EV.EV_MODE, R.event_severity((EV.EV_MODE, old, new, cause)), {R.EVENT_A: old, R.EVENT_B: new,
                                                                         R.EVENT_C: cause}


def _visit(at: int, rng: random.Random) -> list[tuple[int, tuple[int, int, dict]]]:
    """Door opened while armed, maintenance, re-armed and armed again."""
    stay = rng.randint(30, 60) * MIN_MS
    return [(at, _mode(MODES.ARMED, MODES.ENTRY, MODES.ENTRY_OPENED)),
            (at + 10_000, _mode(MODES.ENTRY, MODES.MAINTENANCE, MODES.MAINT_START)),
            (at + stay, _mode(MODES.MAINTENANCE, MODES.ARMING, MODES.MAINT_STOP)),
            (at + stay + 30_000, _mode(MODES.ARMING, MODES.ARMED, MODES.EXIT_DONE))]


def _alarm(at: int) -> list[tuple[int, tuple[int, int, dict]]]:
    return [(at, _mode(MODES.ARMED, MODES.ALARM, MODES.RAISE_ALARM))]


def _warning(at: int) -> list[tuple[int, tuple[int, int, dict]]]:
    return [(at, (EV.EV_RULE, EV.WARNING, {R.EVENT_A: VIBRATION_RULE, R.EVENT_B: EV.WARNING, R.EVENT_C: 1})),
            (at + 20_000, (EV.EV_RULE, EV.INFO, {R.EVENT_A: VIBRATION_RULE, R.EVENT_B: EV.WARNING, R.EVENT_C: 0}))]


def _failed_login(at: int) -> list[tuple[int, tuple[int, int, dict]]]:
    return [(at, (R.LOGIN, EV.WARNING, {R.LOGIN_USER: "tech", R.LOGIN_LEVEL: "technician", R.LOGIN_OK: False}))]


def history(end_ms: int, days: int, seed: int) -> dict[str, list[tuple[int, tuple[int, int, dict]]]]:
    """Per gateway, (wall ms, (type, severity, data)) of its month, in time order."""
    rng = random.Random(seed)
    first_day = end_ms - end_ms % DAY_MS - days * DAY_MS
    out: dict[str, list] = {gw: [] for gw in GATEWAYS}
    for gw in GATEWAYS:
        for day in range(days + 1):
            for hour in (6, 14):
                at = first_day + day * DAY_MS + hour * HOUR_MS + rng.randint(-20, 20) * MIN_MS
                if rng.random() < 0.8 and at + 2 * HOUR_MS < end_ms:
                    out[gw] += _visit(at, rng)
    today = end_ms - end_ms % DAY_MS
    out["gw-porta-017"] += _alarm(today - 3 * DAY_MS + 23 * HOUR_MS + 40 * MIN_MS)
    out["gw-porta-017"] += _warning(today - 21 * DAY_MS + HOUR_MS + 10 * MIN_MS)
    for night in rng.sample(range(1, 11), 5):
        out["gw-porta-018"] += _warning(today - night * DAY_MS + 2 * HOUR_MS + rng.randint(0, 59) * MIN_MS)
    for night in (2, 5):
        out["gw-porta-019"] += _failed_login(today - night * DAY_MS + 3 * HOUR_MS + 20 * MIN_MS)
    out["gw-porta-019"] += _alarm(end_ms - HOUR_MS)
    return {gw: sorted((e for e in events if e[0] < end_ms), key=lambda e: e[0]) for gw, events in out.items()}


def fill(db: str, end_ms: int, days: int = 28, seed: int = 7) -> int:
    """Store the month in ``db``; the earlier alarms acknowledged, the last one open.  Records stored."""
    chains = {gw: SealedChain(gw) for gw in GATEWAYS}
    collector = Collector(db, [c.key for c in chains.values()])
    for gw, events in history(end_ms, days, seed).items():
        chain = chains[gw]
        sealed = [chain.append(rtype, severity, wall, data) for wall, (rtype, severity, data) in events]
        if not all(collector.ingest([(Topics.RECORDS, "", "", m) for m in sealed])):
            raise SystemExit("{}: a record was refused (collector problems: see its problems table)".format(gw))
    with collector.db.transaction(["gw-porta-017"]) as tx:
        for (incident,) in tx.execute("SELECT id FROM incidents WHERE gateway='gw-porta-017' AND state='open'"
                                      ).fetchall():
            ledger.acknowledge(tx, incident, "control room")
    return collector.stored


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m controller.devtools.fleethistory", description=__doc__.split("\n")[0])
    p.add_argument("db", help="SQLite file or postgresql:// URL")
    p.add_argument("--end", required=True, help="the month ends here (ISO 8601, e.g. 2026-12-01T21:00:00Z)")
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    end = datetime.fromisoformat(args.end.replace("Z", "+00:00"))
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    stored = fill(args.db, int(end.timestamp() * 1000), args.days, args.seed)
    print("{} records of {} gateways over {} days stored in {}".format(stored, len(GATEWAYS), args.days, args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
