"""``cabguard collect``: the reference receiver for integrators, the demo and benches.

Subscribes to every gateway's records and heartbeats under a topic prefix,
verifies each record's MAC (or GCM tag) with the epoch key derived from
that gateway's provisioning record key, and hands the verified records and
the heartbeats to the store (SQLite or PostgreSQL, controller/headend/store.py),
where the ledger de-duplicates by (gateway, seq), checks the chain and the
anchored checkpoints, and opens incidents -- transactionally, so several
collectors in one shared subscription group give one collector's verdicts.
Records may arrive out of order (alarms first), so a link is checked as soon
as both of its records are in.  Gaps are what is missing between a gateway's
first and last sequence number; ``report`` lists them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import cbor2

from controller.errors import CabguardError
from controller.headend import ledger
from controller.headend.config import HeadendConfig, load as load_config
from controller.headend.ledger import Opened, Tally
from controller.headend.notify import Notifier
from controller.headend.store import Store, open_store
from controller.journal import records as R
from controller.link.wire import Topics
from drivers import cose
from drivers.errors import CoseError, DriverError
from drivers.keys import EpochKeys, load_key, parse_epoch_kid
from drivers.mqtt import CONNECTED, MESSAGE, Backoff, BrokerSettings, MqttLink

INT64 = 1 << 63
STORED_INTS = (R.BOOT, R.WALL_MS, R.TIME_QUALITY, R.TYPE, R.SEVERITY)   # columns of the records table
BATCH = 500             # messages stored in one transaction, at most
SWEEP_EVERY_S = 5.0     # how often a collector looks for gateways gone silent


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
    """Verification here, verdicts in the store (controller/headend/ledger.py), without
    the network (so tests feed it directly).  ``db`` is a SQLite path or a
    ``postgresql://`` URL; any number of collectors may share one database."""

    def __init__(self, db: str | Path, keys: list, config: HeadendConfig | None = None):
        self.db = open_store(db)
        self.config = config or HeadendConfig()
        self.keys = {k.kid: EpochKeys(k) for k in keys}
        self.kids = {kid for (kid,) in self.db.execute("SELECT kid FROM kids").fetchall()}   # epochs seen before
        for kid in self.kids:
            parsed = parse_epoch_kid(kid.encode())
            if parsed and parsed[0] in self.keys:
                self.keys[parsed[0]].confirm(kid.encode())
        self.macs: dict[bytes, cose.CbcMac] = {}
        self.received = self.rejected = 0
        self.tally = Tally()
        self.on_notify: Callable[[], None] | None = None    # wakes the notifier after a commit

    def _open(self, data: bytes) -> Opened | tuple[int | None, str, str]:
        """The verified record, or (seq, problem kind, detail)."""
        try:
            msg = cose.decode(data)
        except CoseError as e:
            return None, "format", str(e)
        parsed = parse_epoch_kid(msg.kid)
        epochs = self.keys.get(parsed[0]) if parsed else None
        key = epochs.key_for(msg.kid) if epochs else None
        if key is None:
            return msg.seq, "unknown_kid", "no key for kid {}".format(cose.kid_text(msg.kid))
        try:
            mac = None
            if not msg.encrypted:
                mac = self.macs.setdefault(msg.kid, cose.CbcMac(key.alg, key.k))
            rec = cbor2.loads(msg.verify(key.k, mac=mac))
        except (CoseError, ValueError, cbor2.CBORDecodeError) as e:
            return msg.seq, "mac", str(e)
        epochs.confirm(msg.kid)
        why = _bad_payload(rec)
        if why:
            return msg.seq, "payload", why
        return Opened(rec[R.GATEWAY], rec[R.SEQ], cose.kid_text(msg.kid), msg.tag, rec.get(R.PREV, b""), data, rec)

    def ingest(self, messages: list[tuple[str, str, str, bytes]]) -> list[bool]:
        """Verify and store (kind, gateway, site, payload) messages in one transaction;
        per message, whether it added something (a new record, a heartbeat)."""
        opened: list[Opened | tuple[int | None, str, str] | dict | None] = []
        for kind, gateway, _site, payload in messages:
            if kind == Topics.RECORDS:
                self.received += 1
                opened.append(self._open(payload))
            else:
                try:
                    doc = json.loads(payload)
                except ValueError:
                    doc = None
                opened.append(doc if isinstance(doc, dict) else None)
        gateways = {o.gateway for o in opened if isinstance(o, Opened)}
        gateways |= {m[1] for m, o in zip(messages, opened) if m[0] == Topics.HEARTBEAT}
        tally, done, rejected = Tally(), [], 0
        sinks = self.config.sinks
        with self.db.transaction(gateways) as tx:
            verified = [o for o in opened if isinstance(o, Opened)]
            ledger.touch_gateways(tx, sorted({o.gateway for o in verified}))
            new_kids = sorted({o.kid for o in verified} - self.kids)
            tx.many("INSERT INTO kids VALUES (?,?) ON CONFLICT (kid) DO NOTHING", [(k, time.time()) for k in new_kids])
            new = iter(ledger.store_records(tx, verified, sinks, tally))
            for (kind, gateway, site, _), o in zip(messages, opened):
                if isinstance(o, Opened):
                    done.append(next(new))
                elif kind == Topics.RECORDS:
                    rejected += 1
                    ledger.problem(tx, None, o[0], o[1], o[2])
                    done.append(False)
                elif o is None:
                    ledger.problem(tx, gateway, None, "heartbeat", "not a JSON object")
                    done.append(False)
                else:
                    ledger.heartbeat(tx, gateway, site, o, sinks, tally)
                    done.append(True)
        self.rejected += rejected
        self.kids.update(new_kids)
        self.tally.add(tally)
        if tally.notifications and self.on_notify:
            self.on_notify()
        return done

    def record(self, data: bytes) -> bool:
        """Verify and store one record; False if it was refused or already held."""
        return self.ingest([(Topics.RECORDS, "", "", data)])[0]

    def heartbeat(self, gateway: str, payload: bytes, site: str = "") -> bool:
        return self.ingest([(Topics.HEARTBEAT, gateway, site, payload)])[0]

    @property
    def stored(self) -> int:
        return self.tally.stored

    @property
    def chain_breaks(self) -> int:
        return self.tally.chain_breaks

    def gaps(self, gateway: str) -> list[tuple[int, int]]:
        return gaps(self.db, gateway)

    def report(self) -> dict:
        gateways = {}
        for gw, first, last, count in self.db.execute(
                "SELECT gateway, MIN(seq), MAX(seq), COUNT(*) FROM records GROUP BY gateway").fetchall():
            gateways[gw] = {"first_seq": first, "last_seq": last, "records": count, "gaps": self.gaps(gw)}
        t = self.tally
        return {"received": self.received, "stored": t.stored, "duplicates": t.duplicates,
                "rejected": self.rejected, "chain_breaks": t.chain_breaks,
                "equivocations": t.equivocations, "gateways": gateways}


