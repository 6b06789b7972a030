"""Uplink figures: a 100,000-record backlog drained to a local Mosquitto; the real
Gateway's scan lateness while its own uplink drains one; the memory of `cabguard
run`'s processes while they drain one; a week's outage drained
with nothing lost or out of order at the receiver; a fleet of N gateways through
one broker.

The receiver is ``cabguard collect`` in its own process, as at a head end, so
its CPU and the broker's can be read from /proc.  The outage figure
queues one simulated day at 1 record/s by default (the bench stays within a
few minutes on a 2-core box); ``CABGUARD_BENCH_FULL=1`` queues the full week
(604,800 records).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from controller.core import events as ev
from controller.core.catalog import Catalog
from controller.core.step import CoreConfig, CoreState, step
from controller.devtools.bench import Figure
from controller.devtools.bench.runtime import SimProcess, rss_kb
from controller.devtools.fleetsim import cpu_seconds
from controller.devtools.sampletraces import CABINET
from controller.gateway.run import build
from controller.gateway.sitefiles import EPOCH_KEY_FILE
from controller.headend.cmdsend import publish
from controller.journal import records as R
from controller.journal.journal import Journal
from controller.link.uplink import Uplink, with_checkpoint
from controller.link.uplinkproc import UPLINK_NICE
from controller.link.wire import Topics
from drivers.keys import generate, load_key, role_kid, write_key
from drivers.mqtt import Backoff, BrokerSettings
from simulator.broker import Broker
from simulator.demo import prepare
from simulator.soak import footprint, gateway_pids

DRAIN_RECORDS = 100_000
WEEK_S = 7 * 24 * 3600
OUTAGE_S = WEEK_S if os.environ.get("CABGUARD_BENCH_FULL") == "1" else 24 * 3600
ALARM_EVERY = 3600            # one alarm an hour in the outage backlog
SCAN_MS = 100
IDLE_S = 15.0                 # scan lateness measured with the uplink idle, for comparison
FLEET_SIZES = (10, 100, 1000)
FLEET_SECONDS = 10.0
HEARTBEAT_S = 2.0
PER_PROCESS = 125             # gateways per fleet process
PREFIX = "cabguard"
SNAPSHOT = list(range(40))    # a cabinet's image is a few dozen signals


def _gateway(tmp: Path, name: str) -> Journal:
    """A journal for gateway ``name``; its record key goes into tmp/keys for the receiver."""
    prov = generate(role_kid(name, "record"))
    (tmp / "keys").mkdir(exist_ok=True)
    write_key(tmp / "keys" / (name + ".key"), prov)
    return Journal.open(tmp / name, name, tmp / name / "epoch.key", prov)


def _backlog(tmp: Path, name: str, n: int) -> tuple[Journal, list[int]]:
    """``n`` records at 1 record/s of simulated time, an alarm every hour."""
    journal = _gateway(tmp, name)
    start_ms = int(time.time() * 1000) - n * 1000
    alarms = []
    for i in range(n):
        severity = ev.ALARM if i % ALARM_EVERY == ALARM_EVERY - 1 else ev.INFO
        ctx = R.Context(start_ms + i * 1000, True, i * 1000, SNAPSHOT)
        seq = journal.append(R.from_event((ev.EV_RULE, i % 50, severity, 1), ctx), urgent=False)
        if severity == ev.ALARM:
            alarms.append(seq)
    journal.flush()
    return journal, alarms


class Receiver:
    """``cabguard collect`` in its own process, returned once it is subscribed."""

    def __init__(self, tmp: Path, broker: Broker):
        self.db = tmp / "rx.db"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli.main", "collect", "--broker", broker.address, "--key",
             str(tmp / "keys"), "--out", str(self.db), "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.count("SELECT COUNT(*) FROM heartbeats WHERE gateway='probe'"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("cabguard collect did not subscribe")
            publish(broker.address, "{}/probe/probe/hb".format(PREFIX), b"{}")   # stored once subscribed
            time.sleep(0.2)

    def count(self, query: str, *args: object) -> int:
        try:
            with sqlite3.connect(str(self.db), timeout=5) as db:
                return db.execute(query, args).fetchone()[0]
        except sqlite3.Error:    # not created yet
            return 0

    def wait_stored(self, count: int, timeout_s: float = 600) -> None:
        """Until ``count`` records are verified and committed (the receiver commits twice a second)."""
        deadline = time.monotonic() + timeout_s
        while self.count("SELECT COUNT(*) FROM records") < count and time.monotonic() < deadline:
            time.sleep(0.1)

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def finish(self) -> dict:
        """SIGTERM: the receiver stops, commits and prints its report."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out)

    def arrival(self, gateway: str) -> list[int]:
        with sqlite3.connect(str(self.db)) as db:
            return [r[0] for r in db.execute("SELECT seq FROM records WHERE gateway=? ORDER BY rowid", (gateway,))]


