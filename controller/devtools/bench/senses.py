"""Senses figures: a camera event published on a real Mosquitto reaches the
input image within one scan + 5 ms (issue 22).

The path is the gateway's own: the LAN link's thread (controller/gateway/
lanlink.py) takes the message and queues it on the camera feed; a scan loop
on the gateway's ScanTimer (100 ms, absolute deadlines) drains the feed into
the image (``CameraFeed.fill``, as ``Gateway.scan`` does).  Events are
published at random phases of the scan; the latency of one is from just
before ``publish`` to the end of the first scan whose image shows it.
"""

from __future__ import annotations

import random
import statistics
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from controller.core.catalog import ZONE_SIGNALS, Catalog, camera_signals
from controller.devtools.bench import Figure
from controller.gateway.cameras import CameraFeed, CameraSpec
from controller.gateway.lanlink import LanLink
from controller.gateway.scantimer import ScanTimer
from drivers.mqtt import BrokerSettings
from simulator.broker import Broker

SCAN_MS = 100
EVENTS = 40


def camera_latency(events: int = EVENTS) -> list[float]:
    """Milliseconds from publish to the scan that shows each of ``events`` camera events."""
    broker = Broker().start()
    catalog = Catalog(list(ZONE_SIGNALS) + camera_signals(["gate"]))
    feed = CameraFeed(catalog, [CameraSpec("gate", "nvr/gate", 600_000, 600_000)])
    person = catalog.index["cam.gate.person"]
    link = LanLink(BrokerSettings("127.0.0.1", broker.port, client_id="bench-lan"), ["nvr/gate/+"], feed.on_mqtt)
    nvr = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-nvr")
    stop = threading.Event()
    seen: list[tuple[int, int]] = []        # (ns at the end of the scan, person value)
    image = catalog.new_image()

    def scans() -> None:
        timer = ScanTimer(SCAN_MS)
        timer.start()
        while not stop.is_set():
            timer.wait()
            feed.fill(image, time.monotonic_ns() // 1_000_000)
            seen.append((time.monotonic_ns(), image[person]))

    loop = threading.Thread(target=scans, daemon=True)
    latencies = []
    try:
        link.start()
        link.connected.wait(10)
        nvr.connect("127.0.0.1", broker.port)
        nvr.loop_start()
        loop.start()
        rng = random.Random(22)
        for i in range(events):
            time.sleep(rng.uniform(0.15, 0.35))     # a random phase of the scan
            want = 1 if i % 2 == 0 else 0
            t0 = time.monotonic_ns()
            nvr.publish("nvr/gate/person", b"1" if want else b"0", qos=1)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                hit = [t for t, v in list(seen) if t > t0 and v == want]
                if hit:
                    latencies.append((hit[0] - t0) / 1e6)
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        nvr.loop_stop()
        link.stop()
        broker.cleanup()
    return latencies


def run() -> list[Figure]:
    lat = camera_latency()
    lat.sort()
    note = "{} events on Mosquitto, scan {} ms".format(len(lat), SCAN_MS)
    return [
        Figure("camera event on MQTT -> image, p50", statistics.median(lat), "ms", "", note),
        Figure("camera event on MQTT -> image, max", lat[-1], "ms", "<= {}".format(SCAN_MS + 5), note),
    ]
