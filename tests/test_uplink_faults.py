"""The uplink against a real Mosquitto that misbehaves: gone for a long stretch,
hung (SIGSTOP), killed with messages in flight, refusing credentials, TLS
that cannot be trusted; and hostile payloads on the command topic."""

import contextlib
import datetime
import ipaddress
import random
import re
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.headend.cmdsend import publish
from controller.headend.collect import Collector
from controller.link.downlink import DownlinkVerifier, SeqStore, command_handler
from controller.link.uplink import Uplink
from controller.link.wire import AAD, Topics, make_command
from drivers.cose import encode, mac0_create
from drivers.keys import generate, role_kid
from drivers.mqtt import Backoff, BrokerSettings, MqttConfigError
from simulator.broker import Broker, free_port
from tests.journaling import event_record, open_journal, provision
from tests.test_uplink import make_uplink, receiver, wait_until


class Health:
    """The uplink's health reports with the monotonic time each arrived."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []

    def __call__(self, text: str) -> None:
        self.lines.append((time.monotonic(), text))

    def delays(self) -> list[float]:
        return [float(re.search(r"retrying in ([\d.]+) s", t).group(1)) for _, t in self.lines]


def filled_journal(tmp_path, n):
    prov, _ = provision(tmp_path)
    journal = open_journal(tmp_path, prov)
    for i in range(n):
        journal.append(event_record(i))
    journal.flush()
    return prov, journal


def arrival_order(collector) -> list[int]:
    return [row[0] for row in collector.db.execute("SELECT seq FROM records ORDER BY rowid")]


@contextlib.contextmanager
def streaming(tmp_path, broker, n, **uplink_kw):
    """A journal of ``n`` records, a subscribed receiver, and an uplink (not started)."""
    prov, journal = filled_journal(tmp_path, n)
    collector = Collector(tmp_path / "rx.db", [prov])
    done = threading.Event()
    rx = receiver(broker, collector, seconds=30.0, stop_event=done)
    uplink = make_uplink(broker, journal, **uplink_kw)
    try:
        yield collector, journal, uplink
    finally:
        uplink.stop()
        journal.close()
        done.set()
        rx.join()


def test_long_outage_keeps_journaling_backs_off_then_drains_in_order(tmp_path, broker):
    health = Health()
    with streaming(tmp_path, broker, 50, on_health=health, backoff=Backoff(0.05, 0.4, random.Random(5))) as (
            collector, journal, uplink):
        broker.stop()                 # the receiver's session is saved with the broker
        uplink.start()
        for i in range(50, 300):      # the gateway keeps journaling while the broker is gone
            journal.append(event_record(i))
        assert wait_until(lambda: len(health.lines) >= 6)
        assert journal.flush() and journal.cursor == -1 and journal.durable_seq >= 299
        assert all("cannot reach broker 127.0.0.1:{}".format(broker.port) in t for _, t in health.lines)
        delays = health.delays()
        assert delays[4] > delays[0] and max(delays) <= 0.4      # grows, capped
        broker.start()
        assert wait_until(lambda: journal.cursor >= journal.durable_seq, 20)
        assert wait_until(lambda: collector.stored >= journal.cursor + 1, 10)
    order = [s for s in arrival_order(collector) if s is not None]
    assert order == sorted(order) and order[:300] == list(range(300))   # in sequence order
    rep = collector.report()
    assert rep["gateways"]["gw-7"]["gaps"] == [] and rep["chain_breaks"] == 0


def test_hung_broker_bounds_the_window_and_is_not_hammered(tmp_path, broker):
    health = Health()
    with streaming(tmp_path, broker, 3000, on_health=health, connack_timeout_s=0.2,
                   backoff=Backoff(0.05, 0.2, random.Random(2))) as (collector, journal, uplink):
        broker.pause()                # hung before the uplink connects: TCP accepts, CONNACK never comes
        uplink.start()
        assert wait_until(lambda: len(health.lines) >= 3)
        assert all("did not answer the connection within 0.2 s" in t for _, t in health.lines)
        broker.resume()
        assert wait_until(lambda: uplink.window.cursor > 100)
        broker.pause()                # hung mid-stream: no PUBACKs
        assert wait_until(lambda: len(uplink.window.in_flight) == 16)   # the window fills, then waits
        broker.resume()
        assert wait_until(lambda: journal.cursor >= journal.durable_seq, 20)
        assert wait_until(lambda: collector.stored >= journal.cursor + 1, 10)
    rep = collector.report()
    assert rep["gateways"]["gw-7"]["gaps"] == [] and rep["chain_breaks"] == 0


def test_broker_killed_with_messages_in_flight(tmp_path, broker):
    with streaming(tmp_path, broker, 3000) as (collector, journal, uplink):
        broker.save()                 # the receiver's session is on disk
        uplink.start()
        assert wait_until(lambda: uplink.window.cursor > 100)
        broker.pause()
        assert wait_until(lambda: len(uplink.window.in_flight) == 16)
        broker.kill()                 # SIGKILL: what is in flight is never acknowledged
        assert wait_until(lambda: not uplink.connected)
        # What the dead broker did acknowledge (PUBACKs read before the socket closed),
        # and what was in flight, queued to be sent again:
        acked_by_dead = set(range(uplink.window.cursor + 1)) | set(uplink.window.acked)
        resend = set(uplink.window.urgent)
        broker.start()
        assert wait_until(lambda: journal.cursor >= journal.durable_seq, 20)
        unacked = set(range(journal.cursor + 1)) - acked_by_dead
        assert wait_until(lambda: unacked <= stored(collector), 10)
    # Everything not acknowledged when the broker died was sent again and arrived;
    # what the dead broker had acknowledged is its own persistence's business (docs/uplink.md).
    assert resend and not resend & acked_by_dead and resend <= stored(collector)
    assert all(set(range(a, b + 1)) <= acked_by_dead for a, b in collector.gaps("gw-7"))
    assert collector.chain_breaks == 0


def stored(collector) -> set[int]:
    return {row[0] for row in collector.db.execute("SELECT seq FROM records WHERE gateway='gw-7'")}


def test_rejected_credentials_are_a_health_event_with_backoff(tmp_path):
    b = Broker()
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.start()
    _prov, journal = filled_journal(tmp_path, 10)
    health = Health()
    settings = BrokerSettings("127.0.0.1", b.port, client_id="gw-7", username="gw-7", password="wrong")
    uplink = Uplink(settings, Topics("cabguard", "port-a", "gw-7"), journal, on_health=health,
                    backoff=Backoff(0.05, 0.4, random.Random(9)))
    try:
        uplink.start()
        assert wait_until(lambda: len(health.lines) >= 6)
    finally:
        uplink.stop()
        journal.close()
        b.cleanup()
    first = health.lines[0][1]
    assert "refused the connection: Not authorized" in first and "username" in first, first
    # No storm: each attempt waited at least half its backoff ceiling (0.05, 0.1, 0.2, 0.4, 0.4).
    span = health.lines[5][0] - health.lines[0][0]
    assert span >= sum(d for d in health.delays()[:5]) * 0.99
    assert min(health.delays()[3:6]) >= 0.2 and journal.cursor == -1


# ---- TLS ----------------------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, public_key, signing_key, ca, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_ca(directory, name):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(_name(name), _name(name), key.public_key(), key, True)
    path = directory / (name + ".pem")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)
    return key, cert, path


@pytest.fixture(scope="module")
def tls_broker():
    """Mosquitto with a TLS listener whose certificate a throwaway CA signed."""
    b = Broker()
    d = b.dir                      # mosquitto drops to its own user: it can read here
    ca_key, ca_cert, ca_path = make_ca(d, "site-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(_name("broker"), ca_cert.subject, key.public_key(), ca_key, False,
                 [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    for f in ("server.pem", "server.key"):
        (d / f).chmod(0o644)
    b.tls_port = free_port()
    with open(b.conf, "a") as conf:
        conf.write("listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n".format(
            b.tls_port, ca_path, d / "server.pem", d / "server.key"))
    _other_key, _other, other_ca = make_ca(d, "other-ca")
    yield b.start(), ca_path, other_ca
    b.cleanup()


def tls_uplink(tmp_path, tls_broker, ca_file):
    b = tls_broker[0]
    _prov, journal = filled_journal(tmp_path, 20)
    health = Health()
    settings = BrokerSettings("127.0.0.1", b.tls_port, client_id="gw-7", ca_file=str(ca_file))
    uplink = Uplink(settings, Topics("cabguard", "port-a", "gw-7"), journal, on_health=health,
                    backoff=Backoff(0.05, 0.2))
    return uplink, journal, health


def test_tls_with_the_site_ca_delivers(tmp_path, tls_broker):
    uplink, journal, health = tls_uplink(tmp_path, tls_broker, tls_broker[1])
    try:
        uplink.start()
        assert wait_until(lambda: journal.cursor >= 19)
    finally:
        uplink.stop()
        journal.close()
    assert health.lines == []


def test_tls_with_the_wrong_ca_says_which_certificate_and_why(tmp_path, tls_broker):
    uplink, journal, health = tls_uplink(tmp_path, tls_broker, tls_broker[2])
    try:
        uplink.start()
        assert wait_until(lambda: health.lines)
    finally:
        uplink.stop()
        journal.close()
    text = health.lines[0][1]
    # which certificate: the broker's, named by subject and issuer, against which CA; and why
    assert "broker 127.0.0.1:{} certificate (subject CN=broker, issued by CN=site-ca) rejected".format(
        tls_broker[0].tls_port) in text, text
    assert re.search(r"rejected: (self-signed certificate in certificate chain|unable to get local issuer)", text)
    assert "checked against CA {}".format(tls_broker[2]) in text, text
    assert journal.cursor == -1


def test_missing_ca_file_is_named_before_connecting(tmp_path, tls_broker):
    with pytest.raises(MqttConfigError, match=r"CA certificate .*nowhere\.pem does not exist"):
        tls_uplink(tmp_path, tls_broker, tmp_path / "nowhere.pem")


# ---- hostile downlink payloads through the live uplink --------------------------

def test_malformed_oversized_and_mistyped_commands_are_refused_live(tmp_path, broker):
    prov, journal = filled_journal(tmp_path, 1)
    head = generate(role_kid("gw-7", "command"))
    verifier = DownlinkVerifier("gw-7", head, SeqStore(tmp_path / "cmdseq"))
    accepted, refused = [], []
    uplink = make_uplink(broker, journal, protocol=5,
                         on_command=command_handler(verifier, accepted.append, refused.append)).start()
    topic = Topics("cabguard", "port-a", "gw-7").commands
    later = int(time.time()) + 60

    def signed(body):
        return mac0_create(encode(body), head.alg, head.kid, head.k, AAD)

    hostile = [
        b"",                                                             # empty
        b"\xd1" * 300_000,                                               # oversized
        b"\x84\x40\xa0\x41",                                             # truncated COSE
        encode([1, 2, 3]),                                               # CBOR, not COSE
        signed([1, "gw-7", 5, later, "arm", {}]),                        # an array, not the map
        signed({1: 1, 2: "gw-7", 3: "5", 4: later, 5: "arm", 6: {}}),    # seq as text
        signed({1: 1, 2: "gw-7", 3: 5, 4: later, 5: "arm", 6: []}),      # args not a map
        signed({1: 1, 2: "gw-7", 3: True, 4: later, 5: "arm", 6: {}}),   # a boolean seq
        signed({1: 2, 2: "gw-7", 3: 5, 4: later, 5: "arm", 6: {}}),      # unknown format
        signed({1: 1, 2: "gw-7", 3: 5, 4: later, 5: "maint start", 6: {"duration": [1]}}),  # a list
    ]
    try:
        assert wait_until(lambda: uplink.connected)
        for payload in hostile:
            publish(broker.address, topic, payload)
        publish(broker.address, topic, make_command(head, "gw-7", 6, later, "arm"))
        assert wait_until(lambda: len(accepted) + len(refused) == len(hostile) + 1)
        assert uplink.thread.is_alive()
    finally:
        uplink.stop()
        journal.close()
    assert [r.spec.name for r in accepted] == ["arm"]
    reasons = [r.reason for r in refused]
    assert reasons.count("oversized") == 1 and reasons.count("malformed") == 8, reasons
    assert reasons[-1] == "bad-arguments" and verifier.seqs.value == 6
