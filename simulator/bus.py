"""Simulated RS-485 buses: Modbus RTU slaves served on pseudo-terminal pairs.

Each bus is an ``os.openpty()`` pair: the gateway (or any Modbus master)
opens the slave end (``bus.port``, e.g. /dev/pts/7) as a serial port; the
simulator reads requests from the master end and answers for the devices on
that bus.  A request is complete when its length (known from the function
code) has arrived, so answers do not wait for the t3.5 gap; a partial frame
followed by t3.5 of silence, or a bad CRC, is dropped as a real slave would.

A pty carries bytes at once, so every slave would answer instantly; the
*wire* (on by default) puts a real bus back: the request is taken to end
when its last character would have arrived at ``baud`` (11 bits a
character), the device answers after its turnaround (``SimDevice``'s
``turnaround_ms``), and the answer is written a character at a time at
``baud``.  ``wire=False`` is the fast mode, for benches that time the
master's own work.  On a real adapter (``serial_port``) the hardware paces
the bytes; the turnaround still applies.
A bus has a framing (``parity``, ``stopbits``, 8N1 by default); a request
sent with another framing is dropped too, as a real slave sees only parity
and framing errors.  On a pty the framing is read from the line settings
the master made (stop bits and odd parity always; even parity only where
the kernel keeps PARENB on ptys, which not all do).

    with Simulator([SimBus("rs485-1", [SimDevice("io", "io-dvt", 1)])]) as sim:
        port = sim.bus("rs485-1").port
        sim.device("io").set(door_open=1)
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty
from pathlib import Path
from typing import NamedTuple

from drivers import pidlock
from drivers.errors import LockHeld
from drivers.modbus import frames
from simulator.errors import SimConfigError
from simulator.slave import SimDevice


PARITY_FLAGS = {"N": 0, "E": termios.PARENB, "O": termios.PARENB | termios.PARODD}


def open_raw_port(path: str, baud: int, parity: str = "N", stopbits: int = 1) -> int:
    """A real serial port, raw (no echo or line editing), at ``baud``, 8 data bits,
    ``parity`` and ``stopbits``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise SimConfigError("cannot open serial port {}: {}".format(path, e.strerror)) from None
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, "B{}".format(baud), None)
    if speed is None:
        os.close(fd)
        raise SimConfigError("{}: baud {} is not a standard rate".format(path, baud))
    attrs[4] = attrs[5] = speed
    attrs[2] &= ~(termios.PARENB | termios.PARODD | termios.CSTOPB)
    attrs[2] |= PARITY_FLAGS[parity] | (termios.CSTOPB if stopbits == 2 else 0)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


BROADCAST = 0          # a request to address 0 goes to every slave, and none answers
DEFAULT_BAUD = 19200   # the Modbus serial line's default rate (spec 2.5.1)
PACE_S = 0.002         # the longest pause between batches of an answer's characters


class SimBus:
    """One pty pair and the devices on it, on a wire at ``baud`` unless ``wire`` is False."""

    def __init__(self, name: str, devices: list[SimDevice], baud: int = DEFAULT_BAUD,
                 wire: bool = True, serial_port: str | None = None,
                 parity: str = "N", stopbits: int = 1) -> None:
        addresses = [d.address for d in devices]
        if len(set(addresses)) != len(addresses):
            raise SimConfigError("bus {}: two devices share an address ({})".format(name, addresses))
        if parity not in PARITY_FLAGS or stopbits not in (1, 2):
            raise SimConfigError("bus {}: parity {!r} / stop bits {!r}: want parity N, E or O and stop "
                                 "bits 1 or 2".format(name, parity, stopbits))
        self.name = name
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        self.wire = wire
        self.devices = {d.address: d for d in devices}
        if serial_port:
            # A HIL bench: serve on a real adapter wired to the gateway's bus.
            self.master_fd, self.slave_fd = open_raw_port(serial_port, baud, parity, stopbits), -1
            self.port = serial_port
        else:
            self.master_fd, self.slave_fd = os.openpty()
            tty.setraw(self.slave_fd)  # no echo or line editing before a client configures it
            self.port = os.ttyname(self.slave_fd)
        self.dropped = 0           # frames dropped for CRC, framing or silence mid-frame
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="sim-" + self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self.master_fd)
        if self.slave_fd >= 0:
            os.close(self.slave_fd)

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.master_fd, select.POLLIN)
        t35_ms = frames.t35_seconds(self.baud) * 1000
        buf = b""
        first_byte = 0.0  # when the frame in buf began to arrive
        while not self._stop.is_set():
            # Waiting inside a frame: t3.5 of silence ends (drops) it.
            if not poller.poll(t35_ms if buf else 50):
                if buf:
                    self.dropped += 1
                    buf = b""
                continue
            if not buf:
                first_byte = time.perf_counter()
            buf += os.read(self.master_fd, 512)
            while buf:
                need = frames.request_length(buf)
                if not need or len(buf) < need:
                    break
                frame, buf = buf[:need], buf[need:]
                self._handle(frame, first_byte)
                first_byte = time.perf_counter()

    def framing_matches(self) -> bool:
        """Whether the master's line settings on the pty are this bus's framing (on a real
        adapter the hardware sees to it: a mismatch arrives as garbage)."""
        if self.slave_fd < 0:
            return True
        cflag = termios.tcgetattr(self.master_fd)[2]
        if (2 if cflag & termios.CSTOPB else 1) != self.stopbits:
            return False
        if bool(cflag & termios.PARODD) != (self.parity == "O"):
            return False
        return not cflag & termios.PARENB or self.parity != "N"

    def _handle(self, frame: bytes, first_byte: float) -> None:
        if not frames.crc_ok(frame) or not self.framing_matches():
            self.dropped += 1
            return
        if frame[0] == BROADCAST:
            if frame[1] in frames.WRITE_FUNCTIONS:  # every slave executes it, none answers
                for each in self.devices.values():
                    each.answer(frame)
            return
        device = self.devices.get(frame[0])
        if device is None:
            return
        reply = device.reply(frame)
        if reply.data is None:
            return
        if not self.wire:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            os.write(self.master_fd, reply.data)
            return
        paced = self.slave_fd >= 0  # a pty; a real adapter paces the bytes itself
        received = first_byte + frames.wire_seconds(len(frame), self.baud) if paced else time.perf_counter()
        _sleep_until(received + device.turnaround_s() + reply.delay_s)
        if paced:
            self._send_paced(reply.data)
        else:
            os.write(self.master_fd, reply.data)

    def _send_paced(self, data: bytes) -> None:
        """Write ``data`` as the wire delivers it: character i is readable (i + 1) character
        times after the first one started.  Characters are written in batches at most
        ``PACE_S`` apart, the last one on time: a wake-up per character (0.57 ms at 19200)
        would contend for the interpreter with a gateway in the same process."""
        char = frames.wire_seconds(1, self.baud)
        start, sent = time.perf_counter(), 0
        end = start + len(data) * char
        while sent < len(data):
            now = time.perf_counter()
            due = min(len(data), int((now - start) / char + 1e-6))  # no spin on a rounding error
            if due > sent:
                os.write(self.master_fd, data[sent:due])
                sent = due
            else:
                _sleep_until(min(end, max(start + (sent + 1) * char, now + PACE_S)))


