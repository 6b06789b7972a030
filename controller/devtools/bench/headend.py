"""Head-end figures (issue 21, docs/headend.md): ``cabguard collect`` processes on a
private PostgreSQL and a local Mosquitto -- records/s with one collector and
with two in one shared subscription group; a fleet of 10,000 simulated
gateways at one heartbeat (and its checkpoint record) per 30 s from a few
publishers, with the collector's CPU; alarm record published -> signed
webhook received (p50/p99); and a 100,000-record drain while a collector is
SIGKILLed every 10 s (lost, counted twice, false chain breaks)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from controller.devtools.bench import Figure
from controller.devtools.fleetsim import Collectors, Publisher, cpu_seconds, write_keys
from controller.devtools.pgserver import PgServer
from controller.devtools.sealed import SealedChain
from controller.headend.store import Store, open_store
from controller.journal import records as R
from controller.link.wire import Topics
from simulator.broker import Broker

STREAM_GATEWAYS, STREAM_RECORDS = 10, 2_000          # 20,000 records per throughput run
FLEET, FLEET_PERIOD_S, FLEET_PUBLISHERS = 10_000, 30.0, 4
ALARMS = 100
DRAIN, DRAIN_GATEWAYS, KILL_EVERY_S, DRAIN_ALARM_EVERY = 100_000, 20, 10.0, 1_000


def _count(store: Store, sql: str = "SELECT COUNT(*) FROM records") -> int:
    return store.execute(sql).fetchone()[0]


def _subscribed(store: Store, pub: Publisher, gateways: list[str], timeout_s: float = 60) -> None:
    """Until every collector of the group stores heartbeats (their shared sessions exist)."""
    deadline = time.monotonic() + timeout_s
    while _count(store, "SELECT COUNT(DISTINCT gateway) FROM heartbeats") < len(gateways):
        for gw in gateways:
            pub.publish(gw, Topics.HEARTBEAT, b'{"mode": "armed"}', qos=0)
        pub.pump(0.2)
        if time.monotonic() > deadline:
            raise RuntimeError("the collectors did not subscribe")


def _machine_busy_s() -> float:
    """CPU seconds spent by everything on this machine so far (user, nice, system), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")


def _stream(tmp: Path, broker: Broker, url: str, collectors: int) -> tuple[float, float, float]:
    """Records/s from the first publication until every record is stored; the collectors'
    CPU per record (µs); how busy the whole machine was (cores)."""
    chains = [SealedChain("gw-{}".format(i)).extend(STREAM_RECORDS) for i in range(STREAM_GATEWAYS)]
    # A group of its own: a member that left keeps its persistent session, and its share (docs/headend.md)
    group = Collectors(broker.address, write_keys(tmp / "keys", chains), url, collectors, "stream{}".format(collectors))
    store = open_store(url)
    pub = Publisher(broker.address, "bench-stream")
    try:
        _subscribed(store, pub, [c.gateway for c in chains])
        t0, busy0 = time.monotonic(), _machine_busy_s()
        cpu0 = sum(cpu_seconds(pid) for pid in group.pids())
        for seq in range(STREAM_RECORDS):
            for c in chains:
                pub.publish(c.gateway, Topics.RECORDS, c.records[seq])
            pub.pump(0.0)
        pub.settle()
        total = STREAM_GATEWAYS * STREAM_RECORDS
        while _count(store) < total:
            time.sleep(0.02)
        took = time.monotonic() - t0
        cpu = sum(cpu_seconds(pid) for pid in group.pids()) - cpu0
        return total / took, 1e6 * cpu / total, (_machine_busy_s() - busy0) / took
    finally:
        pub.close()
        group.stop()
        store.close()


