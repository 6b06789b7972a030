"""``cabguard collect``: the reference receiver for integrators, the demo and benches.

Subscribes to every gateway's records and heartbeats under a topic prefix,
verifies each record's MAC (or GCM tag) with the epoch key derived from
that gateway's provisioning record key, de-duplicates by (gateway, seq),
stores verified records in SQLite, and checks the chain: each record's
"previous tag" must equal the tag of the record before it.  Records may
arrive out of order (alarms first), so a link is checked as soon as both
of its records are in.  Gaps are what is missing between a gateway's first
and last sequence number; ``report`` lists them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import cbor2

from controller.errors import CabguardError
from controller.journal import records as R
from controller.link.wire import Topics
from drivers import cose
from drivers.errors import CoseError, DriverError
from drivers.keys import EpochKeys, load_key, parse_epoch_kid
from drivers.mqtt import CONNECTED, MESSAGE, Backoff, BrokerSettings, MqttLink

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    gateway TEXT NOT NULL, seq INTEGER NOT NULL, boot INTEGER, wall_ms INTEGER,
    time_quality INTEGER, type INTEGER, severity INTEGER, kid TEXT,
    tag BLOB NOT NULL, prev BLOB NOT NULL, record BLOB NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (gateway, seq));
CREATE TABLE IF NOT EXISTS heartbeats (gateway TEXT NOT NULL, received_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problems (gateway TEXT, seq INTEGER, kind TEXT NOT NULL, detail TEXT NOT NULL,
    received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS equivocations (gateway TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
    received_at REAL NOT NULL);
"""


INT64 = 1 << 63
STORED_INTS = (R.BOOT, R.WALL_MS, R.TIME_QUALITY, R.TYPE, R.SEVERITY)   # columns of the records table


def _int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def _bad_payload(rec: object) -> str:
    """Why a verified payload cannot be stored ("" if it can).  A valid MAC
    proves who wrote it, not that its fields fit the store."""
    if not isinstance(rec, dict):
        return "not a record map"
    if not _int64(rec.get(R.SEQ)) or rec[R.SEQ] < 0 or not isinstance(rec.get(R.GATEWAY), str):
        return "not a record map with a sequence number (0 .. 2**63-1) and a gateway id"
    for key in STORED_INTS:
        if rec.get(key) is not None and not _int64(rec[key]):
            return "field {} is not a 64-bit integer".format(key)
    if not isinstance(rec.get(R.PREV, b""), bytes):
        return "previous tag is not a byte string"
    return ""


