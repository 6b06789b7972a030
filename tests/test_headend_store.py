"""The head end's verdicts in the database, on SQLite and on a real PostgreSQL
(tests/conftest.py starts it): order-independent de-duplication and chain
checks, equivocations, anchored checkpoints, incidents once per incident,
silent gateways, migrations, and two collectors on one database."""

import random
import sqlite3
import threading
import time

import pytest

from controller.devtools.sealed import SealedChain
from controller.headend import ledger
from controller.headend.collect import Collector
from controller.headend.config import HeadendConfig
from controller.headend.ledger import Sink, Tally
from controller.headend.store import MIGRATIONS, StoreError, open_store
from controller.journal import records as R
from controller.link.wire import Topics

HOOK = Sink("log", "command", ledger.TRIGGERS, {"argv": ["true"], "attempts": 1})
CONFIG = HeadendConfig(sinks=[HOOK])


def verdicts(store) -> dict:
    """Everything a verdict is: which records are held, the problems and equivocations, the incidents."""
    q = store.execute
    return {
        "records": q("SELECT gateway, seq, tag FROM records ORDER BY gateway, seq").fetchall(),
        "problems": q("SELECT gateway, seq, kind FROM problems ORDER BY gateway, seq, kind").fetchall(),
        "equivocations": q("SELECT gateway, seq, kind FROM equivocations ORDER BY gateway, seq, kind").fetchall(),
        "incidents": q("SELECT gateway, kind, state, records FROM incidents ORDER BY gateway, kind").fetchall(),
        "notifications": q("SELECT COUNT(*) FROM notifications").fetchone()[0],
        "deliveries": q("SELECT COUNT(*) FROM deliveries").fetchone()[0],
    }


def as_bytes(rows):
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]


def messages(chains: list[SealedChain], extra: list[bytes] = ()) -> list[bytes]:
    return [m for c in chains for m in c.records] + list(extra)


def fleet_with_faults() -> tuple[list[SealedChain], list[bytes]]:
    """Two gateways: gw-a with alarms at 3 and 4 and a broken link at 6, gw-b clean but for a
    second record 2 (an equivocation); plus redelivered copies."""
    a = SealedChain("gw-a").extend(6, severity={3: 2, 4: 3})
    bad, tag = a.seal(6, b"\x00" * 16)            # record 6 does not chain to record 5
    a.records.append(bad)
    a.tags.append(tag)
    a.extend(3)
    b = SealedChain("gw-b").extend(8)
    other, _ = b.seal(2, b.tags[1], severity=1)
    return [a, b], [other, a.records[0], b.records[5], a.records[3]]


def run_order(db, chains, msgs, seed):
    collector = Collector(db, [c.key for c in chains], CONFIG)
    order = list(msgs)
    random.Random(seed).shuffle(order)
    # the equivocating copy of gw-b's record 2 comes last, so which copy is held does not depend on the order
    order.sort(key=lambda m: m == msgs[len(msgs) - 4])
    for i in range(0, len(order), 3):
        collector.ingest([(Topics.RECORDS, "", "", m) for m in order[i:i + 3]])
    return collector


def test_verdicts_do_not_depend_on_the_order_records_arrive_in(db, tmp_path):
    chains, extra = fleet_with_faults()
    msgs = messages(chains, extra)
    first = run_order(db, chains, msgs, 0)
    want = as_bytes(verdicts(first.db)["records"])
    got = verdicts(first.db)
    assert got["problems"] == [("gw-a", 6, "chain"), ("gw-b", 2, "equivocation")]
    assert got["equivocations"] == [("gw-b", 2, "record")]
    assert got["incidents"] == [("gw-a", "alarm", "open", 2), ("gw-b", "equivocation", "open", 1)]
    assert (got["notifications"], got["deliveries"]) == (2, 2)
    assert len(want) == 10 + 8
    rep = first.report()
    assert (rep["stored"], rep["duplicates"], rep["equivocations"], rep["chain_breaks"]) == (18, 3, 1, 1)
    for seed in (1, 2):        # the same fleet, other orders, fresh databases
        fresh = str(tmp_path / "order{}.db".format(seed))
        again = verdicts(run_order(fresh, chains, msgs, seed).db)
        assert as_bytes(again["records"]) == want
        assert {k: v for k, v in again.items() if k != "records"} == {k: v for k, v in got.items() if k != "records"}