def _fleet(tmp: Path, broker: Broker, url: str) -> list[Figure]:
    """Each gateway once per period: its checkpoint record, then the heartbeat naming it."""
    chains = [SealedChain("fl-{:05d}".format(i)).extend(1, rtype={0: R.CHECKPOINT}) for i in range(FLEET)]
    group = Collectors(broker.address, write_keys(tmp / "keys", chains), url, 1, "fleet")
    store = open_store(url)
    pubs = [Publisher(broker.address, "bench-fleet-{}".format(i)) for i in range(FLEET_PUBLISHERS)]
    try:
        _subscribed(store, pubs[0], [chains[0].gateway])
        cpu0, t0 = cpu_seconds(group.pids()[0]), time.monotonic()
        behind = 0.0
        for i, c in enumerate(chains):
            due = t0 + FLEET_PERIOD_S * i / FLEET
            while time.monotonic() < due:
                for p in pubs:
                    p.pump(0.0)
                time.sleep(0.001)
            behind = max(behind, time.monotonic() - due)
            p = pubs[i % FLEET_PUBLISHERS]
            p.publish(c.gateway, Topics.RECORDS, c.records[0])
            p.publish(c.gateway, Topics.HEARTBEAT, c.heartbeat("fleet", 0, 1_000), qos=0)
        for p in pubs:
            p.settle()
        sent_s = time.monotonic() - t0
        deadline = time.monotonic() + 60
        want = FLEET            # every record, every gateway's heartbeat
        while (_count(store) < FLEET or _count(store, "SELECT COUNT(DISTINCT gateway) FROM heartbeats") < want) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        lag = time.monotonic() - t0 - sent_s
        cpu = 100 * (cpu_seconds(group.pids()[0]) - cpu0) / (time.monotonic() - t0)
        held = _count(store) == FLEET and _count(store, "SELECT COUNT(*) FROM checkpoints WHERE state='verified'") \
            == FLEET
    finally:
        for p in pubs:
            p.close()
        group.stop()
        store.close()
    rate = 2 * FLEET / FLEET_PERIOD_S
    return [
        Figure("fleet {:,} gateways: held (all stored, anchored)".format(FLEET), 1.0 if held else 0.0, "bool", ">= 1",
               note="{:.0f} msg/s for {:.0f} s, publishers at most {:.2f} s late".format(rate, sent_s, behind)),
        Figure("fleet {:,} gateways: collector CPU".format(FLEET), cpu, "%", note="of one core, PostgreSQL on this machine"),
        Figure("fleet {:,} gateways: last stored after last sent".format(FLEET), lag, "s"),
    ]


