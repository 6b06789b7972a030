"""Journal → uplink → real Mosquitto → reference receiver, and commands the other way."""

import threading
import time

import pytest

from controller.headend.cmdsend import publish
from controller.headend.collect import Collector, run as collect_run
from controller.link.downlink import DownlinkVerifier, SeqStore, command_handler
from controller.link.uplink import Uplink
from controller.link.wire import Topics, make_command
from drivers.keys import generate, role_kid
from drivers.mqtt import Backoff, BrokerSettings
from tests.journaling import event_record, open_journal, provision
from tests.waiting import wait_until



def receiver(broker, collector, **kw):
    """A collector thread, returned once it provably receives (a probe arrived)."""
    rx = threading.Thread(target=collect_run, args=(broker.address, "cabguard", collector), kwargs=kw)
    rx.start()
    assert wait_until(lambda: publish_probe(broker) or collector.received > 0, 10)
    return rx


def publish_probe(broker) -> bool:
    publish(broker.address, "cabguard/probe/probe/rec", b"probe")
    time.sleep(0.05)
    return False


def make_uplink(broker, journal, protocol=4, **kw):
    settings = BrokerSettings("127.0.0.1", broker.port, protocol=protocol, client_id="gw-7")
    kw.setdefault("backoff", Backoff(0.05, 0.5))
    kw.setdefault("heartbeat_s", 0.5)
    return Uplink(settings, Topics("cabguard", "port-a", "gw-7"), journal, window=16, **kw)


@pytest.mark.parametrize("protocol", [4, 5], ids=["mqtt3.1.1", "mqtt5"])
def test_backlog_drains_in_full_through_a_broker_restart(tmp_path, broker, protocol):
    prov, _ = provision(tmp_path)
    journal = open_journal(tmp_path, prov)
    for i in range(400):
        journal.append(event_record(i, severity=2 if i % 97 == 0 else 0))
    journal.flush()
    collector = Collector(tmp_path / "rx.db", [prov])
    done = threading.Event()
    rx = receiver(broker, collector, seconds=30.0, stop_event=done, protocol=protocol)
    uplink = make_uplink(broker, journal, protocol).start()
    try:
        assert wait_until(lambda: journal.cursor > 100)
        broker.stop()                 # the broker goes away mid-stream ...
        time.sleep(0.5)
        broker.start()                # ... and comes back on the same port
        assert wait_until(lambda: journal.cursor >= 400, 20)
    finally:
        uplink.stop()
        journal.close()
    assert wait_until(lambda: collector.stored >= journal.cursor + 1, 10)
    done.set()
    rx.join()
    report = collector.report()
    assert report["stored"] >= 401, report   # every record acknowledged is at the receiver
    assert report["gateways"]["gw-7"]["gaps"] == [] and report["chain_breaks"] == 0, report


def test_alarm_goes_ahead_of_the_backlog(tmp_path, broker):
    prov, _ = provision(tmp_path)
    journal = open_journal(tmp_path, prov)
    for i in range(300):
        journal.append(event_record(i))
    alarm_seq = journal.append(event_record(999, severity=2))
    journal.flush()
    uplink = make_uplink(broker, journal)
    uplink.notify_urgent(alarm_seq)
    collector = Collector(tmp_path / "rx.db", [prov])
    rx = receiver(broker, collector, seconds=10.0, until_records=40)
    uplink.start()
    rx.join()
    uplink.stop()
    journal.close()
    first = [row[0] for row in collector.db.execute("SELECT seq FROM records ORDER BY received_at LIMIT 20")]
    assert alarm_seq in first


def test_downlink_commands_signed_forged_and_replayed(tmp_path, broker):
    prov, _ = provision(tmp_path)
    journal = open_journal(tmp_path, prov)
    head = generate(role_kid("gw-7", "command"))
    verifier = DownlinkVerifier("gw-7", head, SeqStore(tmp_path / "cmdseq"))
    accepted, refused = [], []
    uplink = make_uplink(broker, journal,
                         on_command=command_handler(verifier, accepted.append, refused.append)).start()
    try:
        assert wait_until(lambda: uplink.connected)
        time.sleep(0.2)
        topic = Topics("cabguard", "port-a", "gw-7").commands
        good = make_command(head, "gw-7", 1, int(time.time()) + 60, "arm")
        publish(broker.address, topic, good)
        publish(broker.address, topic, good)  # replayed
        publish(broker.address, topic, make_command(generate(head.kid), "gw-7", 2, int(time.time()) + 60, "disarm"))
        publish(broker.address, topic, b"\x00" * 10)
        assert wait_until(lambda: len(accepted) + len(refused) == 4)
    finally:
        uplink.stop()
        journal.close()
    assert [r.spec.name for r in accepted] == ["arm"]
    assert sorted(r.reason for r in refused) == ["bad-mac", "malformed", "replayed"]


def test_an_idle_uplink_sleeps_until_the_journal_wakes_it(tmp_path, broker):
    """Idle, the uplink thread waits for the network, a wake-up or its next timer
    (not a fixed 20 ms poll); a record made durable wakes it at once."""
    prov, _ = provision(tmp_path)
    journal = open_journal(tmp_path, prov)
    uplink = make_uplink(broker, journal, heartbeat_s=60.0)
    rounds = []
    service = uplink.service
    uplink.service = lambda poll_s: (rounds.append(poll_s), service(poll_s))[1]
    uplink.start()
    try:
        assert wait_until(lambda: uplink.connected and journal.cursor == journal.durable_seq and rounds[-1] > 0.5, 10)
        before = len(rounds)
        seq = journal.append(event_record(1))
        journal.flush()
        assert wait_until(lambda: journal.cursor >= seq, 5)
        assert len(rounds) - before < 20          # a 20 ms poll would have run ~50 rounds a second
    finally:
        uplink.stop()
        journal.close()


def test_an_idle_uplink_still_pings_within_the_keepalive(tmp_path, broker):
    """Idle, the uplink sleeps until its next timer, but at most a quarter of the
    keepalive: paho pings only from within a poll, and a broker drops a client
    silent for 1.5 keepalives.  A heartbeat a minute away must not keep it asleep."""
    prov, _ = provision(tmp_path)
    journal = open_journal(tmp_path, prov)
    links: list[bool] = []
    health: list[str] = []
    settings = BrokerSettings("127.0.0.1", broker.port, client_id="gw-7", keepalive_s=1)
    uplink = Uplink(settings, Topics("cabguard", "port-a", "gw-7"), journal, heartbeat_s=60.0,
                    on_link=links.append, on_health=health.append)
    rounds = []
    service = uplink.service
    uplink.service = lambda poll_s: (rounds.append(poll_s), service(poll_s))[1]
    uplink.start()
    try:
        assert wait_until(lambda: uplink.connected and journal.cursor == journal.durable_seq, 10)
        assert wait_until(lambda: rounds[-1] == 0.25, 5)        # asleep until the keepalive's quarter
        time.sleep(3.0)                                          # three keepalives of a quiet link
        assert uplink.connected and links == [True] and health == [], (links, health)
    finally:
        uplink.stop()
        journal.close()