def test_a_gap_is_reported_until_the_missing_records_arrive(db):
    chain = SealedChain("gw-g").extend(10)
    collector = Collector(db, [chain.key])
    for seq in (0, 1, 2, 7, 8, 9):
        assert collector.record(chain.records[seq])
    assert collector.gaps("gw-g") == [(3, 6)]
    for seq in (5, 3, 6, 4):
        collector.record(chain.records[seq])
    assert collector.gaps("gw-g") == []
    assert collector.report()["chain_breaks"] == 0


def test_a_checkpoint_is_verified_when_its_record_arrives_before_or_after(db):
    chain = SealedChain("gw-c").extend(10)
    collector = Collector(db, [chain.key])
    collector.record(chain.records[4])
    collector.heartbeat("gw-c", chain.heartbeat("port-a", 4, 1000), "port-a")
    collector.heartbeat("gw-c", chain.heartbeat("port-a", 9, 2000), "port-a")
    collector.record(chain.records[9])
    rows = collector.db.execute("SELECT seq, state FROM checkpoints ORDER BY seq").fetchall()
    assert rows == [(4, "verified"), (9, "verified")]
    assert collector.db.execute("SELECT COUNT(*) FROM equivocations").fetchone()[0] == 0


@pytest.mark.parametrize("record_first", [True, False])
def test_a_record_contradicting_its_anchored_checkpoint_is_an_equivocation(db, record_first):
    chain = SealedChain("gw-c").extend(6)
    rewritten, _ = chain.seal(5, chain.tags[4], severity=1)     # the same place, other contents
    collector = Collector(db, [chain.key], CONFIG)
    steps = [lambda: collector.record(rewritten),
             lambda: collector.heartbeat("gw-c", chain.heartbeat("port-a", 5, 1000), "port-a")]
    for step in steps if record_first else steps[::-1]:
        step()
    assert collector.db.execute("SELECT seq, kind FROM equivocations").fetchall() == [(5, "checkpoint")]
    assert collector.db.execute("SELECT state FROM checkpoints").fetchall() == [("contradicted",)]
    assert collector.db.execute("SELECT kind, state FROM incidents").fetchall() == [("equivocation", "open")]


def test_two_heartbeats_anchoring_different_tags_for_one_seq_are_an_equivocation(db):
    one, clone = SealedChain("gw-x").extend(4), SealedChain("gw-x").extend(4)
    collector = Collector(db, [one.key])
    collector.heartbeat("gw-x", one.heartbeat("s", 3, 1000), "s")
    collector.heartbeat("gw-x", one.heartbeat("s", 3, 1000), "s")        # the same again: nothing
    assert collector.db.execute("SELECT COUNT(*) FROM equivocations").fetchone()[0] == 0
    collector.heartbeat("gw-x", clone.heartbeat("s", 3, 1500), "s")
    assert collector.db.execute("SELECT seq, kind FROM equivocations").fetchall() == [(3, "checkpoint")]


def test_a_journal_going_backwards_is_an_equivocation_but_a_late_old_heartbeat_is_not(db):
    chain = SealedChain("gw-b").extend(12)
    collector = Collector(db, [chain.key])
    collector.heartbeat("gw-b", chain.heartbeat("s", 10, 5000), "s")
    collector.heartbeat("gw-b", chain.heartbeat("s", 6, 4000), "s")      # sent earlier, arrived late
    assert collector.db.execute("SELECT COUNT(*) FROM equivocations").fetchone()[0] == 0
    collector.heartbeat("gw-b", chain.heartbeat("s", 3, 9000), "s")      # newer, yet ends before record 10
    assert collector.db.execute("SELECT seq, kind FROM equivocations").fetchall() == [(10, "backwards")]