class _Hook:
    """A webhook receiver: the time each gateway's notification arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrived.setdefault(json.loads(body)["gateway"], time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _alarm_latency(tmp: Path, broker: Broker, url: str) -> list[Figure]:
    hook = _Hook()
    config = tmp / "headend.toml"
    config.write_text('[[sink]]\nname = "dispatch"\nkind = "webhook"\nurl = "http://127.0.0.1:{}/"\n'
                      'secret = "bench"\non = ["alarm"]\n'.format(hook.server.server_port))
    chains = [SealedChain("al-{:03d}".format(i)).extend(1, severity={0: R.ev.ALARM}) for i in range(ALARMS)]
    group = Collectors(broker.address, write_keys(tmp / "keys", chains), url, 1, "alarm", config=config)
    store = open_store(url)
    pub = Publisher(broker.address, "bench-alarm")
    sent: dict[str, float] = {}
    try:
        _subscribed(store, pub, [chains[0].gateway])
        for c in chains:
            sent[c.gateway] = time.monotonic()
            pub.publish(c.gateway, Topics.RECORDS, c.records[0])
            pub.pump(0.0)
            time.sleep(0.05)
            pub.pump(0.0)
        deadline = time.monotonic() + 30
        while len(hook.arrived) < ALARMS and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pub.close()
        group.stop()
        store.close()
        hook.server.shutdown()
        hook.server.server_close()
    lat = sorted(hook.arrived[g] - sent[g] for g in hook.arrived)
    if not lat:
        return [Figure("alarm -> webhook: received", 0, "of {}".format(ALARMS), ">= {}".format(ALARMS))]
    return [
        Figure("alarm -> webhook: p50", 1000 * lat[len(lat) // 2], "ms"),
        Figure("alarm -> webhook: p99", 1000 * lat[max(0, int(len(lat) * 0.99) - 1)], "ms", "<= 1000",
               note="{} of {} received".format(len(lat), ALARMS)),
    ]


def _kill_drain(tmp: Path, broker: Broker, url: str) -> list[Figure]:
    per = DRAIN // DRAIN_GATEWAYS
    alarms = {s: R.ev.ALARM for s in range(DRAIN_ALARM_EVERY, per, DRAIN_ALARM_EVERY)}
    chains = [SealedChain("kd-{:02d}".format(i)).extend(per, severity=alarms) for i in range(DRAIN_GATEWAYS)]
    group = Collectors(broker.address, write_keys(tmp / "keys", chains), url, 2, "drain")
    store = open_store(url)
    pub = Publisher(broker.address, "bench-drain")
    try:
        _subscribed(store, pub, [c.gateway for c in chains])
        t0 = time.monotonic()
        next_kill, victim = t0 + KILL_EVERY_S, 0

        def kill_due() -> None:
            nonlocal next_kill, victim
            if time.monotonic() >= next_kill:
                group.kill(victim)
                victim, next_kill = 1 - victim, time.monotonic() + KILL_EVERY_S

        for seq in range(per):
            for c in chains:
                pub.publish(c.gateway, Topics.RECORDS, c.records[seq])
            pub.pump(0.0)
            kill_due()
        pub.settle(300)
        deadline = time.monotonic() + 600
        while _count(store) < DRAIN and time.monotonic() < deadline:
            kill_due()
            time.sleep(0.1)
        took = time.monotonic() - t0
        stored = _count(store)
        breaks = _count(store, "SELECT COUNT(*) FROM problems WHERE kind='chain'")
        counted = _count(store, "SELECT COALESCE(SUM(records), 0) FROM incidents WHERE kind='alarm'")
    finally:
        pub.close()
        group.stop()
        store.close()
    return [
        Figure("kill every {:.0f} s, {:,} drained: lost".format(KILL_EVERY_S, DRAIN), DRAIN - stored, "records", "<= 0",
               note="{} kills, {:.0f} s, {:.0f} records/s".format(group.kills, took, stored / took)),
        Figure("kill every {:.0f} s: alarms counted twice".format(KILL_EVERY_S), counted - len(alarms) * DRAIN_GATEWAYS, "records", "<= 0"),
        Figure("kill every {:.0f} s: false chain breaks".format(KILL_EVERY_S), breaks, "links", "<= 0"),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    broker, pg = Broker().start(), PgServer().start()
    try:
        runs = []
        for n in (1, 2):
            with tempfile.TemporaryDirectory(prefix="cabguard-bench-headend-") as tmp:
                runs.append(_stream(Path(tmp), broker, pg.new_database(), n))
        (one, cpu1, busy1), (two, cpu2, busy2) = runs
        cores = os.cpu_count() or 1
        figures += [
            Figure("records/s, PostgreSQL, 1 collector", one, "rec/s",
                   note="{:,} records of {} gateways via local Mosquitto; {:.0f} µs collector CPU per record; "
                        "machine {:.1f} of {} cores busy".format(STREAM_GATEWAYS * STREAM_RECORDS, STREAM_GATEWAYS,
                                                                  cpu1, busy1, cores)),
            Figure("records/s, 2 collectors, one shared group", two, "rec/s",
                   note="{:.0f} µs collectors' CPU per record; machine {:.1f} of {} cores busy".format(
                       cpu2, busy2, cores)),
            Figure("2 collectors / 1 collector", two / one, "x", ">= 1.6",
                   note="the broker, PostgreSQL, the publisher and the collectors share this machine's cores"),
        ]
        for part in (_fleet, _alarm_latency, _kill_drain):
            with tempfile.TemporaryDirectory(prefix="cabguard-bench-headend-") as tmp:
                figures += part(Path(tmp), broker, pg.new_database())
    finally:
        broker.cleanup()
        pg.cleanup()
    return figures
