"""Video-analytics events in: camera reports become ``cam.<name>.*`` on the image.

Cameras and NVRs with on-board analytics report what they see: a person,
a vehicle, loitering in a zone, or tampering (lens covered, camera moved).
Two sources hand reports in, each from its own thread: the LAN MQTT link
(controller/gateway/lanlink.py) and the webhook endpoint
(controller/gateway/webhook.py).  ``CameraFeed.report`` only appends to a
deque (thread-safe, never blocks); the scan loop's ``fill`` drains it and
writes the image, so the loop never waits for either source.

A report is ``(camera, kind, active)`` with kind one of ``person``,
``vehicle``, ``loiter``, ``tamper`` or ``heartbeat`` (alive, nothing
seen).  On the image, per camera:

- ``cam.<name>.online`` is 1 while the last report (any kind) is at most
  ``fresh_s`` old: a camera that stops reporting is known dead.  Before
  its first report it is 0, and its other signals are unknown (0, and
  guarded by the online twin in every rule, docs/rules.md).
- ``cam.<name>.<kind>`` is 1 from an active report until an inactive one,
  or ``hold_s`` after the last active one (analytics often send a start
  and never an end), and 0 while the camera is offline.

The wire formats (MQTT topic and payload, HTTP path, header and body) are
in docs/signals.md, "Cameras".
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from typing import Callable

from controller.core.catalog import CAMERA_KINDS, Catalog
from controller.errors import CabguardError

HEARTBEAT = "heartbeat"
REPORT_KINDS = CAMERA_KINDS + (HEARTBEAT,)
MAX_PAYLOAD = 1024


class ReportError(CabguardError):
    """A camera report that cannot be read; says what was wrong."""


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str          # MQTT topic prefix ("" = webhook only)
    fresh_ms: int
    hold_ms: int


def parse_active(payload: bytes) -> bool:
    """``1``/``0``, ``true``/``false``, or JSON ``{"active": true}``."""
    if len(payload) > MAX_PAYLOAD:
        raise ReportError("payload of {} bytes: at most {}".format(len(payload), MAX_PAYLOAD))
    text = payload.strip().lower()
    if text in (b"1", b"true", b"on"):
        return True
    if text in (b"0", b"false", b"off", b""):
        return False
    try:
        doc = json.loads(text)
    except ValueError:
        raise ReportError("payload {!r}: want 1 or 0, or JSON {{\"active\": true}}".format(payload[:40])) from None
    if isinstance(doc, dict) and isinstance(doc.get("active"), bool):
        return doc["active"]
    raise ReportError("payload {!r}: want 1 or 0, or JSON {{\"active\": true}}".format(payload[:40]))


class CameraFeed:
    """The cameras' reports, drained into the image once per scan."""

    def __init__(self, catalog: Catalog, cameras: list[CameraSpec],
                 clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000):
        self.clock_ms = clock_ms    # the scan loop's monotonic clock, in ms
        self.cameras = {c.name: c for c in cameras}
        self.pending: collections.deque[tuple[str, str, bool, int]] = collections.deque()
        self.refused = 0
        # per camera: last report (ms, None = never), and per kind the time it ends (None = off)
        self.last: dict[str, int | None] = {c.name: None for c in cameras}
        self.until: dict[tuple[str, str], int | None] = {(c.name, k): None for c in cameras for k in CAMERA_KINDS}
        self.idx = {(c.name, k): catalog.index["cam.{}.{}".format(c.name, k)]
                    for c in cameras for k in CAMERA_KINDS + ("online",)}
        self.zone_idx = [catalog.index["zone." + k] for k in CAMERA_KINDS]

    def by_topic(self, topic: str) -> tuple[str, str] | None:
        """(camera, kind) of an MQTT topic ``<camera topic>/<kind>``, or None."""
        prefix, _, kind = topic.rpartition("/")
        for cam in self.cameras.values():
            if cam.topic and cam.topic == prefix and kind in REPORT_KINDS:
                return cam.name, kind
        return None

    def report(self, camera: str, kind: str, active: bool) -> None:
        """From any thread: queue one report, stamped now."""
        self.pending.append((camera, kind, active, self.clock_ms()))

    def on_mqtt(self, topic: str, payload: bytes) -> None:
        """The LAN link's messages: a report if the topic is a camera's and the payload reads."""
        found = self.by_topic(topic)
        try:
            if found is None:
                raise ReportError("topic {!r} is no camera's".format(topic))
            self.report(found[0], found[1], parse_active(payload))
        except ReportError:
            self.refused += 1

    def fill(self, image: list[int], now_ms: int) -> None:
        """In the scan loop: apply the queued reports, then write every camera's signals."""
        while self.pending:
            camera, kind, active, at = self.pending.popleft()
            if camera not in self.cameras:
                self.refused += 1
                continue
            self.last[camera] = at
            if kind != HEARTBEAT:
                self.until[(camera, kind)] = at + self.cameras[camera].hold_ms if active else None
        if not self.cameras:    # a site without cameras: its zone.* signals stay 0
            return
        idx = self.idx
        zone = [0] * len(CAMERA_KINDS)
        for name, cam in self.cameras.items():
            last = self.last[name]
            online = last is not None and now_ms - last <= cam.fresh_ms
            image[idx[(name, "online")]] = 1 if online else 0
            for k, kind in enumerate(CAMERA_KINDS):
                until = self.until[(name, kind)]
                on = 1 if online and until is not None and now_ms < until else 0
                image[idx[(name, kind)]] = on
                zone[k] |= on
        for i, on in zip(self.zone_idx, zone):
            image[i] = on
