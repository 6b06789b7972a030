"""Gateway figures: scan jitter and CPU under journal load, door-to-siren latency,
resident memory, start to armed-and-scanning, a clean SIGTERM, and a pulled port
(the simulator killed under an armed gateway, then started again).

The simulated devices (1 I/O module, 2 BMS, a relay module on one bus) run
in their own process (`cabguard sim`), as real devices are not in the
gateway's process either.  Part A runs `cabguard run` as a real process
with a real sd_notify socket; part B runs the gateway in this process so a
hook can time the siren output, while a thread appends 1,000 records/s to
its journal.  Part D times door to siren again against `cabguard sim --wire
off`: the gateway's own path, apart from the bus's timing.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from controller.core import modes
from controller.core.events import CMD_ACK, CMD_ARM
from controller.core.outputs import OUT_SIREN
from controller.devtools.bench import Figure
from controller.devtools.fleetsim import cpu_seconds
from controller.gateway.loop import Gateway
from controller.gateway.run import build
from controller.journal import records as R
from drivers.modbus.budget import device_load
from drivers.modbus.profiles import load_profile
from simulator.benchsite import SIM_CONFIG
from simulator.broker import Broker
from simulator.demo import prepare
from simulator.soak import gateway_pids
from simulator.slave import DEFAULT_TURNAROUND_MS

JITTER_S = 40
IDLE_S = 30             # the idle CPU figures' measuring span, after IDLE_SETTLE_S
IDLE_SETTLE_S = 8
BARE_WAKE_HZ = 33       # about the bus thread's wake-ups a second on the demo bus
LATENCY_TRIALS = 25
JOURNAL_RATE = 1000
PERIOD_MS = 100         # the demo site's scan period and the I/O module's poll period
WIRE_BAUD = 19200       # the demo's bus (simulator/configs/demo.toml), the simulator's wire on


def io_transaction_ms() -> float:
    """One poll of the I/O module on the demo's wire: its reads' wire time and t3.5 gaps
    (drivers/modbus/budget.py) and the simulator's slowest turnaround per read."""
    return 1000 * device_load("io", load_profile("io-dvt"), PERIOD_MS, WIRE_BAUD, 0.2, DEFAULT_TURNAROUND_MS[1]).poll_s


