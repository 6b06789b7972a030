"""Upstream sync: journal records out over MQTT, signed commands in.

Theory of operation
-------------------
One thread owns the MQTT link (drivers/mqtt.py), the send window
(controller/sendwindow.py) and the journal cursor.  It publishes durable
records from the cursor on, in sequence order at QoS 1, at most ``window``
in flight, with alarm records taken ahead of older telemetry; each PUBACK
acknowledges one record, and the cursor — persisted atomically by the
journal — moves only over contiguously acknowledged sequence numbers.  A
restart or a reconnect sends again from the cursor; the receiver
de-duplicates by (gateway, sequence) and restores order by sequence.

On connect it publishes ``online`` (retained) on the state topic; the
broker publishes the last will ``offline`` there if the gateway vanishes.
Every ``heartbeat_s`` a heartbeat (JSON) carries health and the latest
journal checkpoint, so a receiver can tell a truncated journal from a
quiet one.  Downlink commands arrive on the command topic and go through
the verifier (controller/downlink.py) into the shared command path; every
acceptance and refusal is journaled there.  Topic scheme: docs/uplink.md.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Callable

from controller.downlink import DownlinkVerifier, Refused
from controller.sendwindow import SendWindow
from drivers.mqtt import (
    ACKED, CONNECTED, DISCONNECTED, MESSAGE, REFUSED, Backoff, BrokerSettings, MqttLink,
)

FETCH_AHEAD = 512


class Topics:
    def __init__(self, prefix: str, site: str, gateway: str):
        base = "{}/{}/{}".format(prefix.rstrip("/"), site, gateway)
        self.records = base + "/rec"
        self.heartbeat = base + "/hb"
        self.state = base + "/state"
        self.commands = base + "/cmd"

    @staticmethod
    def all_records(prefix: str) -> str:
        return "{}/+/+/rec".format(prefix.rstrip("/"))


class Uplink:
    def __init__(self, settings: BrokerSettings, topics: Topics, journal, *,
                 verifier: DownlinkVerifier | None = None,
                 on_request: Callable = lambda request: None,
                 on_refused: Callable[[Refused], None] = lambda refused: None,
                 on_health: Callable[[str], None] = lambda text: None,
                 heartbeat: Callable[[], dict] = dict,
                 window: int = 64, heartbeat_s: float = 30.0, backoff: Backoff | None = None):
        self.link = MqttLink(settings, topics.state, b"offline")
        self.topics = topics
        self.journal = journal
        self.verifier = verifier
        self.on_request, self.on_refused, self.on_health = on_request, on_refused, on_health
        self.heartbeat_doc = heartbeat
        self.heartbeat_s = heartbeat_s
        self.backoff = backoff or Backoff()
        self.window = SendWindow(journal.cursor, window)
        self.urgent: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.mids: dict[int, int] = {}        # MQTT message id -> record seq
        self.ahead: dict[int, bytes] = {}     # records read ahead of need
        self.next_attempt = 0.0
        self.next_heartbeat = 0.0
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="uplink", daemon=True)

    # ---- the loop's side (thread-safe) ---------------------------------------

    def notify_urgent(self, seq: int) -> None:
        self.urgent.put(seq)

    def start(self) -> "Uplink":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.link.close()

    @property
    def connected(self) -> bool:
        return self.link.connected

    # ---- the uplink thread ---------------------------------------------------

    def _run(self) -> None:
        while not self.stop_event.is_set():
            now = time.monotonic()
            if not self.link.connected and now >= self.next_attempt:
                why = self.link.connect()
                if why:
                    self._retry_later(why)
            self.link.poll(0.02)
            self._drain_events()
            while not self.urgent.empty():
                self.window.add_urgent(self.urgent.get_nowait())
            if self.link.connected:
                self._publish_records()
                if now >= self.next_heartbeat:
                    self._heartbeat()

    def _retry_later(self, why: str) -> None:
        delay = self.backoff.next_delay()
        self.next_attempt = time.monotonic() + delay
        self.on_health("uplink: {}; retrying in {:.1f} s".format(why, delay))

    def _drain_events(self) -> None:
        while self.link.events:
            ev = self.link.events.popleft()
            kind = ev[0]
            if kind == CONNECTED:
                self.backoff.reset()
                self.link.publish(self.topics.state, b"online", retain=True)
                self.link.subscribe(self.topics.commands)
                self.next_heartbeat = 0.0
            elif kind == REFUSED:
                self._retry_later("broker refused the connection ({})".format(ev[1]))
            elif kind == DISCONNECTED:
                self.window.disconnected()
                self.mids.clear()
                self._retry_later("connection lost ({})".format(ev[1]))
            elif kind == ACKED:
                seq = self.mids.pop(ev[1], None)
                if seq is not None and self.window.ack(seq):
                    self.journal.set_cursor(self.window.cursor)
            elif kind == MESSAGE and ev[1] == self.topics.commands:
                self._command(ev[2])

    def _command(self, payload: bytes) -> None:
        if self.verifier is None:
            return
        try:
            request = self.verifier.verify(payload, time.time())
        except Refused as refused:
            self.on_refused(refused)
            return
        self.on_request(request)

    def _publish_records(self) -> None:
        for seq in self.window.take(self.journal.durable_seq):
            data = self._fetch(seq)
            if data is None:       # dropped by retention: nothing left to send
                self.window.ack(seq)
                continue
            mid = self.link.publish(self.topics.records, data)
            if mid is None:        # the link went down under us
                self.window.disconnected()
                return
            self.mids[mid] = seq
            self.sent += 1

    def _fetch(self, seq: int) -> bytes | None:
        data = self.ahead.pop(seq, None)
        if data is not None:
            return data
        self.ahead.clear()
        for s, record in self.journal.read_from(seq):
            self.ahead[s] = record
            if len(self.ahead) >= FETCH_AHEAD:
                break
        return self.ahead.pop(seq, None)

    def _heartbeat(self) -> None:
        self.next_heartbeat = time.monotonic() + self.heartbeat_s
        doc = dict(self.heartbeat_doc())
        checkpoint = self.journal.last_checkpoint
        doc["checkpoint"] = {"seq": checkpoint[0], "tag": checkpoint[1].hex()} if checkpoint else None
        doc["backlog"] = self.window.backlog(self.journal.durable_seq)
        doc["cursor"] = self.window.cursor
        self.link.publish(self.topics.heartbeat, json.dumps(doc, sort_keys=True).encode(), qos=0)
        self.journal.checkpoint()