class Collector:
    """Verification and storage, without the network (so tests feed it directly)."""

    def __init__(self, db_path: str | Path, keys: list):
        self.db = sqlite3.connect(str(db_path), check_same_thread=False)  # one thread at a time
        self.db.executescript(SCHEMA)
        self.keys = {k.kid: EpochKeys(k) for k in keys}
        for (kid,) in self.db.execute("SELECT DISTINCT kid FROM records"):   # epochs seen before a restart
            parsed = parse_epoch_kid(kid.encode())
            if parsed and parsed[0] in self.keys:
                self.keys[parsed[0]].confirm(kid.encode())
        self.macs: dict[bytes, cose.CbcMac] = {}
        self.received = self.stored = self.duplicates = self.rejected = self.chain_breaks = 0
        self.equivocations = 0

    def _problem(self, gateway: str | None, seq: int | None, kind: str, detail: str) -> None:
        self.db.execute("INSERT INTO problems VALUES (?,?,?,?,?)", (gateway, seq, kind, detail, time.time()))

    def _open(self, data: bytes) -> tuple[cose.Message, dict] | None:
        try:
            msg = cose.decode(data)
        except CoseError as e:
            self._problem(None, None, "format", str(e))
            return None
        parsed = parse_epoch_kid(msg.kid)
        epochs = self.keys.get(parsed[0]) if parsed else None
        key = epochs.key_for(msg.kid) if epochs else None
        if key is None:
            self._problem(None, msg.seq, "unknown_kid", "no key for kid {}".format(cose.kid_text(msg.kid)))
            return None
        try:
            mac = None
            if not msg.encrypted:
                mac = self.macs.setdefault(msg.kid, cose.CbcMac(key.alg, key.k))
            rec = cbor2.loads(msg.verify(key.k, mac=mac))
        except (CoseError, ValueError, cbor2.CBORDecodeError) as e:
            self._problem(None, msg.seq, "mac", str(e))
            return None
        epochs.confirm(msg.kid)
        why = _bad_payload(rec)
        if why:
            self._problem(None, msg.seq, "payload", why)
            return None
        return msg, rec

    def record(self, data: bytes) -> bool:
        """Verify and store one record; False if it was refused or already held."""
        self.received += 1
        opened = self._open(data)
        if opened is None:
            self.rejected += 1
            return False
        msg, rec = opened
        gateway, seq = rec[R.GATEWAY], rec[R.SEQ]
        prev = rec.get(R.PREV, b"")
        try:
            self.db.execute("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (
                gateway, seq, rec.get(R.BOOT), rec.get(R.WALL_MS), rec.get(R.TIME_QUALITY), rec.get(R.TYPE),
                rec.get(R.SEVERITY), cose.kid_text(msg.kid), msg.tag, prev, data, time.time()))
        except sqlite3.IntegrityError:
            held = self.db.execute("SELECT record FROM records WHERE gateway=? AND seq=?", (gateway, seq)).fetchone()
            if held is not None and held[0] != data:
                self._equivocation(gateway, seq, data)
            else:
                self.duplicates += 1
            return False
        self.stored += 1
        self._check_links(gateway, seq, msg.tag, prev)
        return True

    def _equivocation(self, gateway: str, seq: int, data: bytes) -> None:
        """Two different records, both under the gateway's key, for one sequence
        number: a cloned or rewritten gateway.  Both copies are kept."""
        self.equivocations += 1
        self.db.execute("INSERT INTO equivocations VALUES (?,?,?,?)", (gateway, seq, data, time.time()))
        self._problem(gateway, seq, "equivocation", "ALARM: a second, different record {} of {} under its key "
                      "(a cloned or rewritten gateway); both copies are kept".format(seq, gateway))

    def _check_links(self, gateway: str, seq: int, tag: bytes, prev: bytes) -> None:
        q = "SELECT tag, prev FROM records WHERE gateway=? AND seq=?"
        before = self.db.execute(q, (gateway, seq - 1)).fetchone()
        if before is not None and before[0] != prev:
            self.chain_breaks += 1
            self._problem(gateway, seq, "chain", "previous tag does not match record {}".format(seq - 1))
        after = self.db.execute(q, (gateway, seq + 1)).fetchone()
        if after is not None and after[1] != tag:
            self.chain_breaks += 1
            self._problem(gateway, seq + 1, "chain", "previous tag does not match record {}".format(seq))

    def heartbeat(self, gateway: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            self._problem(gateway, None, "heartbeat", "not JSON")
            return
        self.db.execute("INSERT INTO heartbeats VALUES (?,?,?)", (gateway, time.time(), json.dumps(doc)))

    def commit(self) -> None:
        self.db.commit()

    def gaps(self, gateway: str) -> list[tuple[int, int]]:
        rows = self.db.execute(
            "SELECT seq + 1, next - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS next "
            "FROM records WHERE gateway=?) WHERE next > seq + 1", (gateway,)).fetchall()
        return [(a, b) for a, b in rows]

    def report(self) -> dict:
        gateways = {}
        for gw, first, last, count in self.db.execute(
                "SELECT gateway, MIN(seq), MAX(seq), COUNT(*) FROM records GROUP BY gateway"):
            gateways[gw] = {"first_seq": first, "last_seq": last, "records": count, "gaps": self.gaps(gw)}
        return {"received": self.received, "stored": self.stored, "duplicates": self.duplicates,
                "rejected": self.rejected, "chain_breaks": self.chain_breaks,
                "equivocations": self.equivocations, "gateways": gateways}


def load_keys(paths: list[str]) -> list:
    """Record keys from files, or every ``*.key`` that is a record key in a folder."""
    keys = []
    for p in paths:
        path = Path(p)
        files = sorted(path.glob("*.key")) if path.is_dir() else [path]
        for f in files:
            key = load_key(f)
            if b"/record" in key.kid or path.is_file():
                keys.append(key)
    if not keys:
        raise CabguardError("no record keys found in {}".format(", ".join(paths)))
    return keys


def run(broker: str, prefix: str, collector: Collector, seconds: float | None = None,
        until_records: int | None = None, stop_event: threading.Event | None = None,
        client_id: str = "cabguard-collect", protocol: int = 4) -> None:
    """Receive until SIGTERM, ``seconds``, or ``until_records`` stored; survives broker
    restarts.  A stable ``client_id`` keeps a persistent session at the broker, so
    records published while this receiver is away are delivered when it returns."""
    host, _, port = broker.rpartition(":")
    settings = BrokerSettings(host, int(port), protocol=protocol, client_id=client_id)
    link = MqttLink(settings)
    backoff = Backoff(0.1, 5.0)
    why = link.connect()
    if why:
        raise CabguardError(why)
    next_attempt = 0.0
    deadline = time.monotonic() + seconds if seconds else None
    last_commit = time.monotonic()
    try:
        while not (stop_event and stop_event.is_set()):
            if not link.connected and time.monotonic() >= next_attempt:
                link.connect()
                next_attempt = time.monotonic() + backoff.next_delay()
            link.poll(0.05)
            while link.events:
                ev = link.events.popleft()
                if ev[0] == CONNECTED:
                    backoff.reset()
                    link.subscribe(Topics.all_records(prefix))
                    link.subscribe(Topics.all_heartbeats(prefix))
                elif ev[0] == MESSAGE:
                    gateway, kind = Topics.parse(ev[1])
                    if kind == Topics.RECORDS:
                        collector.record(ev[2])
                    elif kind == Topics.HEARTBEAT:
                        collector.heartbeat(gateway, ev[2])
            if time.monotonic() - last_commit > 0.5:
                collector.commit()
                last_commit = time.monotonic()
            if deadline and time.monotonic() > deadline:
                break
            if until_records is not None and collector.stored >= until_records:
                break
    except KeyboardInterrupt:
        pass
    finally:
        collector.commit()
        link.close()


def print_report(rep: dict, out=sys.stdout) -> None:
    print("received {received}, stored {stored}, duplicates {duplicates}, rejected {rejected}, "
          "chain breaks {chain_breaks}, equivocations {equivocations}".format(**rep), file=out)
    if rep["equivocations"]:
        print("ALARM: {} record(s) contradict a stored record with the same gateway and sequence number: "
              "a cloned or rewritten gateway (both copies are in the equivocations table)".format(
                  rep["equivocations"]), file=out)
    for gw, g in sorted(rep["gateways"].items()):
        gaps = ", ".join("{}-{}".format(a, b) for a, b in g["gaps"]) or "none"
        print("  {}: seq {}..{}, {} records, gaps: {}".format(gw, g["first_seq"], g["last_seq"], g["records"], gaps),
              file=out)


def main(args: argparse.Namespace) -> int:
    try:
        collector = Collector(args.out, load_keys(args.key))
    except (DriverError, sqlite3.Error) as e:
        raise CabguardError(str(e)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(args.broker, args.prefix, collector, args.seconds, args.until_records, stop, args.client_id,
        5 if args.protocol == "5" else 4)
    rep = collector.report()
    if args.json:
        json.dump(rep, sys.stdout)
        print()
    else:
        print_report(rep)
    return 0 if rep["rejected"] == 0 and rep["chain_breaks"] == 0 and rep["equivocations"] == 0 else 1
