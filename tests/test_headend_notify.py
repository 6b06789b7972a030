"""Alarms pushed to people: a real local HTTP receiver checks the webhook's HMAC,
retries and once-per-incident; the MQTT sink through a real Mosquitto; the
command hook; delivery states; the head-end config's errors; status."""

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controller.cli.main import main as cli
from controller.devtools.sealed import SealedChain
from controller.headend.collect import Collector
from controller.headend.config import HeadendConfigError, parse
from controller.headend.notify import Notifier
from controller.headend.status import fleet
from controller.headend.store import open_store
from drivers.mqtt import CONNECTED, MESSAGE, BrokerSettings, MqttLink
from tests.waiting import wait_until

SECRET = "s3cret-for-tests"


class Receiver:
    """A webhook receiver on loopback: answers with ``codes`` in turn (then 200), keeps what it got."""

    def __init__(self, codes=()):
        self.codes = list(codes)
        self.got: list[tuple[dict, bytes, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = outer.codes.pop(0) if outer.codes else 200
                outer.got.append((dict(self.headers), body, code))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:{}/hook".format(self.server.server_port)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def config(sinks: str):
    import tomllib
    return parse(tomllib.loads("[headend]\nheartbeat_s = 30\nsilent_after = 3\n" + sinks), "test.toml")


def webhook(url: str, extra: str = "") -> str:
    return '[[sink]]\nname = "dispatch"\nkind = "webhook"\nurl = "{}"\nsecret = "{}"\nretry_s = 0.05\n{}'.format(
        url, SECRET, extra)


def verified(headers: dict, body: bytes) -> bool:
    """What a receiver does: recompute the HMAC over TIMESTAMP.BODY."""
    want = hmac.new(SECRET.encode(), headers["X-Cabguard-Timestamp"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + want.hexdigest(), headers["X-Cabguard-Signature"])


def test_an_alarm_reaches_the_webhook_once_per_incident_signed(db, receiver):
    cfg = config(webhook(receiver.url))
    chain = SealedChain("gw-w").extend(8, severity={2: 2, 3: 3, 4: 2})
    collector = Collector(db, [chain.key], cfg)
    notifier = Notifier(collector.db.clone(), cfg).start()
    collector.on_notify = notifier.wake
    try:
        collector.heartbeat("gw-w", chain.heartbeat("port-a", 1, 1000), "port-a")
        for m in chain.records:
            collector.record(m)
        assert wait_until(lambda: len(receiver.got) == 1, 10)
        time.sleep(0.3)
        assert len(receiver.got) == 1                          # three alarm records, one incident
        headers, body, _ = receiver.got[0]
        assert verified(headers, body)
        assert not verified(headers, body.replace(b"gw-w", b"gw-x"))
        doc = json.loads(body)
        assert (doc["kind"], doc["gateway"], doc["site"], doc["seq"], doc["severity"]) == (
            "alarm", "gw-w", "port-a", 2, "alarm")
        assert wait_until(lambda: collector.db.execute("SELECT state, attempts FROM deliveries").fetchall()
                          == [("delivered", 1)], 5)
    finally:
        notifier.stop()


def test_a_failing_webhook_is_retried_with_backoff_then_marked_failed(db):
    r = Receiver(codes=[500, 503])
    cfg = config(webhook(r.url, "attempts = 4\n") + webhook("http://127.0.0.1:9/", "attempts = 2\n")
                 .replace('"dispatch"', '"nobody"'))
    chain = SealedChain("gw-r").extend(3, severity={1: 3})
    collector = Collector(db, [chain.key], cfg)
    notifier = Notifier(collector.db.clone(), cfg).start()
    collector.on_notify = notifier.wake
    try:
        for m in chain.records:
            collector.record(m)
        q = "SELECT sink, state, attempts FROM deliveries ORDER BY sink"
        assert wait_until(lambda: collector.db.execute(q).fetchall() == [("dispatch", "delivered", 3),
                                                                         ("nobody", "failed", 2)], 15)
        assert [code for _, _, code in r.got] == [500, 503, 200]
        error = collector.db.execute("SELECT last_error FROM deliveries WHERE sink='nobody'").fetchone()[0]
        assert "cannot reach http://127.0.0.1:9/" in error
    finally:
        notifier.stop()
        r.close()


def test_equivocation_and_silence_are_pushed_to_an_mqtt_topic_and_a_command(tmp_path, broker):
    out = tmp_path / "hook.jsonl"
    hook = "import sys; open({!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')".format(str(out))
    cfg = config('[[sink]]\nname = "room"\nkind = "mqtt"\ntopic = "dispatch/alarms"\non = ["equivocation", "silent"]\n'
                 '[[sink]]\nname = "hook"\nkind = "command"\nargv = {}\non = ["silent"]\n'.format(
                     json.dumps([sys.executable, "-c", hook])))
    sub = MqttLink(BrokerSettings("127.0.0.1", broker.port, client_id="dispatch-room"))
    sub.connect()
    got = []

    def pump():
        sub.poll(0.05)
        while sub.events:
            ev = sub.events.popleft()
            if ev[0] == CONNECTED:
                sub.subscribe("dispatch/alarms")
            elif ev[0] == MESSAGE:
                got.append(json.loads(ev[2]))
        return got

    assert wait_until(lambda: pump() is not None and sub.connected, 5)
    time.sleep(0.2)
    pump()
    chain, clone = SealedChain("gw-q").extend(3), SealedChain("gw-q").extend(3)
    collector = Collector(tmp_path / "h.db", [chain.key], cfg)
    notifier = Notifier(collector.db.clone(), cfg, broker.address)
    collector.heartbeat("gw-q", chain.heartbeat("s", 2, 1000), "s")
    collector.heartbeat("gw-q", clone.heartbeat("s", 2, 2000), "s")      # a second gateway under gw-q's name
    collector.db.execute("UPDATE gateways SET last_hb_at=?", (time.time() - 600,))
    notifier.run_once()
    notifier.run_once()
    assert wait_until(lambda: len(pump()) == 2, 10)
    assert sorted(d["kind"] for d in got) == ["equivocation", "silent"]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(d["kind"], d["gateway"]) for d in lines] == [("silent", "gw-q")]
    sub.close()
    notifier.stop()


@pytest.mark.parametrize("text, message", [
    ('[[sink]]\nkind = "webhook"\nurl = "http://x"\n', "needs one of secret or secret_file"),
    ('[[sink]]\nkind = "pager"\n', "kind must be one of webhook, mqtt, command"),
    ('[[sink]]\nkind = "mqtt"\ntopic = "t"\non = ["fire"]\n', "'fire' is not a trigger"),
    ('[[sink]]\nkind = "command"\nargv = []\n', "argv is a non-empty list"),
    ('[headend]\nsilent_after = 0\n', "headend.silent_after must be a positive number"),
    ('[[sink]]\nkind = "mqtt"\ntopic = "t"\n[[sink]]\nkind = "mqtt"\ntopic = "u"\n', "name 'mqtt' is used twice"),
])
def test_config_errors_name_the_file_and_the_sink(text, message):
    import tomllib
    with pytest.raises(HeadendConfigError, match="test.toml") as e:
        parse(tomllib.loads(text), "test.toml")
    assert message in str(e.value)


def test_status_shows_gaps_a_missing_tail_equivocations_and_incidents(db, capsys):
    a, b = SealedChain("gw-a").extend(10, severity={4: 3}), SealedChain("gw-b").extend(5)
    collector = Collector(db, [a.key, b.key])
    for seq in (0, 1, 2, 4, 5):
        collector.record(a.records[seq])
    collector.heartbeat("gw-a", a.heartbeat("port-a", 9, 1000), "port-a")      # anchors 9: 6..9 are missing
    for m in b.records:
        collector.record(m)
    collector.record(b.seal(1, b.tags[0], severity=1)[0])
    f = fleet(collector.db, 90)
    by = {g["gateway"]: g for g in f["gateways"]}
    assert by["gw-a"]["gaps"] == [[3, 3], [6, 9]] and by["gw-a"]["online"] and by["gw-a"]["mode"] == "armed"
    assert by["gw-b"]["gaps"] == [] and not by["gw-b"]["online"] and by["gw-b"]["equivocations"] == 1
    assert [(i["gateway"], i["kind"]) for i in f["open_incidents"]] == [("gw-a", "alarm"), ("gw-b", "equivocation")]
    assert (f["total"], f["online"], f["gaps"]) == (2, 1, 2)
    assert cli(["headend", "status", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["open_incidents"][0]["id"] == f["open_incidents"][0]["id"]
    assert cli(["headend", "ack", str(f["open_incidents"][0]["id"]), "--by", "anna", "--db", db]) == 0
    assert "acknowledged by anna" in capsys.readouterr().out
    assert cli(["headend", "status", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "2 gateways, 1 online; 1 open incidents; 1 equivocations; 2 gaps" in text
    assert "3-3,6-9" in text and "open incident #" in text and "equivocation" in text
    assert cli(["headend", "ack", str(f["open_incidents"][0]["id"]), "--by", "anna", "--db", db]) == 1


def test_cmd_writes_what_it_sent_to_the_command_log(tmp_path, broker, db):
    from drivers.keys import generate, role_kid, write_key
    write_key(tmp_path / "command.key", generate(role_kid("gw-1", "command")))
    words = ["cmd", "maint", "start", "30m", "--gateway", "gw-1", "--site", "port-a", "--key",
             str(tmp_path / "command.key"), "--seq", "77", "--db", db]
    assert cli(words + ["--broker", broker.address]) == 0
    broker.stop()
    assert cli(words + ["--broker", broker.address]) == 1          # no broker: logged as not sent
    rows = open_store(db).execute("SELECT gateway, site, seq, name, args, state FROM commands ORDER BY id").fetchall()
    assert rows[0] == ("gw-1", "port-a", 77, "maint start", '{"duration": "30m"}', "published")
    assert rows[1][5].startswith("not sent: cannot reach broker")