class SimProcess:
    """`cabguard sim` in its own process; ``set()`` sends it a command line.  ``wire``
    False: its fast mode (docs/simulator.md), answers at once, no baud pacing."""

    def __init__(self, link_dir: Path, wire: bool = True):
        self.proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "sim", "--config", str(SIM_CONFIG),
                                      "--link", str(link_dir), "--commands", "--wire", "on" if wire else "off"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("serving"):
                break
        self.port = str(link_dir / "rs485-1")

    def set(self, device: str, **values: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("set {} {}\n".format(device, " ".join("{}={}".format(k, v) for k, v in values.items())))
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def pull(self) -> None:
        """The adapter pulled: the process and its ptys gone at once."""
        self.proc.kill()
        self.proc.wait(10)


def _armed_site(work: Path, port: str) -> Path:
    site = prepare(work, port, None, None)
    text = site.read_text().replace("exit_delay_s = 3", "exit_delay_s = 0")
    site.write_text(text)
    (work / "state").mkdir(parents=True, exist_ok=True)
    (work / "state" / "core-state.json").write_text('{"mode": 2, "resume": 0, "lock": 0}')
    return site


def rss_kb(pid: int) -> int:
    for line in Path("/proc/{}/status".format(pid)).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_figures(work: Path, port: str) -> list[Figure]:
    """A: `cabguard run` for real: start to READY (armed, scanning), RSS, SIGTERM."""
    site = _armed_site(work, port)
    notify = work / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="2000000")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "run", "--config", str(site)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = ""
    while "READY=1" not in ready:
        ready = sock.recv(4096).decode()
    start_s = time.monotonic() - t0
    watchdogs = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            watchdogs += "WATCHDOG=1" in sock.recv(4096).decode()
        except socket.timeout:
            break
    rss_mb = rss_kb(proc.pid) / 1024
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    sock.close()
    return [
        Figure("start to armed-and-scanning (READY=1)", start_s, "s", "<= 3",
               "process start to sd_notify READY; status '{}'".format(ready.split("STATUS=")[-1].strip())),
        Figure("watchdog pings in 5 s (WatchdogSec=2)", watchdogs, "pings", ">= 4"),
        Figure("resident memory of `cabguard run`", rss_mb, "MB", "<= 60"),
    ]


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of ``pid``, by thread id: the scheduler's own
    nanoseconds (schedstat's first field), not clock ticks (10 ms each: 0.033 % of a core
    over IDLE_S, a third of the figure's headroom)."""
    out = {}
    for tid in os.listdir("/proc/{}/task".format(pid)):
        try:
            ran_ns = Path("/proc/{}/task/{}/schedstat".format(pid, tid)).read_text().split()[0]
        except OSError:
            continue    # a thread that ended meanwhile
        out[int(tid)] = int(ran_ns) / 1e9
    return out


def _thread_wakes(pid: int) -> dict[int, int]:
    """How many times each thread of ``pid`` went to sleep so far (voluntary context
    switches): its wake-ups, a figure the host's load does not change, as it does CPU."""
    out = {}
    for tid in os.listdir("/proc/{}/task".format(pid)):
        try:
            status = Path("/proc/{}/task/{}/status".format(pid, tid)).read_text()
        except OSError:
            continue    # a thread that ended meanwhile
        out[int(tid)] = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    return out


def _process_cpu(before: dict[int, float], after: dict[int, float], ticks_s: float) -> tuple[float, bool]:
    """A process's CPU seconds between two ``_thread_cpu`` readings, and whether they are the
    threads' nanoseconds: if a thread ended meanwhile its time is gone from the second, so
    the process's clock ticks (``ticks_s``, which keep a dead thread's time) count instead."""
    if any(tid not in after for tid in before):
        return ticks_s, False
    return sum(cpu - before.get(tid, 0.0) for tid, cpu in after.items()), True


def idle_figures(work: Path, port: str) -> list[Figure]:
    """`cabguard run` for real on the demo site, disarmed, a quiet bus (1 I/O module every
    100 ms, 2 BMS, relay), its uplink process connected to a local Mosquitto with the
    example site's heartbeat (every 30 s; the demo's is 5 s): the CPU of
    all the gateway's processes (issue 15), and of each thread (the least load-sensitive
    figure: a loaded host makes every wake-up dearer)."""
    broker = Broker().start()
    proc: subprocess.Popen | None = None
    try:
        site = prepare(work, port, broker.address, None, heartbeat_s=None)
        (work / "state").mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "run", "--config", str(site)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(IDLE_SETTLE_S)
        pids = gateway_pids(proc)
        wakes0 = _thread_wakes(proc.pid)
        ticks0, threads0, t0 = [cpu_seconds(p) for p in pids], [_thread_cpu(p) for p in pids], time.monotonic()
        time.sleep(IDLE_S)
        ticks1, threads1, t1 = [cpu_seconds(p) for p in pids], [_thread_cpu(p) for p in pids], time.monotonic()
        wakes1 = _thread_wakes(proc.pid)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        broker.cleanup()
    wall = t1 - t0
    measured = [_process_cpu(a, b, y - x) for a, b, x, y in zip(threads0, threads1, ticks0, ticks1)]
    each = [100 * cpu / wall for cpu, _ns in measured]
    # Threads named by start order, #1 the scan loop (a Python thread has no name the OS
    # shows, and tids change from run to run); on the demo site the bus thread is #3.
    order = {tid: k for k, tid in enumerate(sorted(threads1[0]), 1)}
    shares = sorted(((100 * (c - threads0[0].get(tid, 0.0)) / wall, tid) for tid, c in threads1[0].items()),
                    reverse=True)
    busiest = ", ".join("{} {:.3f} % ({:.1f} wake-ups/s)".format(
        "scan loop" if tid == proc.pid else "thread #{}".format(order[tid]), pct,
        (wakes1.get(tid, 0) - wakes0.get(tid, 0)) / wall) for pct, tid in shares[:4] if pct > 0)
    wakes = sum(wakes1.get(tid, 0) - n for tid, n in wakes0.items()) / wall
    bare_us, bare_late_ms = _bare_thread()
    return [Figure("idle CPU of `cabguard run`'s processes (quiet)", sum(each), "%", "<= 1.0",
                   "of one core over {:.0f} s ({}), disarmed, broker up: gateway {:.3f} % (threads: {}), uplink "
                   "process {}".format(wall, "scheduler ns" if all(ns for _c, ns in measured) else "clock ticks",
                                       each[0], busiest or "none",
                                       " + ".join("{:.3f} %".format(c) for c in each[1:]) or "not started")),
            Figure("idle wake-ups of `cabguard run`, all threads", wakes, "/s",
                   note="the scan loop 10, the bus thread 3 per I/O module poll (its request, the answer's "
                        "first bytes, its end) and 2-3 per other read"),
            Figure("CPU of one wake-up of a bare Python thread on this machine", bare_us, "us",
                   note="a thread sleeping to deadlines {} times a second; the idle figure's floor is the "
                        "wake-ups above times this: {:.2f} %".format(BARE_WAKE_HZ, wakes * bare_us / 1e4)),
            Figure("lateness p99 of the same bare thread's wake-ups", bare_late_ms, "ms",
                   note="a floor under the scan lateness figures below: a thread with nothing else to do")]


def _bare_thread(seconds: float = 5.0) -> tuple[float, float]:
    """What this machine gives a Python thread that only sleeps to deadlines,
    ``BARE_WAKE_HZ`` times a second: the scheduler's microseconds per wake-up, and the
    p99 of how late it wakes (ms).  Most of the idle figure is such wake-ups, and the
    scan loop's lateness cannot beat this one's; a VM charges several times what bare
    metal does for both."""
    spent: list[float] = []
    late_ms: list[float] = []

    def sleeper() -> None:
        pid, tid = os.getpid(), threading.get_native_id()
        wakes = int(seconds * BARE_WAKE_HZ)
        ran0, deadline = _thread_cpu(pid)[tid], time.monotonic()
        for _ in range(wakes):
            deadline += 1 / BARE_WAKE_HZ
            time.sleep(max(0.0, deadline - time.monotonic()))
            late_ms.append(1000 * (time.monotonic() - deadline))
        spent.append((_thread_cpu(pid)[tid] - ran0) * 1e6 / wakes)

    thread = threading.Thread(target=sleeper)
    thread.start()
    thread.join()
    return spent[0], _percentile(late_ms, 0.99)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def _gateway_in_process(work: Path, sim: SimProcess) -> Iterator[tuple[Gateway, list[float]]]:
    """The armed demo site's gateway running in this process against ``sim``, its devices
    online; yields it and the list the siren's first scan time (monotonic) goes into."""
    siren_at: list[float] = []

    def on_scan(gw: Gateway) -> None:
        if gw.state.outputs[OUT_SIREN] and not siren_at:
            siren_at.append(time.monotonic())

    services = build(str(_armed_site(work, sim.port)), on_scan=on_scan)
    gw = services.gateway
    loop = threading.Thread(target=gw.run, daemon=True)
    loop.start()
    try:
        time.sleep(2.0)   # devices online, first polls done
        yield gw, siren_at
    finally:
        gw.stop_event.set()
        loop.join(5)
        services.stop("bench over")


def loop_figures(work: Path, sim: SimProcess) -> list[Figure]:
    """B: the gateway in this process: jitter and CPU under journal load, door-to-siren latency."""
    with _gateway_in_process(work, sim) as (gw, siren_at):
        stop_load = threading.Event()

        def journal_load() -> None:
            period = 1.0 / JOURNAL_RATE
            next_t = time.monotonic()
            while not stop_load.is_set():
                gw.journal.append(R.telemetry(gw.context(False)))
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        load = threading.Thread(target=journal_load, daemon=True)
        load.start()
        try:
            gw.lateness_ns.clear()
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            time.sleep(JITTER_S)
            cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            lateness_ms = [n / 1e6 for n in gw.lateness_ns]
            cpu_pct = 100 * ((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)) / (wall1 - wall0)
            latencies = _door_to_siren(gw, sim, siren_at)
        finally:
            stop_load.set()
    io_ms = io_transaction_ms()
    budget = PERIOD_MS + io_ms + 5
    figures = [
        Figure("scan lateness p50 (100 ms period, journal 1,000 rec/s)", statistics.median(lateness_ms), "ms"),
        Figure("scan lateness p99", _percentile(lateness_ms, 0.99), "ms", "<= 1"),
        Figure("scan lateness max", max(lateness_ms), "ms", note="{} scans".format(len(lateness_ms))),
        Figure("CPU of the gateway process (incl. the load thread)", cpu_pct, "%"),
        Figure("late scans during the run", gw.timer.late_scans, "scans"),
    ]
    if latencies:
        figures += [
            Figure("door flip to siren output @{} wire on, mean".format(WIRE_BAUD), statistics.mean(latencies),
                   "ms"),
            Figure("door flip to siren output, p50", statistics.median(latencies), "ms"),
            Figure("door flip to siren output, p99", _percentile(latencies, 0.99), "ms", "<= {:.0f}".format(budget),
                   "budget: {} ms period + 1 I/O poll ({:.0f} ms: wire, gaps, slowest turnarounds) + 5 ms".format(
                       PERIOD_MS, io_ms)),
            Figure("door flip to siren output, max of {} trials".format(len(latencies)), max(latencies), "ms"),
        ]
    return figures


def fast_bus_door_figures(work: Path) -> list[Figure]:
    """D: door-to-siren with the simulator's wire off (answers at once, docs/simulator.md):
    the gateway's own path without the bus's timing, as the figure was measured before
    the simulator had a wire, against that budget (one period + 6 ms)."""
    sim = SimProcess(work / "links", wire=False)
    try:
        with _gateway_in_process(work / "gw", sim) as (gw, siren_at):
            latencies = _door_to_siren(gw, sim, siren_at)
    finally:
        sim.stop()
    if not latencies:
        return []
    return [
        Figure("door flip to siren output, bus without a wire, p50", statistics.median(latencies), "ms"),
        Figure("door flip to siren output, bus without a wire, max of {} trials".format(len(latencies)),
               max(latencies), "ms", "<= {}".format(PERIOD_MS + 6),
               "budget: {} ms period + 1 ms read + 5 ms: the gateway's own work".format(PERIOD_MS)),
    ]


def _door_to_siren(gw, sim: SimProcess, siren_at: list[float]) -> list[float]:
    """Force the door again and again; time the simulator command to the siren output."""
    latencies = []
    rng = random.Random(1)
    for _ in range(LATENCY_TRIALS):
        siren_at.clear()
        t0 = time.monotonic()
        sim.set("io", door_open=1)
        deadline = t0 + 2.0
        while not siren_at and time.monotonic() < deadline:
            time.sleep(0.001)
        if siren_at:
            latencies.append((siren_at[0] - t0) * 1000)
        gw.submit(CMD_ACK, 0, "bench", "bench").outcome.result(2)
        sim.set("io", door_open=0)
        time.sleep(0.3)
        gw.submit(CMD_ARM, 0, "bench", "bench").outcome.result(2)
        deadline = time.monotonic() + 2
        while gw.state.mode != modes.ARMED and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2 + rng.random() * 0.1)  # a random phase against the scan and the poll
    return latencies