def test_an_alarm_is_one_incident_until_acknowledged_and_duress_is_its_own(db):
    chain = SealedChain("gw-i").extend(10, severity={2: 2, 3: 2, 5: 3, 8: 3}, rtype={8: R.ev.EV_DURESS})
    collector = Collector(db, [chain.key], CONFIG)
    for seq in range(7):
        collector.record(chain.records[seq])
    rows = collector.db.execute("SELECT id, kind, records, first_seq, last_seq FROM incidents").fetchall()
    assert [r[1:] for r in rows] == [("alarm", 3, 2, 5)]
    with collector.db.transaction() as tx:
        assert ledger.acknowledge(tx, rows[0][0], "operator anna")
        assert not ledger.acknowledge(tx, rows[0][0], "twice")
    for seq in (7, 8, 9):
        collector.record(chain.records[seq])
    got = collector.db.execute("SELECT kind, state, acked_by FROM incidents ORDER BY id").fetchall()
    assert got == [("alarm", "acked", "operator anna"), ("duress", "open", None)]
    assert collector.db.execute("SELECT kind FROM notifications ORDER BY id").fetchall() == [("alarm",), ("duress",)]


def test_a_silent_gateway_is_one_incident_closed_by_its_next_heartbeat(db):
    chain = SealedChain("gw-s").extend(2)
    collector = Collector(db, [chain.key], CONFIG)
    collector.heartbeat("gw-s", chain.heartbeat("s", 1, 1000), "s")
    store = collector.db
    with store.transaction() as tx:
        assert ledger.sweep_silent(tx, 60, [HOOK], Tally()) == []
        tx.execute("UPDATE gateways SET last_hb_at=?", (time.time() - 120,))
        assert ledger.sweep_silent(tx, 60, [HOOK], Tally()) == ["gw-s"]
        assert ledger.sweep_silent(tx, 60, [HOOK], Tally()) == []            # once, not every sweep
    assert store.execute("SELECT kind, state FROM incidents").fetchall() == [("silent", "open")]
    collector.heartbeat("gw-s", chain.heartbeat("s", 1, 2000), "s")
    assert store.execute("SELECT kind, state FROM incidents").fetchall() == [("silent", "closed")]
    assert store.execute("SELECT silent FROM gateways").fetchall() == [(0,)]


def test_migrations_apply_once_and_an_unnumbered_old_database_is_refused(db, tmp_path):
    store = open_store(db)
    assert store.version() == MIGRATIONS[-1][0]
    assert store.migrate() == []
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE records (gateway TEXT, seq INTEGER)")
    con.commit()
    with pytest.raises(StoreError, match="before numbered migrations"):
        open_store(old)


def test_two_collectors_on_one_database_reach_one_collectors_verdicts(db, tmp_path):
    chains, extra = fleet_with_faults()
    msgs = messages(chains, extra)
    alone = verdicts(run_order(str(tmp_path / "alone.db"), chains, msgs, 0).db)
    order = msgs[:-4] + extra[1:]
    random.Random(7).shuffle(order)
    halves = [order[0::2], order[1::2]]
    collectors = [Collector(db, [c.key for c in chains], CONFIG) for _ in halves]
    start = threading.Barrier(2)

    def feed(c, part):
        start.wait()
        for m in part:
            c.ingest([(Topics.RECORDS, "", "", m)])

    threads = [threading.Thread(target=feed, args=(c, p)) for c, p in zip(collectors, halves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    collectors[1].ingest([(Topics.RECORDS, "", "", extra[0])])   # the equivocating copy last, as above
    together = verdicts(collectors[0].db)
    assert as_bytes(together["records"]) == as_bytes(alone["records"])
    assert {k: v for k, v in together.items() if k != "records"} == {k: v for k, v in alone.items() if k != "records"}
    assert sum(c.stored for c in collectors) == len(alone["records"])


def test_a_postgresql_server_gone_away_is_a_store_error_naming_it(pg, pg_server):
    store = open_store(pg)
    other = open_store(pg, migrate_now=False)
    other.execute("SELECT pg_terminate_backend(?)", (store.db.info.backend_pid,))
    with pytest.raises(StoreError, match="PostgreSQL postgresql://cabguard@127.0.0.1:{}/.*delivered again".format(
            pg_server.port)):
        store.execute("SELECT 1")
    with pytest.raises(StoreError, match="delivered again"):
        with open_store(pg).transaction(["gw-1"]) as tx:
            other.execute("SELECT pg_terminate_backend(?)", (tx.db.info.backend_pid,))
            tx.execute("SELECT 1")