def gaps(db: Store, gateway: str) -> list[tuple[int, int]]:
    """What is missing between a gateway's first and last stored record."""
    rows = db.execute(
        "SELECT seq + 1, next - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS next "
        "FROM records WHERE gateway=?) AS s WHERE next > seq + 1 ORDER BY seq", (gateway,)).fetchall()
    return [(a, b) for a, b in rows]


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
        client_id: str = "cabguard-collect", protocol: int = 4, share: str = "") -> None:
    """Receive until SIGTERM, ``seconds``, or ``until_records`` stored; survives broker
    restarts.  A stable ``client_id`` keeps a persistent session at the broker, so
    records published while this receiver is away are delivered when it returns.
    A message is acknowledged to the broker only once its transaction committed,
    so a collector killed mid-batch gets the batch again.  ``share`` joins the
    MQTT 5 shared subscription group of that name (``$share/GROUP/...``)."""
    host, _, port = broker.rpartition(":")
    settings = BrokerSettings(host, int(port), protocol=5 if share else protocol, client_id=client_id)
    link = MqttLink(settings, manual_ack=True)
    backoff = Backoff(0.1, 5.0)
    why = link.connect()
    if why:
        raise CabguardError(why)
    group = "$share/{}/".format(share) if share else ""
    next_attempt = 0.0
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while not (stop_event and stop_event.is_set()):
            if not link.connected and time.monotonic() >= next_attempt:
                link.connect()
                next_attempt = time.monotonic() + backoff.next_delay()
            link.poll(0.05)
            while len(link.events) < BATCH:     # what is already waiting joins this transaction
                before = len(link.events)
                link.poll(0.0)
                if len(link.events) == before:
                    break
            batch, acks = [], []
            while link.events:
                ev = link.events.popleft()
                if ev[0] == CONNECTED:
                    backoff.reset()
                    link.subscribe(group + Topics.all_records(prefix))
                    link.subscribe(group + Topics.all_heartbeats(prefix))
                elif ev[0] == MESSAGE:
                    gateway, kind = Topics.parse(ev[1])
                    if kind in (Topics.RECORDS, Topics.HEARTBEAT):
                        batch.append((kind, gateway, ev[1].split("/")[-3], ev[2]))
                    if ev[4]:
                        acks.append((ev[3], ev[4]))
            if batch:
                collector.ingest(batch)
            for mid, qos in acks:
                link.ack(mid, qos)
            if deadline and time.monotonic() > deadline:
                break
            if until_records is not None and collector.stored >= until_records:
                break
    except KeyboardInterrupt:
        pass
    finally:
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
    config = load_config(args.config) if args.config else HeadendConfig()
    try:
        collector = Collector(args.db, load_keys(args.key), config)
    except DriverError as e:
        raise CabguardError(str(e)) from None
    notifier = Notifier(collector.db.clone(), config, args.broker).start()
    collector.on_notify = notifier.wake
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run(args.broker, args.prefix, collector, args.seconds, args.until_records, stop, args.client_id,
            5 if args.protocol == "5" else 4, args.share or "")
    finally:
        notifier.stop()
    rep = collector.report()
    if args.json:
        json.dump(rep, sys.stdout)
        print()
    else:
        print_report(rep)
    return 0 if rep["rejected"] == 0 and rep["chain_breaks"] == 0 and rep["equivocations"] == 0 else 1
