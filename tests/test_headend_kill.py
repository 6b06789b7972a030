"""Two `cabguard collect` processes in one MQTT 5 shared subscription group on one
PostgreSQL, one of them SIGKILLed again and again while a fleet drains: nothing
lost, nothing counted twice, no false chain break (the 100,000-record version is
`cabguard bench --only headend`)."""

import time

import pytest

from controller.devtools.fleetsim import Collectors, Publisher, write_keys
from controller.devtools.sealed import SealedChain
from controller.headend.store import open_store
from controller.link.wire import Topics
from tests.waiting import wait_until

GATEWAYS, RECORDS = 4, 900          # 3,600 records
ALARM_EVERY = 150


@pytest.mark.long
def test_collectors_killed_during_a_drain_lose_nothing_and_count_nothing_twice(tmp_path, broker, pg):
    chains = [SealedChain("gw-{}".format(i)).extend(
        RECORDS, severity={s: 2 for s in range(ALARM_EVERY, RECORDS, ALARM_EVERY)}) for i in range(GATEWAYS)]
    keys = write_keys(tmp_path / "keys", chains)
    store = open_store(pg)
    collectors = Collectors(broker.address, keys, pg, 2, log=tmp_path / "collect.log")
    pub = Publisher(broker.address, "fleet-0")
    try:
        # the group's sessions exist once each collector has stored a heartbeat
        def heard() -> bool:
            for c in chains:
                pub.publish(c.gateway, Topics.HEARTBEAT, b'{"mode": "armed"}', qos=0)
            pub.pump(0.05)
            return store.execute("SELECT COUNT(DISTINCT gateway) FROM heartbeats").fetchone()[0] == GATEWAYS
        assert wait_until(heard, 20, 0.3)
        # paced over ~8 s, so a collector is killed about once a second mid-stream
        next_kill, victim = time.monotonic() + 1.0, 0
        for seq in range(RECORDS):
            for c in chains:
                pub.publish(c.gateway, Topics.RECORDS, c.records[seq])
            pub.pump(0.0)
            if seq % 25 == 24:
                time.sleep(0.2)
            if time.monotonic() >= next_kill:
                collectors.kill(victim)
                victim, next_kill = 1 - victim, time.monotonic() + 1.0
        pub.settle()
        assert wait_until(lambda: store.execute("SELECT COUNT(*) FROM records").fetchone()[0] == GATEWAYS * RECORDS,
                          30, 0.2), (tmp_path / "collect.log").read_text()[-3000:]
    finally:
        pub.close()
        collectors.stop()
    assert collectors.kills >= 5
    q = store.execute
    assert q("SELECT gateway, COUNT(*), MIN(seq), MAX(seq) FROM records GROUP BY gateway ORDER BY gateway").fetchall() \
        == [(c.gateway, RECORDS, 0, RECORDS - 1) for c in chains]
    assert q("SELECT kind, COUNT(*) FROM problems GROUP BY kind").fetchall() == []          # no false chain break
    assert q("SELECT COUNT(*) FROM equivocations").fetchone()[0] == 0
    alarms = len(range(ALARM_EVERY, RECORDS, ALARM_EVERY))
    assert q("SELECT gateway, records FROM incidents WHERE kind='alarm' ORDER BY gateway").fetchall() == \
        [(c.gateway, alarms) for c in chains]                                                # each alarm once
    assert q("SELECT COUNT(*) FROM notifications").fetchone()[0] == GATEWAYS