def _sleep_until(when: float) -> None:
    wait = when - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


LINK_LOCK = ".cabguard-sim.lock"    # in a --link folder: held by the simulator linking there


class Simulator:
    """Several buses in one process; ``link(dir)`` makes ``dir/<bus>`` symlinks to the ports."""

    def __init__(self, buses: list[SimBus]) -> None:
        names = [b.name for b in buses]
        if len(set(names)) != len(names):
            raise SimConfigError("two buses share a name ({})".format(", ".join(names)))
        self.buses = {b.name: b for b in buses}
        self._links: list[Path] = []
        self._lock_fds: list[int] = []

    def bus(self, name: str) -> SimBus:
        try:
            return self.buses[name]
        except KeyError:
            raise SimConfigError("no bus {!r} (buses: {})".format(name, ", ".join(self.buses))) from None

    def device(self, name: str) -> SimDevice:
        for bus in self.buses.values():
            for dev in bus.devices.values():
                if dev.name == name:
                    return dev
        raise SimConfigError("no simulated device {!r}".format(name))

    def link(self, directory: str | Path) -> dict[str, Path]:
        """``directory/<bus>`` -> the bus's pty, replacing stale links of an earlier run;
        a folder a live simulator links into is refused (its links are in use)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._hold(d)
        made = {}
        for name, bus in self.buses.items():
            path = d / name
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                raise SimConfigError("{} exists and is not a symlink: remove it or choose another --link".format(path))
            path.symlink_to(bus.port)
            self._links.append(path)
            made[name] = path
        return made

    def _hold(self, d: Path) -> None:
        """Hold ``d/LINK_LOCK`` while this simulator runs (drivers/pidlock.py)."""
        try:
            self._lock_fds.append(pidlock.hold(d / LINK_LOCK, 0o644))
        except LockHeld as e:
            raise SimConfigError("{} is in use by a running simulator (PID {}): its links serve that "
                                 "simulator's devices; stop it or choose another --link".format(d, e.holder)) from None

    def start(self) -> "Simulator":
        for bus in self.buses.values():
            bus.start()
        return self

    def stop(self) -> None:
        for bus in self.buses.values():
            bus.stop()
        for path in self._links:
            if path.is_symlink():
                path.unlink()
        self._links.clear()
        for fd in self._lock_fds:
            os.close(fd)
        self._lock_fds.clear()

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Late(NamedTuple):
    """A scripted answer that starts ``delay_s`` after the request and comes one byte
    every ``gap_s``, as a slow slave's answer on a slow line."""
    data: bytes
    delay_s: float
    gap_s: float


class ScriptedSlave:
    """A pty whose 'slave' answers each request with the next scripted bytes (b"" = silence)
    or ``Late`` answer.

    For fuzzing a master with arbitrary answers: wrong CRC, address, function or length.
    """

    def __init__(self) -> None:
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.port = os.ttyname(self.slave_fd)
        self._answers: list[bytes] = []
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="scripted-slave", daemon=True)
        self._running = True
        self._thread.start()

    def script(self, answers: list[bytes | Late]) -> None:
        with self._ready:
            self._answers = list(answers)
            self._ready.notify()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.master_fd, select.POLLIN)
        buf = b""
        while self._running:
            if not poller.poll(20):
                continue
            buf += os.read(self.master_fd, 256)
            need = frames.request_length(buf)
            if not need or len(buf) < need:
                continue
            buf = buf[need:]
            with self._ready:
                answer = self._answers.pop(0) if self._answers else b""
            if isinstance(answer, Late):
                time.sleep(answer.delay_s)
                for i in range(len(answer.data)):
                    os.write(self.master_fd, answer.data[i:i + 1])
                    time.sleep(answer.gap_s)
            elif answer:
                os.write(self.master_fd, answer)

    def close(self) -> None:
        self._running = False
        self._thread.join()
        os.close(self.master_fd)
        if self.slave_fd >= 0:
            os.close(self.slave_fd)