def _since(t0: float, predicate, timeout_s: float = 10) -> float | None:
    """Seconds from ``t0`` until ``predicate()`` holds, None if it did not within ``timeout_s``."""
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


def pulled_port_figures(work: Path) -> list[Figure]:
    """C: `cabguard sim` killed under the armed gateway (the adapter pulled), then back."""
    links = work / "links"
    sim = SimProcess(links)
    services = build(str(_armed_site(work, sim.port)))
    gw = services.gateway
    online = [gw.catalog.index[d + ".online"] for d in gw.catalog.devices]
    loop = threading.Thread(target=gw.run, daemon=True)
    loop.start()
    try:
        _since(time.monotonic(), lambda: all(gw.image[i] for i in online) and gw.state.mode == modes.ARMED)
        sim.pull()
        pulled = time.monotonic()
        lost_s = _since(pulled, lambda: any("port_lost" in line for line in gw.recent))
        offline_s = _since(pulled, lambda: not gw.image[gw.catalog.index["io.online"]])
        alarm_s = _since(pulled, lambda: "sensor_silent.io" in gw.active_rules)
        sim = SimProcess(links)   # plugged back in: the port exists again from here
        back_s = _since(time.monotonic(), lambda: all(gw.image[i] for i in online))
    finally:
        gw.stop_event.set()
        loop.join(5)
        services.stop("bench over")
        sim.stop()
    missing = -1.0   # shown when the event never came within 10 s
    period_s = PERIOD_MS / 1000
    return [
        Figure("port pulled while armed -> port_lost alarm", lost_s / period_s if lost_s else missing,
               "periods", "<= 3", "a health alarm, uplinked at once"),
        Figure("port pulled while armed -> io offline", offline_s / period_s if offline_s else missing,
               "periods", "<= 3", "io polled every {} ms".format(PERIOD_MS)),
        Figure("port pulled while armed -> tamper rule alarm", alarm_s / period_s if alarm_s else missing,
               "periods", "<= 3", "sensor_silent: at once when the port is gone (comm_exc 256)"),
        Figure("port back -> all devices online", back_s if back_s else missing, "s", "<= 2",
               "from `cabguard sim` serving again"),
    ]


def run() -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="cabguard-bench-runtime-"))
    sim = SimProcess(work / "links")
    try:
        figures = process_figures(work / "a", sim.port)
        figures += idle_figures(work / "idle", sim.port)
        figures += loop_figures(work / "b", sim)
    finally:
        sim.stop()
    figures += fast_bus_door_figures(work / "d")
    try:
        figures += pulled_port_figures(work / "c")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures
