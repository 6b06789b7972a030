"""MQTT transport over paho-mqtt (3.1.1 or 5), owned by one thread.

The uplink thread calls ``poll()`` in its loop; paho's network work and
callbacks then run on that same thread, so nothing here needs a lock.
paho's own automatic reconnect is off: ``Backoff`` decides when to try
again (exponential with full jitter, so a fleet that lost its broker does
not come back in lockstep), and a broker that refuses the credentials is
reported once per attempt as a health problem, not hammered.
"""

from __future__ import annotations

import random
import select
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.errors import DriverError

# What the transport reports to its owner, in order.
CONNECTED = "connected"
DISCONNECTED = "disconnected"
REFUSED = "refused"        # the broker answered CONNACK with an error
ACKED = "acked"            # (mid)
MESSAGE = "message"        # (topic, payload, mid, qos): mid and qos for ack() with manual_ack

# MQTT 5 ends a session at disconnect unless told otherwise; hold it a week, the
# outage a gateway must ride out, as MQTT 3.1.1 does with clean_session = False.
SESSION_EXPIRY_S = 7 * 24 * 3600


class MqttConfigError(DriverError):
    """TLS files or settings that cannot work; names the file and why."""


@dataclass
class BrokerSettings:
    host: str
    port: int = 1883
    protocol: int = 4              # 4 = MQTT 3.1.1, 5 = MQTT 5
    client_id: str = ""
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 30


class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base·2^n)]."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 60.0, rng: random.Random | None = None):
        self.base_s, self.cap_s = base_s, cap_s
        self.attempts = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0


def tls_context(s: BrokerSettings) -> ssl.SSLContext:
    """The TLS context of the settings; MqttConfigError names an unusable file."""
    for label, path in (("CA certificate", s.ca_file), ("client certificate", s.cert_file),
                        ("client key", s.key_file)):
        if path and not Path(path).is_file():
            raise MqttConfigError("uplink {} {} does not exist".format(label, path))
    try:
        ctx = ssl.create_default_context(cafile=s.ca_file or None)
    except ssl.SSLError as e:
        raise MqttConfigError("uplink CA certificate {} is unusable: {}".format(s.ca_file, e.reason or e)) from None
    if s.cert_file:
        try:
            ctx.load_cert_chain(s.cert_file, s.key_file or None)
        except ssl.SSLError as e:
            raise MqttConfigError("uplink client certificate {} / key {} are unusable: {}".format(
                s.cert_file, s.key_file or "(in the certificate file)", e.reason or e)) from None
    return ctx


def presented_certificate(host: str, port: int) -> str:
    """Who the broker's certificate says it is, fetched without verification
    (only to name it in an error message), or "" if it cannot be had."""
    from cryptography import x509     # here: the uplink process loads cryptography for this alone
    try:
        pem = ssl.get_server_certificate((host, port), timeout=2)
        cert = x509.load_pem_x509_certificate(pem.encode())
    except (OSError, ValueError):
        return ""
    return " (subject {}, issued by {})".format(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string())


def describe_tls_failure(err: BaseException, s: BrokerSettings) -> str:
    """Turn a handshake failure into what an installer can act on."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return "broker {}:{} certificate{} rejected: {} (checked against CA {})".format(
            s.host, s.port, presented_certificate(s.host, s.port), err.verify_message,
            s.ca_file or "the system store")
    if isinstance(err, ssl.SSLError):
        return "TLS with broker {}:{} failed: {} (client certificate {})".format(
            s.host, s.port, err.reason or err, s.cert_file or "none")
    return "cannot reach broker {}:{}: {}".format(s.host, s.port, err)


class MqttLink:
    def __init__(self, settings: BrokerSettings, will_topic: str = "", will_payload: bytes = b"",
                 manual_ack: bool = False):
        """``manual_ack``: a received QoS 1 message is acknowledged only by ``ack()``,
        so a receiver that dies before storing it gets it again (the head end)."""
        self.settings = settings
        version = MQTTProtocolVersion.MQTTv5 if settings.protocol == 5 else MQTTProtocolVersion.MQTTv311
        kwargs = {} if settings.protocol == 5 else {"clean_session": False}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                                  protocol=version, reconnect_on_failure=False, manual_ack=manual_ack, **kwargs)
        self.client.max_inflight_messages_set(65535)  # the owner keeps its own window
        self.client.max_queued_messages_set(0)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        if settings.ca_file or settings.cert_file:
            self.client.tls_set_context(tls_context(settings))
        if will_topic:
            self.client.will_set(will_topic, will_payload, qos=1, retain=True)
        self.events: deque[tuple] = deque()
        self.connected = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        # Another thread's wake() ends a poll() early: new records to send, a stop.
        # (Socket objects: a wake() after close() fails cleanly, never on a reused fd.)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # paho callbacks (run inside poll()) --------------------------------------
    def _on_connect(self, _c, _u, _flags, reason, _props) -> None:
        if reason.is_failure:
            self.events.append((REFUSED, str(reason)))
        else:
            self.connected = True
            self.events.append((CONNECTED,))

    def _on_disconnect(self, _c, _u, _flags, reason, _props) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.events.append((DISCONNECTED, str(reason)))

    def _on_publish(self, _c, _u, mid, _reason, _props) -> None:
        self.events.append((ACKED, mid))

    def _on_message(self, _c, _u, msg) -> None:
        self.events.append((MESSAGE, msg.topic, msg.payload, msg.mid, msg.qos))

    # owner's calls ------------------------------------------------------------
    def connect(self) -> str | None:
        """Start a connection; returns why it could not even start, or None."""
        s = self.settings
        v5 = {}
        if s.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            v5 = {"clean_start": False, "properties": props}
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s, **v5)
        except (OSError, ssl.SSLError) as e:
            return describe_tls_failure(e, s)
        return None

    def wake(self) -> None:
        """End the current or next ``poll()`` at once (thread-safe)."""
        try:
            self._wake_w.send(b"w")
        except OSError:             # already woken many times over, or closed
            pass

    def poll(self, timeout_s: float = 0.05) -> None:
        """Wait up to ``timeout_s`` for the broker or a ``wake()``, then let paho
        read, write and keep the connection alive.  The owner sleeps here
        between events instead of waking at a fixed rate."""
        sock = self.client.socket()
        rlist = [self._wake_r] if sock is None else [self._wake_r, sock]
        wlist = [sock] if sock is not None and self.client.want_write() else []
        pending = sock is not None and hasattr(sock, "pending") and sock.pending() > 0   # TLS bytes already read
        try:
            ready = select.select(rlist, wlist, [], 0.0 if pending else timeout_s)[0]
        except (OSError, ValueError):   # the socket closed under us: paho reports it below
            ready = []
        if self._wake_r in ready:
            try:
                self._wake_r.recv(4096)
            except OSError:
                pass
        if sock is None:
            return
        rc = self.client.loop(timeout=0.0)
        if rc != paho.MQTT_ERR_SUCCESS and self.connected:
            self.connected = False
            self.events.append((DISCONNECTED, paho.error_string(rc)))

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a message received with ``manual_ack`` (its PUBACK goes out now)."""
        self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """The message id to wait for, or None if it could not be queued."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid if info.rc == paho.MQTT_ERR_SUCCESS else None

    def close(self) -> None:
        try:
            self.client.disconnect()
            self.client.loop(timeout=0.1)
        except (OSError, socket.error):
            pass
        self._wake_r.close()
        self._wake_w.close()
