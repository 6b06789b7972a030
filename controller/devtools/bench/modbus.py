"""Modbus figures: transaction overhead over a pty, a poll cycle against wire time,
silent-device detection, a slow device's first contact, and fuzzed answers.

The simulated slaves run in a child process (as they would on a real bus, the
slave is not competing for the master's interpreter lock).
"""

from __future__ import annotations

import multiprocessing
import statistics
import time

from controller.devtools.bench import Figure
from drivers.errors import ModbusError
from drivers.modbus import frames
from drivers.modbus.budget import read_seconds
from drivers.modbus.events import OFFLINE
from drivers.modbus.master import RtuMaster
from drivers.modbus.poller import BusOptions, BusPoller, PolledDevice

BAUD = 115200           # the software overhead figures, wire off
WIRE_BAUD = 19200       # the other figures, on the simulator's wire
TURNAROUND_MS = 10      # the poll-cycle figure's slaves
TRANSACTIONS = 3000
FUZZ_PURE = 100_000
FUZZ_PTY = 2000
DEVICES = (("io", "io-dvt", 1, {"door_bolt": 1}), ("bms1", "bms16-vendor", 2, {"serial": 1002}),
           ("bms2", "sunspec-battery", 3, {"serial": 1003}))


def _serve(conn, wire: bool, baud: int) -> None:
    from simulator.bus import SimBus, Simulator
    from simulator.slave import SimDevice

    devices = [SimDevice(name, profile, addr, values, turnaround_ms=TURNAROUND_MS)
               for name, profile, addr, values in DEVICES]
    with Simulator([SimBus("bench", devices, baud, wire)]) as sim:
        conn.send(sim.bus("bench").port)
        while True:
            command = conn.recv()
            if command is None:
                return
            sim.device(command[0]).set_fault(command[1])
            conn.send("ok")


class _SimProcess:
    def __init__(self, wire: bool = True, baud: int = WIRE_BAUD) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, wire, baud), daemon=True)
        self.proc.start()
        self.port = self.conn.recv()

    def fault(self, device: str, kind: str | None) -> None:
        self.conn.send((device, kind))
        self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)


def _overhead(port: str) -> tuple[float, float]:
    master = RtuMaster(port, BAUD)
    times = []
    try:
        for _ in range(TRANSACTIONS):
            master.wait_quiet()
            t0 = time.perf_counter()
            master.read_registers(2, frames.READ_INPUT, 0, 30, 0.1)
            times.append(time.perf_counter() - t0)
    finally:
        master.close()
    return statistics.median(times) * 1000, sorted(times)[int(0.95 * len(times))] * 1000


def _minimalmodbus(port: str) -> float:
    """The same read through minimalmodbus (a dev extra: NaN where it is not installed)."""
    try:
        import minimalmodbus
    except ImportError:
        return float("nan")

    inst = minimalmodbus.Instrument(port, 2)
    inst.serial.baudrate = BAUD
    times = []
    try:
        for _ in range(TRANSACTIONS // 3):
            t0 = time.perf_counter()
            inst.read_registers(0, 30, functioncode=4)
            times.append(time.perf_counter() - t0)
    finally:
        inst.serial.close()
    return statistics.median(times) * 1000


def _read_limit(function: int, count: int) -> float:
    """A read's wire time (drivers/modbus/budget.py) plus the slave's turnaround."""
    return read_seconds(function, count, WIRE_BAUD) + TURNAROUND_MS / 1000


def _poll_cycle() -> tuple[float, float, int, int]:
    """Median cycle of the good ones, the limit, reads per cycle, cycles with a failed read
    (a timeout when the loaded host stalls longer than the learned margin)."""
    sim = _SimProcess()
    poller = BusPoller(sim.port, [PolledDevice(n, p, a, 1000) for n, p, a, _v in DEVICES],
                       BusOptions(baud=WIRE_BAUD))
    try:
        poller.poll_cycle()  # SunSpec discovery happens in the first cycle
        cycles, failed = [], 0
        for _ in range(40):
            t0 = time.perf_counter()
            ok = poller.poll_cycle()
            if all(ok):
                cycles.append(time.perf_counter() - t0)
            else:
                failed += 1
        reads = [(frames.READ_FUNCTION[b.table], b.count) for m in poller.register_maps().values() if m for b in m.blocks]
        limit = sum(_read_limit(f, n) for f, n in reads)
        return statistics.median(cycles) * 1000, limit * 1000, len(reads), failed
    finally:
        poller.stop()
        sim.close()


def _silent_detection(trials: int = 5) -> float:
    sim = _SimProcess()
    period = 0.1
    poller = BusPoller(sim.port, [PolledDevice("io", "io-dvt", 1, int(period * 1000)),
                                  PolledDevice("bms1", "bms16-vendor", 2, 1000)], BusOptions(baud=WIRE_BAUD)).start()
    worst = 0.0
    try:
        for _ in range(trials):
            while not poller.snapshot()["io.online"]:
                time.sleep(0.01)
            poller.events()
            sim.fault("io", "silence")
            t0 = time.monotonic()
            while not any(e.kind == OFFLINE for e in poller.events()):
                time.sleep(0.002)
            worst = max(worst, (time.monotonic() - t0) / period)
            sim.fault("io", None)
    finally:
        poller.stop()
        sim.close()
    return worst


def _slow_first_contact(turnaround_ms: float = 40, baud: int = 19200, period_ms: int = 200) -> float:
    """Poll periods from a poller's start to a slow BMS online (on the simulator's wire)."""
    from simulator.bus import SimBus, Simulator
    from simulator.slave import SimDevice

    bms = SimDevice("bms1", "bms16-vendor", 2, {"serial": 1002}, turnaround_ms=turnaround_ms)
    with Simulator([SimBus("slow", [bms], baud)]) as sim:
        poller = BusPoller(sim.bus("slow").port,
                           [PolledDevice("bms1", "bms16-vendor", 2, period_ms)], BusOptions(baud=baud))
        t0 = time.monotonic()
        poller.start()
        try:
            while not poller.snapshot()["bms1.online"] and time.monotonic() - t0 < 10:
                time.sleep(0.002)
            return (time.monotonic() - t0) / (period_ms / 1000)
        finally:
            poller.stop()


REQUEST = frames.read_request(7, frames.READ_HOLDING, 0, 3)
GOOD = frames.read_answer(7, frames.READ_HOLDING, [1, 2, 3])


def fuzz_answers():
    """Hypothesis answers to REQUEST: random, truncated, wrong CRC, address or function,
    exceptions, and the good one (shared with tests/test_modbus_bus.py)."""
    from hypothesis import strategies as st

    return st.one_of(
        st.binary(max_size=40),
        st.integers(1, len(GOOD) - 1).map(lambda n: GOOD[:n]),
        st.binary(min_size=2, max_size=2).map(lambda c: GOOD[:-2] + c),
        st.integers(0, 255).map(lambda a: frames.with_crc(bytes((a,)) + GOOD[1:-2])),
        st.integers(0, 255).map(lambda f: frames.with_crc(bytes((7, f)) + GOOD[2:-2])),
        st.integers(0, 255).map(lambda c: frames.exception_answer(7, 3, c)),
        st.just(GOOD),
    )


def _fuzz(batches: int, batch: int, check) -> int:
    """Feed ``batches`` hypothesis lists of ``batch`` answers to ``check``; returns the count."""
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    seen = [0]

    @settings(max_examples=batches, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(fuzz_answers(), min_size=batch, max_size=batch))
    def run(answers: list[bytes]) -> None:
        seen[0] += len(answers)
        check(answers)

    run()
    return seen[0]


def _fuzz_pure() -> tuple[int, float]:
    def check(answers: list[bytes]) -> None:
        for answer in answers:
            try:
                frames.check_reply(REQUEST, answer)
            except ModbusError:
                pass

    t0 = time.perf_counter()
    return _fuzz(FUZZ_PURE // 100, 100, check), time.perf_counter() - t0


def _fuzz_pty(timeout: float = 0.003) -> tuple[int, float]:
    """Fuzzed answers through the master over a pty; the longest transaction in ms."""
    from simulator.bus import ScriptedSlave

    slave = ScriptedSlave()
    master = RtuMaster(slave.port, BAUD)
    longest = [0.0]

    def check(answers: list[bytes]) -> None:
        slave.script(answers)
        for _ in answers:
            master.wait_quiet()
            t0 = time.perf_counter()
            try:
                master.read_registers(7, frames.READ_HOLDING, 0, 3, timeout)
            except ModbusError:
                pass
            longest[0] = max(longest[0], time.perf_counter() - t0)

    try:
        n = _fuzz(FUZZ_PTY // 50, 50, check)
    finally:
        master.close()
        slave.close()
    return n, longest[0] * 1000


def run() -> list[Figure]:
    sim = _SimProcess(wire=False, baud=BAUD)  # fast mode: the master's own work per transaction
    try:
        median_ms, p95_ms = _overhead(sim.port)
        mm_ms = _minimalmodbus(sim.port)
    finally:
        sim.close()
    cycle_ms, limit_ms, reads, failed = _poll_cycle()
    periods = _silent_detection()
    first_contact = _slow_first_contact()
    fuzz_n, fuzz_s = _fuzz_pure()
    pty_n, longest_ms = _fuzz_pty()
    return [
        Figure("RTU transaction over a pty, median", median_ms, "ms", "<= 0.5",
               "read 30 registers, t3.5 gap excluded; p95 {:.3f} ms".format(p95_ms)),
        Figure("minimalmodbus, same read, median", mm_ms, "ms", note="for comparison; includes its own t3.5 wait (1.75 ms)"),
        Figure("poll cycle 1 io + 2 BMS @{} with {} ms turnarounds ({} reads)".format(
            WIRE_BAUD, TURNAROUND_MS, reads), cycle_ms, "ms", "<= {:.2f}".format(limit_ms * 1.10),
               "simulator's wire on; wire limit {:.2f} ms; target limit + 10%; {} of 40 cycles had a "
               "failed read".format(limit_ms, failed)),
        Figure("silent device detected after (worst of 5)", periods, "periods", "<= 3", "io, 100 ms period"),
        Figure("40 ms turnaround @19200: first contact -> online", first_contact, "periods", "<= 2",
               "bms16-vendor polled every 200 ms; online after 2 good polls"),
        Figure("fuzzed answers without crash or stall", fuzz_n, "answers", ">= 100000",
               "hypothesis, frame check, {:.1f} s".format(fuzz_s)),
        Figure("fuzzed answers over a pty through the master", pty_n, "answers",
               note="every one ended in a value or a ModbusError"),
        Figure("longest fuzzed transaction (timeout 3 ms)", longest_ms, "ms", "<= 20",
               "no stall: timeout + request wire time + the host's scheduling jitter"),
    ]
