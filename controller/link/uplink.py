"""Upstream sync: journal records out over MQTT, signed commands in.

Theory of operation
-------------------
One thread owns the MQTT link (drivers/mqtt.py), the send window
(controller/link/sendwindow.py) and the journal cursor.  It publishes durable
records from the cursor on, in sequence order at QoS 1, at most ``window``
in flight, with alarm records taken ahead of older telemetry; each PUBACK
acknowledges one record, and the cursor — persisted atomically by the
journal — moves only over contiguously acknowledged sequence numbers.  A
restart or a reconnect sends again from the cursor; the receiver
de-duplicates by (gateway, sequence) and restores order by sequence.

On connect it publishes ``online`` (retained) on the state topic; the
broker publishes the last will ``offline`` there if the gateway vanishes.
Every ``heartbeat_s`` a heartbeat (JSON) carries health and the latest
journal checkpoint (``with_checkpoint``), so a receiver can tell a
truncated journal from a quiet one.  Downlink commands arrive on the
command topic and go to ``on_command`` (the verifier of
controller/link/downlink.py, then the shared command path; every acceptance and
refusal is journaled there).  Topic scheme: docs/uplink.md.

The journal the uplink reads is anything with ``cursor``, ``set_cursor``,
``durable_seq``, ``durable_listeners`` and ``read_from``: the Journal itself (tests, benches), or
on the gateway the uplink process's view of the gateway's journal
(controller/link/uplinkproc.py), which keeps this work off the scan loop's GIL.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Callable, Iterator

from controller.link.sendwindow import SendWindow
from controller.link.wire import Topics
from drivers.mqtt import ACKED, CONNECTED, DISCONNECTED, MESSAGE, REFUSED, Backoff, BrokerSettings, MqttLink

FETCH_AHEAD = 512        # records read ahead of need; also the farthest a read skips forward
CURSOR_SAVE_S = 0.25     # the cursor file is rewritten (fsync'd) at most this often
CONNACK_TIMEOUT_S = 10.0 # a broker that accepts TCP but never answers CONNECT (hung) is retried
# A backlog drains at most this fast: flat out the uplink thread takes a whole
# core and the scan loop's wake-ups wait behind it; paced, a 100,000-record
# backlog still drains in about 17 s (the goal is 30 s).
DRAIN_RATE = 6000.0
DRAIN_BURST = 256
SETTLE_S = 1.0           # a stop waits this long at most for the acknowledgements in flight
# The uplink thread sleeps until the network, a wake-up (new durable records, an
# urgent one, a stop) or its next timer (heartbeat, reconnection, cursor save), and
# at most a quarter of the MQTT keepalive: paho sends its PINGREQ only from within a
# poll, so a quiet link pings at most keepalive/4 late, well inside the broker's
# 1.5 x keepalive (idle with the defaults: a wake-up per 7.5 s, not one a second).
KEEPALIVE_CHECKS = 4


def with_checkpoint(journal, health: Callable[[], dict] = dict) -> Callable[[], dict]:
    """A heartbeat source: ``health()`` plus the journal's latest durable
    checkpoint; each heartbeat asks for the next checkpoint, so a quiet
    journal still gets one per heartbeat."""
    def heartbeat() -> dict:
        doc = dict(health())
        checkpoint = journal.last_checkpoint
        doc["checkpoint"] = {"seq": checkpoint[0], "tag": checkpoint[1].hex()} if checkpoint else None
        journal.checkpoint()
        return doc
    return heartbeat


class Uplink:
    def __init__(self, settings: BrokerSettings, topics: Topics, journal, *,
                 on_command: Callable[[bytes], None] = lambda payload: None,
                 on_health: Callable[[str], None] = lambda text: None,
                 on_link: Callable[[bool], None] = lambda up: None,
                 heartbeat: Callable[[], dict] | None = None,
                 window: int = 64, heartbeat_s: float = 30.0, backoff: Backoff | None = None,
                 connack_timeout_s: float = CONNACK_TIMEOUT_S, max_rate: float = DRAIN_RATE):
        self.link = MqttLink(settings, topics.state, b"offline")
        self.max_rate = max_rate          # records/s: a backlog drains paced, see DRAIN_RATE
        self.tokens = float(DRAIN_BURST)
        self.tokens_at = time.monotonic()
        self.topics = topics
        self.journal = journal
        self.on_command, self.on_health, self.on_link = on_command, on_health, on_link
        self.heartbeat_doc = heartbeat or with_checkpoint(journal)
        self.was_connected = False
        self.heartbeat_s = heartbeat_s
        self.idle_wait_s = settings.keepalive_s / KEEPALIVE_CHECKS
        self.backoff = backoff or Backoff()
        self.window = SendWindow(journal.cursor, window)
        self.urgent: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.mids: dict[int, int] = {}        # MQTT message id -> record seq
        self.ahead: dict[int, bytes] = {}     # records read ahead of need
        self.reader: Iterator[tuple[int, bytes]] | None = None   # sequential journal read
        self.reader_next = -1                 # the seq the reader yields next (at least)
        self.next_cursor_save = 0.0
        self.next_attempt = 0.0
        self.awaiting_connack = False
        self.connack_timeout_s = connack_timeout_s
        self.next_heartbeat = 0.0
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, name="uplink", daemon=True)
        journal.durable_listeners.append(lambda _seq: self.link.wake())

    # ---- the loop's side (thread-safe) ---------------------------------------

    def notify_urgent(self, seq: int) -> None:
        self.urgent.put(seq)
        self.link.wake()

    def request_stop(self) -> None:
        self.stop_event.set()
        self.link.wake()

    def start(self) -> "Uplink":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop sending; when connected, wait for the acknowledgements in flight
        (a DISCONNECT that overtakes them makes mosquitto treat the link as
        dropped and publish the last will), say ``offline``, persist the cursor."""
        self.request_stop()
        if self.thread.ident is not None:     # started
            self.thread.join(5)
        if self.link.connected:
            self._settle(SETTLE_S)
            self.link.publish(self.topics.state, b"offline", retain=True)
        self._save_cursor(force=True)
        self.link.close()

    @property
    def connected(self) -> bool:
        return self.link.connected

    # ---- the uplink thread ---------------------------------------------------

    def run(self) -> None:
        """Until ``stop_event``: the thread's body (or the uplink process's main loop)."""
        while not self.stop_event.is_set():
            self.service(self._wait_s())

    def _wait_s(self) -> float:
        """How long the thread may sleep before its next piece of work: none
        while records wait for drain tokens' refill, else until a timer."""
        now = time.monotonic()
        if self.link.connected:
            if self.window.backlog(self.journal.durable_seq) > len(self.window.in_flight) and self.window.room():
                return max(0.0, (1.0 - self.tokens) / self.max_rate)
            until = [self.next_heartbeat]
        else:
            until = [self.next_attempt]
        if self.window.cursor > self.journal.cursor:
            until.append(self.next_cursor_save)
        return max(0.0, min(self.idle_wait_s, min(until) - now))

    def _settle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.mids and self.link.connected and time.monotonic() < deadline:
            self.link.poll(0.02)
            self._drain_events()

    def service(self, poll_s: float) -> None:
        """One round of the uplink's work, waiting at most ``poll_s`` for the network.
        The thread calls it in a loop; the fleet bench drives many uplinks from one
        thread with ``poll_s=0``."""
        now = time.monotonic()
        if not self.link.connected and now >= self.next_attempt:
            self._attempt(now)
        self.link.poll(poll_s)
        self._drain_events()
        if self.link.connected != self.was_connected:
            self.was_connected = self.link.connected
            self.on_link(self.was_connected)
        while not self.urgent.empty():
            self.window.add_urgent(self.urgent.get_nowait())
        if self.link.connected:
            self._publish_records()
            if now >= self.next_heartbeat:
                self._heartbeat()
        self._save_cursor()

    def _save_cursor(self, force: bool = False) -> None:
        """Persist the cursor now and then, not per PUBACK: an fsync per record would
        cap the drain rate, and a cursor that lags only means a few records are sent
        again after a restart (the receiver de-duplicates)."""
        now = time.monotonic()
        if self.window.cursor > self.journal.cursor and (force or now >= self.next_cursor_save):
            self.journal.set_cursor(self.window.cursor)
            self.next_cursor_save = now + CURSOR_SAVE_S

    def _attempt(self, now: float) -> None:
        """Start a connection, or give up on one the broker never answered."""
        s = self.link.settings
        if self.awaiting_connack:
            self.awaiting_connack = False
            self._retry_later("broker {}:{} did not answer the connection within {:.1f} s".format(
                s.host, s.port, self.connack_timeout_s))
            return
        why = self.link.connect()
        if why:
            self._retry_later(why)
        else:
            self.awaiting_connack = True
            self.next_attempt = now + self.connack_timeout_s

    def _retry_later(self, why: str) -> None:
        delay = self.backoff.next_delay()
        self.next_attempt = time.monotonic() + delay
        self.on_health("uplink: {}; retrying in {:.2f} s".format(why, delay))

    def _drain_events(self) -> None:
        while self.link.events:
            ev = self.link.events.popleft()
            kind = ev[0]
            if kind in (CONNECTED, REFUSED):
                self.awaiting_connack = False
            if kind == CONNECTED:
                self.backoff.reset()
                self.link.publish(self.topics.state, b"online", retain=True)
                self.link.subscribe(self.topics.commands)
                self.next_heartbeat = 0.0
            elif kind == REFUSED:
                self._retry_later("broker {}:{} refused the connection: {} (check [uplink] username, "
                                  "password and client certificate)".format(
                                      self.link.settings.host, self.link.settings.port, ev[1]))
            elif kind == DISCONNECTED:
                self.window.disconnected()
                self.mids.clear()
                self._retry_later("connection lost ({})".format(ev[1]))
            elif kind == ACKED:
                seq = self.mids.pop(ev[1], None)
                if seq is not None:
                    self.window.ack(seq)
            elif kind == MESSAGE and ev[1] == self.topics.commands:
                self.on_command(ev[2])

    def _publish_records(self) -> None:
        now = time.monotonic()
        self.tokens = min(float(DRAIN_BURST), self.tokens + (now - self.tokens_at) * self.max_rate)
        self.tokens_at = now
        taken = self.window.take(self.journal.durable_seq, int(self.tokens))
        self.tokens -= len(taken)
        for seq in taken:
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
        """One record, from a sequential read of the journal kept open between calls:
        re-reading a segment file per batch would make a long backlog quadratic."""
        data = self.ahead.pop(seq, None)
        if data is not None:
            return data
        if self.reader is not None and seq > self.reader_next + FETCH_AHEAD:
            # an alarm far ahead of the backlog: read it alone, keep the reader where it is
            return next((r for s, r in self.journal.read_from(seq) if s == seq), None)
        if self.reader is not None and seq >= self.reader_next:
            found, data = self._read_to(seq)
            if found:
                return data
        # No reader, a seq behind it, or the reader's copy of the tail segment ended
        # before seq was written: read afresh from seq.
        self.ahead.clear()
        self.reader = self.journal.read_from(seq)
        self.reader_next = seq
        return self._read_to(seq)[1]

    def _read_to(self, seq: int) -> tuple[bool, bytes | None]:
        """Advance the reader to ``seq``: (True, record), (True, None) if the journal
        no longer has it (retention), or (False, None) if the reader ran out first."""
        assert self.reader is not None
        for s, record in self.reader:
            self.reader_next = s + 1
            if s == seq:
                return True, record
            if s > seq:
                self.ahead[s] = record
                return True, None
            if len(self.ahead) < FETCH_AHEAD:
                self.ahead[s] = record
        self.reader = None
        return False, None

    def _heartbeat(self) -> None:
        self.next_heartbeat = time.monotonic() + self.heartbeat_s
        doc = dict(self.heartbeat_doc())
        doc["backlog"] = self.window.backlog(self.journal.durable_seq)
        doc["cursor"] = self.window.cursor
        self.link.publish(self.topics.heartbeat, json.dumps(doc, sort_keys=True).encode(), qos=0)
