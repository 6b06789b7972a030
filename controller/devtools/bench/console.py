"""Console figures: command round trip over a pty, the scan loop's jitter
with and without a console session streaming the live signals view, and
the records an anonymous flood makes (1 MB of random bytes on the console,
10,000 junk messages on the command topic) now that floods are summarised.

A real gateway (``controller.gateway.run.build``) polls simulated devices served from
a child process (as on a real bus, the slaves do not share our interpreter
lock); its console is on a pty, and the technician's side opens the linked
pty as picocom would.
"""

from __future__ import annotations

import os
import random
import select
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from controller.console.auth import PeopleStore, code_at
from controller.devtools.bench import Figure
from controller.devtools.bench.modbus import BAUD, DEVICES, _SimProcess

SCAN_MS = 50
ROUND_TRIPS = 200
JITTER_S = 12.0
JUNK_BYTES = 1 << 20
JUNK_COMMANDS = 10_000
PROMPT = b")> "

SITE = """
[gateway]
id = "gw-bench"
site = "bench"
timezone = "UTC"
scan_period_ms = {scan_ms}
state_dir = "{d}/state"

[[bus]]
name = "rs485"
port = "{port}"

{devices}

[outputs]
siren = {{ gpio = 17 }}
strobe = {{ gpio = 27 }}
led = {{ gpio = 22 }}
lock = {{ gpio = 23 }}

[gpio]
pin_factory = "mock"

[keys]
record = "{d}/gateway/record.key"    # none there: as flash.sh leaves a gateway, epoch 0 is in state/

[journal]
dir = "{d}/journal"

[console]
port = "pty:{d}/console"
people = "{d}/people.toml"
"""


class _Terminal:
    """The technician's end of the console pty."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.seen = b""

    def until(self, text: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("console did not answer {!r}: {!r}".format(text, self.seen[-200:]))
            if select.select([self.fd], [], [], left)[0]:
                self.seen += os.read(self.fd, 65536)
        self.seen = self.seen[self.seen.index(text) + len(text):]

    def round_trip(self, line: bytes, answer: bytes, think_s: float = 0.0) -> float:
        """Seconds from typing the line to the prompt after its answer (after ``think_s``
        without a key, so that typing is not in step with the scans)."""
        time.sleep(think_s)
        t0 = time.perf_counter()
        os.write(self.fd, line + b"\r")
        self.until(answer)
        self.until(PROMPT)
        return time.perf_counter() - t0

    def close(self) -> None:
        os.close(self.fd)


def _site(d: Path, port: str) -> Path:
    devices = "\n".join('[[device]]\nname = "{}"\nbus = "rs485"\nprofile = "{}"\naddress = {}\npoll_ms = {}\n'.format(
        name, profile, address, SCAN_MS if name == "io" else 1000) for name, profile, address, _v in DEVICES)
    path = d / "site.toml"
    path.write_text(SITE.format(d=d, port=port, scan_ms=SCAN_MS, devices=devices))
    return path


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _lateness(gw, seconds: float) -> list[float]:
    """The loop's own lateness samples (seconds) over the next ``seconds``."""
    start = len(gw.lateness_ns)
    time.sleep(seconds)
    return [ns / 1e9 for ns in list(gw.lateness_ns)[start:]]


def _lateness_beside(gw, work: Callable[[threading.Event], None]) -> list[float]:
    """Lateness while ``work`` runs in a thread of its own until told to stop."""
    stop = threading.Event()
    worker = threading.Thread(target=work, args=(stop,), daemon=True)
    worker.start()
    try:
        return _lateness(gw, JITTER_S)
    finally:
        stop.set()
        worker.join()


def _live_view(term: _Terminal, gw) -> list[float]:
    """Lateness while the terminal streams `signals` (and a reader keeps up with it)."""
    def read(stop: threading.Event) -> None:
        while not stop.is_set():
            if select.select([term.fd], [], [], 0.1)[0]:
                os.read(term.fd, 65536)

    os.write(term.fd, b"signals\r")
    term.until(b"--- ")      # the view is streaming
    try:
        return _lateness_beside(gw, read)
    finally:
        os.write(term.fd, b"\r")


def _flood(term: _Terminal, gw) -> list[float]:
    """Lateness while the terminal types `status` as fast as the console answers."""
    def pump(stop: threading.Event) -> None:
        while not stop.is_set():
            readable, writable, _ = select.select([term.fd], [term.fd], [], 0.1)
            if readable:
                os.read(term.fd, 65536)
            if writable:
                os.write(term.fd, b"status\r" * 16)

    return _lateness_beside(gw, pump)


def _journaled_since(gw, seq: int) -> int:
    """Records written from ``seq`` on, once the floodgate has summarised what it held."""
    gw.health.floods(final=True)
    gw.journal.flush(10)
    return gw.journal.next_seq - seq


def type_draining(fd: int, data: bytes) -> None:
    """Type ``data`` into a terminal's fd as fast as it goes, reading the echo
    away meanwhile (or both ends block on full pty buffers)."""
    sent = 0
    while sent < len(data):
        readable, writable, _ = select.select([fd], [fd], [], 1.0)
        if readable:
            os.read(fd, 65536)
        if writable:
            sent += os.write(fd, data[sent:sent + 4096])