def _uplink(broker: Broker, journal: Journal, name: str, **kw) -> Uplink:
    settings = BrokerSettings("127.0.0.1", broker.port, client_id=name)
    return Uplink(settings, Topics(PREFIX, "bench", name), journal, **kw)


# ---- (c) the real gateway's scan loop while its uplink drains ------------------------

def _gateway_drain(tmp: Path) -> list[Figure]:
    """The demo site's Gateway (simulated devices in their own process, as in the
    runtime bench) builds a 100,000-record backlog while its broker is away, then
    its uplink process drains it: how late do the scans start meanwhile?"""
    broker = Broker()                      # not started yet: the outage
    sim = SimProcess(tmp / "links")
    services = build(str(prepare(tmp, sim.port, broker.address, None)))
    gw, uplink = services.gateway, services.uplink
    assert uplink is not None and uplink.process is not None
    loop = threading.Thread(target=gw.run, daemon=True)
    loop.start()
    try:
        for _ in range(DRAIN_RECORDS):
            gw.journal.append(R.telemetry(gw.context(False)))
        gw.journal.flush()
        broker.start()
        while not uplink.connected:
            time.sleep(0.01)
        gw.lateness_ns.clear()
        late0, t0 = gw.timer.late_scans, time.perf_counter()
        last = gw.journal.durable_seq
        while uplink.cursor < last:
            time.sleep(0.05)
        drain_s = time.perf_counter() - t0
        uplink_rss_mb = rss_kb(uplink.process.pid) / 1024
        lateness = sorted(n / 1e6 for n in gw.lateness_ns)
        late = gw.timer.late_scans - late0
        gw.lateness_ns.clear()                 # the same gateway, its uplink idle: the yardstick
        time.sleep(IDLE_S)
        idle = sorted(n / 1e6 for n in gw.lateness_ns)
    finally:
        gw.stop_event.set()
        loop.join(5)
        services.stop("bench over")
        sim.stop()
        broker.cleanup()
    note = "{} scans of 100 ms while the uplink process drained {:,} records in {:.1f} s".format(
        len(lateness), last + 1, drain_s)
    return [
        Figure("gateway scan lateness while draining, p50", statistics.median(lateness), "ms", note=note),
        Figure("gateway scan lateness while draining, p99", _p99(lateness),
               "ms", "<= 1", "the runtime bench's target (journal at 1,000 rec/s)"),
        Figure("gateway scan lateness while draining, max", lateness[-1], "ms"),
        Figure("  ... the same gateway with its uplink idle, p99", _p99(idle), "ms",
               note="{} scans right after the drain".format(len(idle))),
        Figure("late scans (> 25 ms) while draining", late, "scans"),
        Figure("resident memory of the uplink process", uplink_rss_mb, "MB",
               note="besides the gateway's own (runtime bench)"),
    ]


# ---- (d) the real program's memory while its uplink process drains -------------------

