"""The head end's verdicts, computed inside the database (docs/headend.md).

Every function here runs inside ``Store.transaction(gateways)``, which
holds those gateways' locks, so any number of collectors on one database
reach the verdicts one collector would: a record is stored once per
(gateway, seq); a link of the chain is checked by whichever of its two
records arrives second; a second, different record for a stored sequence
number, a record contradicting an anchored checkpoint, or a heartbeat whose
journal ends before a checkpoint it anchored earlier is an equivocation;
an alarm opens an incident (and a notification) only if none is open.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from controller.headend.store import Store
from controller.journal import records as R

EV = R.ev       # severities and event codes, through the record format (the wire contract)
TRIGGERS = ("alarm", "equivocation", "silent", "duress")


@dataclass
class Opened:
    """A record whose MAC checked out, with the fields the store keeps."""
    gateway: str
    seq: int
    kid: str
    tag: bytes
    prev: bytes
    data: bytes
    rec: dict

    @property
    def severity(self) -> int | None:
        return self.rec.get(R.SEVERITY)


@dataclass
class Tally:
    """What one transaction did (added to a collector's counters once it commits)."""
    stored: int = 0
    duplicates: int = 0
    chain_breaks: int = 0
    equivocations: int = 0
    notifications: list[int] = field(default_factory=list)

    def add(self, other: "Tally") -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.chain_breaks += other.chain_breaks
        self.equivocations += other.equivocations
        self.notifications += other.notifications


@dataclass
class Sink:
    """Where notifications go (the head-end config's ``[[sink]]``), and which triggers."""
    name: str
    kind: str
    on: tuple[str, ...]
    options: dict


def problem(tx: Store, gateway: str | None, seq: int | None, kind: str, detail: str) -> None:
    tx.execute("INSERT INTO problems (gateway, seq, kind, detail, received_at) VALUES (?,?,?,?,?)",
               (gateway, seq, kind, detail, time.time()))


def touch_gateways(tx: Store, gateways: list[str]) -> None:
    tx.many("INSERT INTO gateways (gateway) VALUES (?) ON CONFLICT (gateway) DO NOTHING", [(gw,) for gw in gateways])


def store_records(tx: Store, batch: list[Opened], sinks: list[Sink], tally: Tally) -> list[bool]:
    """Store verified records and check them, in a few round trips for the whole batch; per
    record, whether it was new.  The verdicts are those of storing them one by one."""
    first: dict[tuple[str, int], Opened] = {}
    for o in batch:
        first.setdefault((o.gateway, o.seq), o)
    now = time.time()
    fresh = list(first.values())
    keys = tx.insert_records(
        [(o.gateway, o.seq, o.rec.get(R.BOOT), o.rec.get(R.WALL_MS), o.rec.get(R.TIME_QUALITY), o.rec.get(R.TYPE),
          o.severity, o.kid, o.tag, o.prev, o.data, now) for o in fresh])
    inserted = [o for o in fresh if (o.gateway, o.seq) in keys]
    new = {id(o) for o in inserted}
    for o in batch:
        if id(o) not in new:
            _held_already(tx, o, sinks, tally)
    tally.stored += len(inserted)
    _check_links(tx, inserted, tally)
    _check_anchors(tx, inserted, sinks, tally)
    for o in sorted(inserted, key=lambda o: (o.gateway, o.seq)):
        if o.rec.get(R.TYPE) == EV.EV_DURESS:
            open_incident(tx, o.gateway, "duress", o.seq, "duress login by technician {}".format(
                o.rec.get(R.DATA, {}).get(R.EVENT_A)), sinks, tally, _record_facts(o))
        elif isinstance(o.severity, int) and o.severity >= EV.ALARM:
            open_incident(tx, o.gateway, "alarm", o.seq, "{} record ({})".format(
                EV.SEVERITY_NAMES[min(o.severity, EV.CRITICAL)], R.TYPE_NAMES.get(o.rec.get(R.TYPE), o.rec.get(R.TYPE))),
                sinks, tally, _record_facts(o))
    return [id(o) in new for o in batch]


def _held_already(tx: Store, o: Opened, sinks: list[Sink], tally: Tally) -> None:
    """(gateway, seq) was held: the same bytes are a duplicate, other bytes an equivocation."""
    held = tx.execute("SELECT record FROM records WHERE gateway=? AND seq=?", (o.gateway, o.seq)).fetchone()
    if bytes(held[0]) == o.data:
        tally.duplicates += 1
    else:
        equivocation(tx, o.gateway, o.seq, "record", o.tag, o.data,
                     "ALARM: a second, different record {} of {} under its key (a cloned or rewritten "
                     "gateway); both copies are kept".format(o.seq, o.gateway), sinks, tally)


def _record_facts(o: Opened) -> dict:
    sev = o.severity
    return {"seq": o.seq, "type": R.TYPE_NAMES.get(o.rec.get(R.TYPE), o.rec.get(R.TYPE)),
            "severity": EV.SEVERITY_NAMES[sev] if isinstance(sev, int) and 0 <= sev <= EV.CRITICAL else sev,
            "wall_ms": o.rec.get(R.WALL_MS), "rule": o.rec.get(R.RULE)}


def _check_links(tx: Store, inserted: list[Opened], tally: Tally) -> None:
    """Each link with a new record at one end and a held record at the other is checked once."""
    known = {(o.gateway, o.seq): (o.tag, o.prev) for o in inserted}
    around = sorted({(o.gateway, o.seq + d) for o in inserted for d in (-1, 1)} - set(known))
    for key, (tag, prev) in tx.lookup("records", "tag, prev", around).items():
        known[key] = (bytes(tag), bytes(prev))
    links = {(o.gateway, low) for o in inserted for low in (o.seq - 1, o.seq)
             if (o.gateway, low) in known and (o.gateway, low + 1) in known}
    for gw, low in sorted(links):
        if known[(gw, low)][0] != known[(gw, low + 1)][1]:
            tally.chain_breaks += 1
            problem(tx, gw, low + 1, "chain", "previous tag does not match record {}".format(low))


def _check_anchors(tx: Store, inserted: list[Opened], sinks: list[Sink], tally: Tally) -> None:
    anchored = tx.lookup("checkpoints", "tag", [(o.gateway, o.seq) for o in inserted])
    for o in inserted:
        found = anchored.get((o.gateway, o.seq))
        if found is None:
            continue
        if bytes(found[0]) == o.tag:
            tx.execute("UPDATE checkpoints SET state='verified' WHERE gateway=? AND seq=?", (o.gateway, o.seq))
            continue
        tx.execute("UPDATE checkpoints SET state='contradicted' WHERE gateway=? AND seq=?", (o.gateway, o.seq))
        equivocation(tx, o.gateway, o.seq, "checkpoint", o.tag, o.data,
                     "ALARM: record {} of {} has another tag than its heartbeat checkpoint anchored (a "
                     "rewritten journal)".format(o.seq, o.gateway), sinks, tally)


def equivocation(tx: Store, gateway: str, seq: int, kind: str, tag: bytes, data: bytes | None, detail: str,
                 sinks: list[Sink], tally: Tally) -> None:
    """One row per distinct contradiction (a redelivered copy adds nothing), a problem, an incident."""
    row = tx.execute("INSERT INTO equivocations (gateway, seq, kind, tag, record, detail, received_at) "
                     "VALUES (?,?,?,?,?,?,?) ON CONFLICT (gateway, seq, kind, tag) DO NOTHING RETURNING id",
                     (gateway, seq, kind, tag, data, detail, time.time())).fetchone()
    if row is None:
        return
    tally.equivocations += 1
    problem(tx, gateway, seq, "equivocation", detail)
    open_incident(tx, gateway, "equivocation", seq, detail, sinks, tally, {"seq": seq, "what": kind})


def heartbeat(tx: Store, gateway: str, site: str, doc: dict, sinks: list[Sink], tally: Tally) -> None:
    """Store a heartbeat, update the gateway's row, anchor its checkpoint."""
    now = time.time()
    tx.execute("INSERT INTO heartbeats VALUES (?,?,?)", (gateway, now, json.dumps(doc, sort_keys=True)))
    wall = doc.get("wall_ms") if isinstance(doc.get("wall_ms"), int) else None
    last_seq = doc.get("last_seq") if isinstance(doc.get("last_seq"), int) else None
    mode = doc.get("mode") if isinstance(doc.get("mode"), str) else None
    tx.execute("INSERT INTO gateways (gateway, site, mode, last_hb_at, last_hb_wall_ms, last_seq, silent) "
               "VALUES (?,?,?,?,?,?,0) ON CONFLICT (gateway) DO UPDATE SET site=excluded.site, mode=excluded.mode, "
               "last_hb_at=excluded.last_hb_at, last_hb_wall_ms=excluded.last_hb_wall_ms, "
               "last_seq=excluded.last_seq, silent=0",
               (gateway, site, mode, now, wall, last_seq))
    tx.execute("UPDATE incidents SET state='closed', closed_at=? WHERE gateway=? AND kind='silent' AND state='open'",
               (now, gateway))
    if last_seq is not None and wall is not None:
        row = tx.execute("SELECT seq, tag FROM checkpoints WHERE gateway=? AND seq>? AND hb_wall_ms<? "
                         "ORDER BY seq DESC LIMIT 1", (gateway, last_seq, wall)).fetchone()
        if row is not None:
            equivocation(tx, gateway, row[0], "backwards", bytes(row[1]), None,
                         "ALARM: {} says its journal ends at record {}, but an earlier heartbeat anchored "
                         "record {} (a wiped or rolled-back journal)".format(gateway, last_seq, row[0]), sinks, tally)
    cp = doc.get("checkpoint")
    if isinstance(cp, dict) and isinstance(cp.get("seq"), int) and isinstance(cp.get("tag"), str):
        try:
            tag = bytes.fromhex(cp["tag"])
        except ValueError:
            problem(tx, gateway, cp["seq"], "heartbeat", "checkpoint tag is not hex")
            return
        anchor(tx, gateway, cp["seq"], tag, wall, sinks, tally)


def anchor(tx: Store, gateway: str, seq: int, tag: bytes, hb_wall_ms: int | None, sinks: list[Sink],
           tally: Tally) -> None:
    """Anchor (seq, tag) for a gateway; checked against the record if it is held (now or later)."""
    held = tx.execute("SELECT tag FROM checkpoints WHERE gateway=? AND seq=?", (gateway, seq)).fetchone()
    if held is not None:
        if bytes(held[0]) != tag:
            equivocation(tx, gateway, seq, "checkpoint", tag, None,
                         "ALARM: {} anchored two different tags for record {} (a cloned gateway)".format(
                             gateway, seq), sinks, tally)
        return
    rec = tx.execute("SELECT tag, record FROM records WHERE gateway=? AND seq=?", (gateway, seq)).fetchone()
    state = "pending" if rec is None else "verified" if bytes(rec[0]) == tag else "contradicted"
    tx.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?,?)", (gateway, seq, tag, hb_wall_ms, state, time.time()))
    if state == "contradicted":
        equivocation(tx, gateway, seq, "checkpoint", bytes(rec[0]), bytes(rec[1]),
                     "ALARM: record {} of {} has another tag than its heartbeat checkpoint anchors (a "
                     "rewritten journal)".format(seq, gateway), sinks, tally)


def open_incident(tx: Store, gateway: str, kind: str, seq: int | None, detail: str, sinks: list[Sink],
                  tally: Tally, facts: dict) -> None:
    """Join the gateway's open incident of this kind, or open one and notify (once per incident)."""
    row = tx.execute("SELECT id, first_seq, last_seq FROM incidents WHERE gateway=? AND kind=? AND state='open'",
                     (gateway, kind)).fetchone()
    if row is not None:
        seqs = [x for x in (row[1], row[2], seq) if x is not None]
        tx.execute("UPDATE incidents SET records=records+1, first_seq=?, last_seq=? WHERE id=?",
                   (min(seqs, default=None), max(seqs, default=None), row[0]))
        return
    now = time.time()
    incident = tx.execute("INSERT INTO incidents (gateway, kind, state, opened_at, first_seq, last_seq, records, "
                          "detail) VALUES (?,?,'open',?,?,?,1,?) RETURNING id",
                          (gateway, kind, now, seq, seq, detail)).fetchone()[0]
    site = tx.execute("SELECT site FROM gateways WHERE gateway=?", (gateway,)).fetchone()
    payload = {"kind": kind, "gateway": gateway, "site": site[0] if site else None, "incident": incident,
               "detail": detail, "at": now, **facts}
    note = tx.execute("INSERT INTO notifications (incident, gateway, kind, created_at, payload) VALUES (?,?,?,?,?) "
                      "RETURNING id", (incident, gateway, kind, now, json.dumps(payload, sort_keys=True))).fetchone()[0]
    for sink in sinks:
        if kind in sink.on:
            tx.execute("INSERT INTO deliveries (notification, sink, state, attempts, next_at, last_error) "
                       "VALUES (?,?,'pending',0,?,'')", (note, sink.name, now))
    tally.notifications.append(note)


def sweep_silent(tx: Store, silent_after_s: float, sinks: list[Sink], tally: Tally) -> list[str]:
    """Gateways whose last heartbeat is older than ``silent_after_s``: marked silent, one incident each."""
    cutoff = time.time() - silent_after_s
    gone = [r[0] for r in tx.execute("UPDATE gateways SET silent=1 WHERE silent=0 AND last_hb_at < ? "
                                     "RETURNING gateway", (cutoff,)).fetchall()]
    for gw in sorted(gone):
        last = tx.execute("SELECT last_hb_at FROM gateways WHERE gateway=?", (gw,)).fetchone()[0]
        open_incident(tx, gw, "silent", None, "no heartbeat from {} for {:.0f} s".format(gw, time.time() - last),
                      sinks, tally, {"last_heartbeat_at": last})
    return gone


def acknowledge(tx: Store, incident: int, by: str) -> bool:
    """Record who acknowledged an incident; the next alarm opens a new one.  False if none is open."""
    row = tx.execute("UPDATE incidents SET state='acked', acked_at=?, acked_by=? WHERE id=? AND state='open' "
                     "RETURNING id", (time.time(), by, incident)).fetchone()
    return row is not None