def _console_junk(term: _Terminal, gw) -> tuple[int, float]:
    """Records made by 1 MB of random bytes typed anonymously, and the seconds it took."""
    junk = random.Random(3).randbytes(JUNK_BYTES)
    first = gw.journal.next_seq
    cooked = termios.tcgetattr(term.fd)
    tty.setraw(term.fd)   # as picocom does: an echoed ^S would otherwise stop our side
    try:
        t0 = time.perf_counter()
        type_draining(term.fd, junk)
        os.write(term.fd, b"\x03\rversion\r")
        term.until(b"rules: ", timeout=120)
        term.until(PROMPT)
        elapsed = time.perf_counter() - t0
    finally:
        termios.tcsetattr(term.fd, termios.TCSANOW, cooked)   # the other figures as before
    return _journaled_since(gw, first), elapsed


def _downlink_junk(services) -> int:
    """Records made by 10,000 junk messages on the command topic (what the uplink hands over)."""
    from controller.link.downlink import DownlinkVerifier, SeqStore, command_handler
    from drivers.keys import generate

    gw = services.gateway
    verifier = DownlinkVerifier(gw.gateway_id, generate(gw.gateway_id + ".headend"),
                                SeqStore(gw.state_dir / "bench-downlink-seq"))
    handle = command_handler(verifier, services.path.execute, services.path.refused)
    rng = random.Random(4)
    first = gw.journal.next_seq
    for _ in range(JUNK_COMMANDS):
        handle(rng.randbytes(rng.randrange(1, 300)))
    return _journaled_since(gw, first)


def run() -> list[Figure]:
    from controller.cli.provision import flashed_keys
    from controller.gateway.run import build

    sim = _SimProcess(wire=False, baud=BAUD)  # fast mode: the figures time the console, not the bus
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        flashed_keys("gw-bench", d / "keys", d / "state")
        people = PeopleStore(d / "people.toml")
        tech = people.enrol("bench", "technician")
        services = build(str(_site(d, sim.port)))
        gw = services.gateway
        loop = threading.Thread(target=gw.run, daemon=True)
        loop.start()
        try:
            time.sleep(1.0)                       # devices online, SunSpec discovered
            quiet = _lateness(gw, JITTER_S)
            term = _Terminal(d / "console")
            console_records, junk_s = _console_junk(term, gw)
            downlink_records = _downlink_junk(services)
            term.round_trip("login bench {}".format(code_at(tech.secret, time.time())).encode(), b"Logged in")
            status = [term.round_trip(b"status", b"last ") for _ in range(ROUND_TRIPS)]
            rng = random.Random(8)
            core = [term.round_trip(line, b"ok\r\n", rng.uniform(0, SCAN_MS / 1000))
                    for _ in range(ROUND_TRIPS // 2) for line in (b"maint start 30m", b"maint stop")]
            live = _live_view(term, gw)
            flood = _flood(term, gw)
            term.close()
        finally:
            gw.stop_event.set()
            loop.join(5)
            services.stop("bench over")
            sim.close()
    p99_change = _ms(live, 0.99) - _ms(quiet, 0.99)
    return [
        Figure("`status` round trip over a pty, median", _ms(status, 0.5), "ms", "<= 50"),
        Figure("`status` round trip over a pty, p99", _ms(status, 0.99), "ms", "<= 50"),
        Figure("`maint start`/`maint stop` round trip, median", _ms(core, 0.5), "ms", "<= 50",
               "a core command waits for the next scan ({} ms period)".format(SCAN_MS)),
        Figure("`maint start`/`maint stop` round trip, p99", _ms(core, 0.99), "ms", "<= 50",
               "bounded by the scan period"),
        Figure("scan lateness, no console session, p50", _ms(quiet, 0.5), "ms"),
        Figure("scan lateness, no console session, p99", _ms(quiet, 0.99), "ms"),
        Figure("scan lateness, no console session, max", _ms(quiet, 1.0), "ms", note="{} scans".format(len(quiet))),
        Figure("scan lateness, live signals view, p50", _ms(live, 0.5), "ms"),
        Figure("scan lateness, live signals view, p99", _ms(live, 0.99), "ms"),
        Figure("scan lateness, live signals view, max", _ms(live, 1.0), "ms", note="{} scans".format(len(live))),
        Figure("p99 lateness change with the live view", p99_change, "ms", "<= 1",
               "unchanged = within 1 ms"),
        Figure("scan lateness, `status` flood, p99", _ms(flood, 0.99), "ms",
               note="input as fast as the console answers"),
        Figure("scan lateness, `status` flood, max", _ms(flood, 1.0), "ms", note="{} scans".format(len(flood))),
        Figure("records written by 1 MB of console junk", console_records, "records", "<= 100",
               "anonymous, random bytes, {:.1f} s; flood summaries included".format(junk_s)),
        Figure("records written by 10,000 junk commands", downlink_records, "records", "<= 100",
               "random payloads on the command topic; flood summaries included"),
    ]
