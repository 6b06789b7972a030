"""The cabinet LAN's MQTT broker: camera events in, commands to third-party systems out.

An NVR or analytics box publishes camera events on the site's LAN broker;
a VMS or a lighting controller takes commands there.  ``LanLink`` is one
thread that owns one MQTT connection to that broker (``[lan]`` in the site
config; not the uplink's broker, and not the uplink's process):

- ``send(topic, payload)`` (the output bank, from the scan loop) records
  the newest payload per topic and wakes the thread: O(1), never blocks.
  The thread publishes it retained at QoS 1, and again after every
  reconnect, so the third-party system ends up with the newest command
  even if the broker was away when it changed.
- ``post(topic, payload)`` queues a one-shot message (QoS 1, not
  retained), e.g. an NVR's "protect this clip": sent once connected.
- every message on a subscribed topic goes to ``on_message(topic,
  payload)`` on the link's thread (the camera feed queues it for the next
  scan).

Connection trouble is a health line (``on_health``), once per outage, and
the link retries with the uplink's backoff.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from drivers.mqtt import CONNECTED, DISCONNECTED, MESSAGE, REFUSED, Backoff, BrokerSettings, MqttLink


CONNACK_TIMEOUT_S = 5.0


class LanLink:
    def __init__(self, settings: BrokerSettings, subscriptions: list[str],
                 on_message: Callable[[str, bytes], None], on_health: Callable[[str], None] = lambda text: None):
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_health = on_health
        self.latest: dict[str, bytes] = {}
        self.posts: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=1000)
        self.dirty: set[str] = set()
        self.lock = threading.Lock()          # held for a dict update only
        self.link = MqttLink(settings)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lanlink", daemon=True)
        self.connected = threading.Event()
        self.published = 0

    def start(self) -> "LanLink":
        self.thread.start()
        return self

    def send(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` (retained) as the newest command on ``topic``."""
        with self.lock:
            self.latest[topic] = payload
            self.dirty.add(topic)
        self.link.wake()

    def post(self, topic: str, payload: bytes) -> None:
        """Queue a one-shot message (the oldest go first should 1,000 wait)."""
        self.posts.append((topic, payload))
        self.link.wake()

    def stop(self) -> None:
        self.stopping.set()
        self.link.wake()
        if self.thread.is_alive():
            self.thread.join(5)
        self.link.close()

    def _run(self) -> None:
        backoff = Backoff()
        next_attempt = 0.0
        awaiting = False            # a CONNECT sent, no CONNACK yet
        reported = False            # one health line per outage
        while not self.stopping.is_set():
            now = time.monotonic()
            if not self.link.connected and now >= next_attempt:
                why = "broker did not answer the connection within {:.0f} s".format(CONNACK_TIMEOUT_S) \
                    if awaiting else self.link.connect()
                awaiting = not why
                next_attempt = now + (CONNACK_TIMEOUT_S if awaiting else backoff.next_delay())
                if why and not reported:
                    reported = True
                    self.on_health("LAN broker {}:{}: {}".format(self.settings.host, self.settings.port, why))
            self.link.poll(0.2)
            while self.link.events:
                ev = self.link.events.popleft()
                if ev[0] == CONNECTED:
                    awaiting = reported = False
                    backoff.reset()
                    for topic in self.subscriptions:
                        self.link.subscribe(topic)
                    with self.lock:
                        self.dirty = set(self.latest)
                    self.connected.set()
                elif ev[0] == MESSAGE:
                    self.on_message(ev[1], ev[2])
                elif ev[0] in (DISCONNECTED, REFUSED):
                    awaiting = False
                    self.connected.clear()
                    next_attempt = time.monotonic() + backoff.next_delay()
                    if not reported:
                        reported = True
                        self.on_health("LAN broker {}:{}: {}".format(self.settings.host, self.settings.port, ev[1]))
            if self.link.connected:
                self._publish_dirty()

    def _publish_dirty(self) -> None:
        with self.lock:
            topics, self.dirty = self.dirty, set()
            batch = [(t, self.latest[t]) for t in sorted(topics)]
        for topic, payload in batch:
            if self.link.publish(topic, payload, qos=1, retain=True) is None:
                with self.lock:
                    self.dirty.add(topic)
            else:
                self.published += 1
        while self.posts and self.link.connected:
            topic, payload = self.posts[0]
            if self.link.publish(topic, payload, qos=1) is None:
                break
            self.posts.popleft()
            self.published += 1
