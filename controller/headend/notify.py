"""Pushing alarms to people: the notifier beside each collector (docs/headend.md).

The ledger writes a notification and one delivery row per configured sink
in the same transaction as the record that caused it (an outbox), so a
notification is never lost with a collector and never sent twice for one
incident.  The notifier claims due deliveries for a lease (PostgreSQL:
``FOR UPDATE SKIP LOCKED``, so several collectors share the work), sends
them, and records ``delivered`` or the error and the next attempt
(exponential backoff), ``failed`` after the sink's ``attempts``.  It also
sweeps for gateways gone silent.

Sinks: an HTTP webhook (JSON body, ``X-Cabguard-Signature: sha256=HMAC``
over ``TIMESTAMP.BODY`` with ``X-Cabguard-Timestamp``), an MQTT topic (QoS 1),
a command (the JSON on its standard input; exit status 0 is delivered).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

from controller.errors import CabguardError
from controller.headend import ledger
from controller.headend.cmdsend import publish
from controller.headend.config import HeadendConfig
from controller.headend.ledger import Sink, Tally
from controller.headend.store import Store

LEASE_S = 60.0           # a claimed delivery is retried by anyone after this, if its sender died
BACKOFF_BASE_S, BACKOFF_CAP_S = 1.0, 300.0
CLAIM = 20
SWEEP_LOCK = "/sweep"    # not a gateway id ("/" separates topic levels)
SIGNATURE, TIMESTAMP = "X-Cabguard-Signature", "X-Cabguard-Timestamp"


class DeliveryError(CabguardError):
    """One attempt failed; the message is stored as the delivery's last error."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature header's value: the receiver recomputes and compares it."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempts: int, first_s: float = BACKOFF_BASE_S) -> float:
    """The wait after the ``attempts``-th failed attempt: first_s, doubling, at most 5 minutes."""
    return min(BACKOFF_CAP_S, first_s * 2 ** max(0, attempts - 1))


def send(sink: Sink, body: bytes, broker: str | None) -> None:
    """One delivery attempt; raises DeliveryError."""
    o = sink.options
    if sink.kind == "webhook":
        ts = str(int(time.time()))
        req = urllib.request.Request(o["url"], data=body, method="POST", headers={
            "Content-Type": "application/json", TIMESTAMP: ts, SIGNATURE: sign(o["secret"], ts, body)})
        try:
            with urllib.request.urlopen(req, timeout=o.get("timeout_s", 5)) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise DeliveryError("{} answered HTTP {}".format(o["url"], e.code)) from None
        except (urllib.error.URLError, OSError) as e:
            raise DeliveryError("cannot reach {}: {}".format(o["url"], getattr(e, "reason", e))) from None
    elif sink.kind == "mqtt":
        target = o.get("broker") or broker
        if not target:
            raise DeliveryError("sink {}: no broker (set broker = \"HOST:PORT\")".format(sink.name))
        try:
            publish(target, o["topic"], body)
        except CabguardError as e:
            raise DeliveryError(str(e)) from None
    else:
        try:
            done = subprocess.run(o["argv"], input=body, capture_output=True, timeout=o.get("timeout_s", 30))
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DeliveryError("{}: {}".format(o["argv"][0], e)) from None
        if done.returncode != 0:
            raise DeliveryError("{} exited with {}: {}".format(o["argv"][0], done.returncode,
                                                               done.stderr.decode(errors="replace").strip()[-300:]))


class Notifier:
    """Delivers due notifications and sweeps for silent gateways, in a thread of its own
    (with its own database connection); ``wake()`` after a commit that notified."""

    def __init__(self, store: Store, config: HeadendConfig, broker: str | None = None):
        self.store = store
        self.config = config
        self.broker = broker
        self.sinks = {s.name: s for s in config.sinks}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        self.delivered = self.failed_attempts = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> "Notifier":
        self._thread = threading.Thread(target=self._loop, name="headend-notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(30)
        self.store.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            busy = self.run_once()
            if not busy:
                self._wake.wait(0.5)

    def run_once(self) -> int:
        """Sweep if due, then send what is due; how many deliveries were tried."""
        if time.monotonic() - self._last_sweep >= min(5.0, self.config.silent_after_s / 4):
            self._last_sweep = time.monotonic()
            with self.store.transaction([SWEEP_LOCK]) as tx:
                ledger.sweep_silent(tx, self.config.silent_after_s, self.config.sinks, Tally())
        if not self.sinks:
            return 0
        claimed = self._claim()
        for did, payload, sink_name, attempts, note in claimed:
            self._attempt(did, json.loads(payload), self.sinks[sink_name], attempts, note)
        return len(claimed)

    def _claim(self) -> list[tuple]:
        now = time.time()
        names = sorted(self.sinks)
        marks = ",".join("?" * len(names))
        skip = " FOR UPDATE SKIP LOCKED" if self.store.kind == "postgresql" else ""
        with self.store.transaction() as tx:
            ids = tx.execute("SELECT id FROM deliveries WHERE state='pending' AND next_at<=? AND sink IN ({}) "
                             "ORDER BY next_at LIMIT {}{}".format(marks, CLAIM, skip), (now, *names)).fetchall()
            rows = []
            for (did,) in ids:
                tx.execute("UPDATE deliveries SET next_at=? WHERE id=?", (now + LEASE_S, did))
                rows.append(tx.execute("SELECT d.id, n.payload, d.sink, d.attempts, n.id FROM deliveries d "
                                       "JOIN notifications n ON n.id = d.notification WHERE d.id=?",
                                       (did,)).fetchone())
        return rows

    def _attempt(self, did: int, payload: dict, sink: Sink, attempts: int, note: int) -> None:
        payload["notification"] = note
        body = json.dumps(payload, sort_keys=True).encode()
        try:
            send(sink, body, self.broker)
        except DeliveryError as e:
            self.failed_attempts += 1
            tries = attempts + 1
            state = "failed" if tries >= sink.options["attempts"] else "pending"
            self.store.execute("UPDATE deliveries SET attempts=?, state=?, next_at=?, last_error=? WHERE id=?",
                               (tries, state, time.time() + backoff_s(tries, sink.options["retry_s"]), str(e), did))
            return
        self.delivered += 1
        self.store.execute("UPDATE deliveries SET attempts=?, state='delivered', delivered_at=?, last_error='' "
                           "WHERE id=?", (attempts + 1, time.time(), did))
