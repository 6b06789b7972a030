import random
import time

from simulator.broker import Broker
from drivers.mqtt import ACKED, CONNECTED, MESSAGE, REFUSED, Backoff, BrokerSettings, MqttLink


def wait_for(link, kind, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        link.poll(0.02)
        while link.events:
            ev = link.events.popleft()
            if ev[0] == kind:
                return ev
    raise AssertionError("no {} event".format(kind))


def test_publish_is_acknowledged_and_received(broker):
    sub = MqttLink(BrokerSettings("127.0.0.1", broker.port, client_id="sub"))
    pub = MqttLink(BrokerSettings("127.0.0.1", broker.port, protocol=5, client_id="pub"))
    assert sub.connect() is None and pub.connect() is None
    wait_for(sub, CONNECTED)
    wait_for(pub, CONNECTED)
    sub.subscribe("t/#")
    sub.poll(0.1)
    mid = pub.publish("t/x", b"record")
    assert wait_for(pub, ACKED)[1] == mid
    assert wait_for(sub, MESSAGE)[1:3] == ("t/x", b"record")


def test_broker_rejecting_credentials_is_reported():
    b = Broker()
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.start()
    try:
        link = MqttLink(BrokerSettings("127.0.0.1", b.port, client_id="x", username="u", password="bad"))
        assert link.connect() is None
        assert wait_for(link, REFUSED)[1]
        assert not link.connected
    finally:
        b.cleanup()


def test_unreachable_broker_names_host_and_port():
    link = MqttLink(BrokerSettings("127.0.0.1", 1, client_id="x"))
    assert "127.0.0.1:1" in link.connect()


def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(0.5, 8.0, random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.5 and all(d <= 8.0 for d in delays) and delays[-1] >= 4.0
    b.reset()
    assert b.next_delay() <= 0.5