def _process_drain(tmp: Path) -> list[Figure]:
    """`cabguard run` for real (the demo site, devices simulated), started with a
    100,000-record backlog in its journal and the broker away; then the broker
    comes.  The gateway's processes together (PSS from /proc/PID/smaps_rollup)
    and each (RSS) at their largest while the uplink process drains, and once
    it has drained.  A drain not done within 900 s is a MISSED figure with the CPU
    the (niced) uplink process got, not a drain time of 900 s."""
    broker = Broker()                      # not started yet: the outage
    sim = SimProcess(tmp / "links")
    proc: subprocess.Popen | None = None
    try:
        site = prepare(tmp, sim.port, broker.address, None)   # epoch 0 in state/, as flash.sh leaves it
        journal = Journal.open(tmp / "journal", "demo-01", tmp / "state" / EPOCH_KEY_FILE, None)
        start_ms = int(time.time() * 1000) - DRAIN_RECORDS * 1000
        for i in range(DRAIN_RECORDS):
            journal.append(R.telemetry(R.Context(start_ms + i * 1000, True, i * 1000, SNAPSHOT)))
        journal.close()
        last = journal.next_seq - 1
        with open(tmp / "gateway.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "run", "--config", str(site)],
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while len(gateway_pids(proc)) < 2:          # the gateway and its uplink process are up
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("cabguard run did not start its uplink: {}".format(
                    (tmp / "gateway.log").read_text()[-2000:]))
            time.sleep(0.1)
        broker.start()
        t0, peak = time.monotonic(), None
        while _acked(tmp / "journal") < last and time.monotonic() - t0 < 900:
            now = footprint(gateway_pids(proc))
            if now is not None and (peak is None or now.pss_kb > peak.pss_kb):
                peak = now
            time.sleep(0.25)
        drain_s = time.monotonic() - t0
        acked = _acked(tmp / "journal")
        # The uplink process runs at nice UPLINK_NICE: on a busy machine it gets
        # little CPU and the drain crawls (it is not lost: the cursor still moves).
        uplink_cpu_s = sum(cpu_seconds(pid) for pid in gateway_pids(proc)[1:])
        load = os.getloadavg()[0]
        time.sleep(IDLE_S)
        after = footprint(gateway_pids(proc))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        sim.stop()
        broker.cleanup()
    assert peak is not None and after is not None
    drained = "drained in {:.0f} s".format(drain_s) if acked >= last else \
        "NOT drained: acknowledged up to seq {:,} of {:,} in {:.0f} s".format(acked, last, drain_s)
    return [
        Figure("uplink backlog acknowledged by `cabguard run`", max(0, acked), "seq", ">= {}".format(last),
               "{}; its uplink process used {:.1f} CPU s at nice {} (load average {:.1f} on {} cores)".format(
                   drained, uplink_cpu_s, UPLINK_NICE, load, os.cpu_count())),
        Figure("gateway processes' PSS while the uplink drains 100,000 records, largest", peak.pss_kb / 1024, "MB",
               "<= 60", "RSS {} MB; `cabguard run` and its uplink process; {}".format(
                   " + ".join("{:.1f}".format(r / 1024) for r in peak.rss_kb), drained)),
        Figure("  ... {:.0f} s after the drain".format(IDLE_S), after.pss_kb / 1024, "MB", "<= 60",
               "RSS {} MB".format(" + ".join("{:.1f}".format(r / 1024) for r in after.rss_kb))),
    ]


def _acked(journal_dir: Path) -> int:
    try:
        return int(json.loads((journal_dir / "cursor").read_text())["acked"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def _p99(sorted_values: list[float]) -> float:
    return sorted_values[max(0, int(len(sorted_values) * 0.99) - 1)]


# ---- (a) 100,000 records --------------------------------------------------------------

def _drain(tmp: Path) -> list[Figure]:
    journal, _ = _backlog(tmp, "gw-drain", DRAIN_RECORDS)
    broker = Broker().start()
    try:
        rx = Receiver(tmp, broker)
        uplink = _uplink(broker, journal, "gw-drain", heartbeat_s=3600)
        last = journal.durable_seq
        t0 = time.perf_counter()
        uplink.start()
        while uplink.window.cursor < last:
            time.sleep(0.01)
        acked_s = time.perf_counter() - t0
        rx.wait_stored(last + 1)
        verified_s = time.perf_counter() - t0
        uplink.stop()
        report = rx.finish()
    finally:
        journal.close()
        broker.cleanup()
    stored = report["gateways"]["gw-drain"]["records"]
    return [
        Figure("drain 100k backlog, all acknowledged by broker", acked_s, "s", "<= 30",
               "{:,.0f} records/s".format(DRAIN_RECORDS / acked_s)),
        Figure("drain rate", DRAIN_RECORDS / acked_s, "rec/s"),
        Figure("  ... all verified and stored by collect", verified_s, "s",
               note="{} stored, {} chain breaks".format(stored, report["chain_breaks"])),
    ]


# ---- (b) a week offline ---------------------------------------------------------------

def _outage(tmp: Path) -> list[Figure]:
    t0 = time.perf_counter()
    journal, alarms = _backlog(tmp, "gw-week", OUTAGE_S)
    build_s = time.perf_counter() - t0
    broker = Broker().start()
    try:
        rx = Receiver(tmp, broker)
        broker.stop()                        # the outage (the receiver's session is saved)
        uplink = _uplink(broker, journal, "gw-week", heartbeat_s=3600, backoff=Backoff(0.2, 2.0))
        for seq in alarms:
            uplink.notify_urgent(seq)
        uplink.start()
        time.sleep(1.0)                      # a few refused attempts while the broker is down
        broker.start()
        t0 = time.perf_counter()
        while uplink.window.cursor < journal.durable_seq:
            time.sleep(0.05)
        acked_s = time.perf_counter() - t0
        uplink.stop()
        last = uplink.window.cursor
        rx.wait_stored(last + 1)
        verified_s = time.perf_counter() - t0
        report = rx.finish()
        arrival = rx.arrival("gw-week")
    finally:
        journal.close()
        broker.cleanup()
    g = report["gateways"]["gw-week"]
    expected = set(range(0, last + 1))
    lost = len(expected - set(arrival))
    # After de-duplication the receiver orders by seq; out of order = a broken chain or a hole.
    out_of_order = report["chain_breaks"] + len(g["gaps"])
    ahead = _ahead_of_order(arrival)
    days = OUTAGE_S / 86400
    label = "{:g} day{} at 1 rec/s".format(days, "" if days == 1 else "s")
    return [
        Figure("outage {} ({:,} records) built".format(label, OUTAGE_S), build_s, "s"),
        Figure("outage drained, all acknowledged by broker", acked_s, "s",
               note="{:,.0f} records/s".format(OUTAGE_S / acked_s)),
        Figure("outage drained, all verified by collect", verified_s, "s"),
        Figure("outage records lost at the receiver", lost, "rec", "<= 0"),
        Figure("outage out of order after de-duplication", out_of_order, "rec", "<= 0",
               "{} alarms sent ahead of older telemetry, restored by seq".format(ahead)),
    ]


def _ahead_of_order(arrival: list[int]) -> int:
    """How many records arrived before an older one did (the alarms sent first)."""
    count, oldest_after = 0, None
    for s in reversed(arrival):
        if oldest_after is not None and s > oldest_after:
            count += 1
        oldest_after = s if oldest_after is None else min(oldest_after, s)
    return count


# ---- (d) a fleet through one broker ---------------------------------------------------

class FleetGateway:
    """A virtual-time core (the cabinet catalog, a scripted night of arm/disarm and a
    flaky sensor module) whose events are journaled and sent by a real Uplink."""

    def __init__(self, tmp: Path, broker_port: int, name: str, rng: random.Random):
        catalog = Catalog(CABINET)
        self.catalog = catalog
        self.state = CoreState(catalog, CoreConfig({}, (catalog.index["io.door_open"],)))
        self.image = catalog.new_image()
        self.journal = Journal.open(tmp / name, name, tmp / name / "epoch.key",
                                    load_key(tmp / "keys" / (name + ".key")))
        self.now_ms = 0
        self.phase = rng.randrange(40)      # so the fleet does not move in lockstep
        settings = BrokerSettings("127.0.0.1", broker_port, client_id=name)
        self.uplink = Uplink(settings, Topics(PREFIX, "bench", name), self.journal, heartbeat_s=HEARTBEAT_S,
                             heartbeat=with_checkpoint(self.journal, self.heartbeat), backoff=Backoff(0.2, 5.0))

    def heartbeat(self) -> dict:
        return {"mode": self.state.mode, "devices_online": int(self.image[self.catalog.index["io.online"]])}

    def scan(self) -> None:
        """One 100 ms scan of virtual time; events become journal records."""
        scan = self.now_ms // SCAN_MS + self.phase
        cmds = [(ev.CMD_ARM, 0)] if scan % 40 == 0 else [(ev.CMD_DISARM, 0)] if scan % 40 == 20 else []
        if scan % 10 == 5:
            self.image[self.catalog.index["io.online"]] ^= 1
        _out, events = step(self.state, (self.image, cmds), self.now_ms)
        for event in events:
            ctx = R.Context(int(time.time() * 1000), True, self.now_ms, self.image)
            self.journal.append(R.from_event(event, ctx))
        self.now_ms += SCAN_MS


def _fleet_worker(tmp: Path, broker_port: int, names: list[str], go, results) -> None:
    """One process's share of the fleet (paho uses select(), so a process keeps well
    under 1,024 descriptors): connect, wait for ``go``, run, drain, report."""
    fleet = [FleetGateway(tmp, broker_port, name, random.Random(name)) for name in names]
    deadline = time.monotonic() + 60
    while not all(g.uplink.connected for g in fleet) and time.monotonic() < deadline:
        for g in fleet:
            g.uplink.service(0)
    results.put(("ready", sum(g.uplink.connected for g in fleet)))
    go.wait()
    cpu0 = time.process_time()
    t0 = next_round = time.perf_counter()
    while time.perf_counter() - t0 < FLEET_SECONDS:
        for g in fleet:
            g.scan()
            g.uplink.service(0)
        next_round += SCAN_MS / 1000
        time.sleep(max(0.0, next_round - time.perf_counter()))
    for g in fleet:
        g.journal.flush()
    while any(g.uplink.window.cursor < g.journal.durable_seq for g in fleet) and time.perf_counter() - t0 < 120:
        for g in fleet:
            g.uplink.service(0.001)
    results.put(("done", sum(g.uplink.window.cursor + 1 for g in fleet), time.process_time() - cpu0))
    for g in fleet:
        g.uplink.link.close()
        g.journal.close()


def _fleet(tmp: Path, n: int) -> list[Figure]:
    names = ["gw-{:04d}".format(i) for i in range(n)]
    for name in names:
        (tmp / "keys").mkdir(exist_ok=True)
        write_key(tmp / "keys" / (name + ".key"), generate(role_kid(name, "record")))
    broker = Broker().start()
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    shares = [names[i:i + PER_PROCESS] for i in range(0, n, PER_PROCESS)]
    try:
        rx = Receiver(tmp, broker)
        workers = [ctx.Process(target=_fleet_worker, args=(tmp, broker.port, share, go, results)) for share in shares]
        for w in workers:
            w.start()
        connected = sum(results.get(timeout=300)[1] for _ in workers)
        cpu0 = (cpu_seconds(broker.proc.pid), rx.cpu_s())
        t0 = time.perf_counter()
        go.set()
        done = [results.get(timeout=300) for _ in workers]
        total = sum(d[1] for d in done)
        rx.wait_stored(total, 60)
        wall = time.perf_counter() - t0
        cpu1 = (cpu_seconds(broker.proc.pid), rx.cpu_s())
        heartbeats = rx.count("SELECT COUNT(*) FROM heartbeats WHERE gateway != 'probe'")
        report = rx.finish()
        for w in workers:
            w.join()
    finally:
        broker.cleanup()
    stored = report["stored"]
    return [
        Figure("fleet N={}: records/s verified at collect".format(n), stored / wall, "rec/s",
               note="{} of {} records and {} heartbeats from {} connected gateways in {:.1f} s".format(
                   stored, total, heartbeats, connected, wall)),
        Figure("fleet N={}: broker CPU".format(n), 100 * (cpu1[0] - cpu0[0]) / wall, "%", note="of one core"),
        Figure("fleet N={}: receiver CPU".format(n), 100 * (cpu1[1] - cpu0[1]) / wall, "%", note="of one core"),
        Figure("fleet N={}: gateways' CPU".format(n), 100 * sum(d[2] for d in done) / wall, "%",
               note="{} process(es) of cores, journals, uplinks".format(len(workers))),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    for part in (_drain, _gateway_drain, _process_drain, _outage):
        with tempfile.TemporaryDirectory(prefix="cabguard-bench-uplink-") as tmp:
            figures += part(Path(tmp))
    for n in FLEET_SIZES:
        with tempfile.TemporaryDirectory(prefix="cabguard-bench-fleet-") as tmp:
            figures += _fleet(Path(tmp), n)
    return figures
