"""A lean Modbus RTU master on one serial port.

Why not minimalmodbus for the hot path: it waits for silence instead of
reading the known answer length, sets the port's timeout per call and waits
its whole timeout for a 5-byte exception answer.  Here each transaction
writes the request and reads the answer in two wake-ups on a wire: poll() on
the non-blocking descriptor wakes at its first bytes, then the thread sleeps
until the rest of the expected length has had its wire time plus t3.5, and
reads it whole (the bus thread's CPU is its wake-ups).  The line has then
been quiet for t3.5, so the next request goes at once.  An exception answer
is complete at 5 bytes; a wrong address or function ends the read at once.
One wake-up would need the kernel to wake at the whole answer (VMIN), but
the length is the request's, so VMIN would change per transaction (tcsetattr
reprograms some USB adapters) and a 5-byte exception answer would not reach
it: seen only at the timeout.  The read after the sleep reads at once (the
answer is there, as a rule) and asks poll(0) only when it read nothing: with
VMIN 0 an empty tty reads as end-of-file, as a hung-up one does, but only a
hung-up one polls readable.
After a transaction that did not end in a whole answer (a timeout, a
truncated or garbled frame) the next request waits for a quiet line: stale
bytes are read and dropped until t3.5 has passed after the last one, so the
rest of a late answer is not taken as the answer to the next request.
An answer byte for byte the one the same request last got, checked then,
is not checked again (a quiet device's: the CRC is Python's slowest part).

The port comes from a transport factory (``transport``, by default
``open_serial``), which opens it with the bus's framing and RS-485 direction
control.  With ``rs485 = "rts"`` the master raises RTS to the send level
before each request, waits for the UART to send its last bit (``tcdrain``)
and drops it again, with the configured delays around; ``kernel`` and
``auto`` leave that to the serial driver or the adapter.

Every failure of the port itself (an unplugged USB adapter makes ``tcflush``
raise ``termios.error``, reads return end-of-file, writes EIO) becomes a
``ModbusPortLost``: a failed transaction like any other, so the caller's
thread lives and can reopen the port.
"""

from __future__ import annotations

import os
import select
import termios
import time
from typing import Callable

import serial

from drivers.errors import ModbusException, ModbusFrameError, ModbusPortLost, ModbusTimeout
from drivers.modbus import frames
from drivers.modbus.options import Rs485
from drivers.modbus.ports import open_serial

# What the serial layer raises when the port goes away under us.
SERIAL_ERRORS = (OSError, termios.error, serial.SerialException)
Transport = Callable[[str, int, str, int, Rs485], serial.Serial]
KNOWN_ANSWERS = 64   # requests whose last good answer is kept (RtuMaster._known)


def _missing(request: bytes, buf: bytes, expected: int) -> int:
    """How many more bytes the answer ``buf`` to ``request`` needs: an exception answer or a
    stray one (to be drained) ends at 5 bytes, a normal one at ``expected``."""
    if len(buf) >= 2 and (buf[1] & 0x80 or _stray(request, buf)):
        return max(0, frames.EXCEPTION_LENGTH - len(buf))
    return max(0, expected - len(buf))


def _stray(request: bytes, answer: bytes) -> bool:
    """An answer from another address or to another function than ``request``'s."""
    return answer[0] != request[0] or answer[1] & 0x7F != request[1]


def _reason(error: BaseException) -> str:
    """``Input/output error`` from an OSError or a termios.error's (errno, text) args."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    args = getattr(error, "args", ())
    return str(args[1]) if len(args) > 1 else str(error) or type(error).__name__


class RtuMaster:
    """Transactions on one port; not thread-safe (one bus thread owns it).

    >>> m = RtuMaster("/dev/ttyUSB0", 115200)          # doctest: +SKIP
    >>> m.read_registers(2, frames.READ_INPUT, 0, 30, timeout=0.05)  # doctest: +SKIP
    """

    def __init__(self, port: str, baud: int = 115200, parity: str = "N", stopbits: int = 1,
                 rs485: Rs485 = Rs485(), transport: Transport = open_serial) -> None:
        self.port = port
        self.baud = baud
        self.rs485 = rs485
        self.serial = transport(port, baud, parity, stopbits, rs485)
        self.fd = self.serial.fileno()
        self.t35 = frames.t35_seconds(baud)
        self._char_s = frames.wire_seconds(1, baud)
        self._rts = rs485.mode == "rts"
        self._quiet_from = 0.0
        self._stale = False        # the last transaction may have left an answer on its way
        self._sent = (0, 0.0)      # (address, end of the request on the wire) of the last request
        self.late: tuple[int, float] | None = None   # (address, turnaround) of a late answer seen
        self._answer_end = 0.0     # when the last answer's last byte came (perf_counter)
        self._longest = frames.wire_seconds(frames.MAX_FRAME, baud) + self.t35
        self.lost = ""             # why the port failed; once set, every transaction fails at once
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        # The last good answer to each request, with its data: a quiet device answers the
        # same bytes to the same request, and a Python CRC over them costs more than the rest
        # of a transaction's checks.  Byte for byte the same frame needs no checking again.
        self._known: dict[bytes, tuple[bytes, bytes]] = {}

    def close(self) -> None:
        try:
            self.serial.close()
        except SERIAL_ERRORS:
            pass  # a port that is gone is closed enough

    def _lost(self, error: BaseException | str) -> ModbusPortLost:
        why = error if isinstance(error, str) else _reason(error)
        self.lost = "port {} failed: {}".format(self.port, why)
        return ModbusPortLost(self.lost)

    def transact(self, request: bytes, expected: int, timeout: float) -> bytes:
        """The checked data part of the answer to ``request``; ModbusError otherwise.

        ``timeout`` counts from the end of the request on the wire.
        """
        if self.lost:
            raise ModbusPortLost(self.lost)
        self.wait_quiet()
        try:
            termios.tcflush(self.fd, termios.TCIFLUSH)  # a late answer to an earlier request
            if self._rts:
                self._send_driving_rts(request)
                sent = time.perf_counter()
            else:
                os.write(self.fd, request)
                sent = time.perf_counter() + len(request) * self._char_s
        except SERIAL_ERRORS as e:  # an unplugged adapter: the devices fall silent, the bus thread lives
            raise self._lost(e) from None
        self._sent = (request[0], sent)
        deadline = sent + timeout
        whole = False
        try:
            frame = self._receive(request, expected, deadline)
            known = self._known.get(request)
            if known is not None and known[0] == frame:   # the last good answer again: checked then
                whole = True
                return known[1]
            if len(frame) < frames.EXCEPTION_LENGTH:
                raise ModbusTimeout("no answer from slave {} within {:.0f} ms".format(
                    request[0], timeout * 1000)) if not frame else ModbusFrameError(
                    "truncated answer: {} bytes".format(len(frame)))
            if _stray(request, frame):
                self._drain(deadline)
            elif not frame[1] & 0x80 and len(frame) < expected:
                raise ModbusFrameError("truncated answer: {} of {} bytes".format(len(frame), expected))
            data = frames.check_reply(request, frame)
            whole = True
            self._remember(request, frame, data)
            return data
        except ModbusException:
            whole = True  # a complete exception answer: nothing else is coming
            raise
        finally:
            self._quiet_from = self._answer_end + self.t35
            self._stale = not whole

    def _remember(self, request: bytes, frame: bytes, data: bytes) -> None:
        """Keep ``frame``, a good answer to ``request``; at most KNOWN_ANSWERS requests (a
        bus's poll plans have fewer; a technician's bus scan asks many once)."""
        if len(self._known) >= KNOWN_ANSWERS and request not in self._known:
            self._known.clear()
        self._known[request] = (frame, data)

    def _send_driving_rts(self, request: bytes) -> None:
        """Drive the bus for ``request`` only: RTS to the send level, the request out to its
        last bit, RTS back, so the transceiver listens before the slave answers."""
        rs485 = self.rs485
        self.serial.rts = rs485.rts_tx_high
        if rs485.delay_before_ms:
            time.sleep(rs485.delay_before_ms / 1000)
        os.write(self.fd, request)
        termios.tcdrain(self.fd)
        if rs485.delay_after_ms:
            time.sleep(rs485.delay_after_ms / 1000)
        self.serial.rts = not rs485.rts_tx_high

    def wait_quiet(self) -> None:
        """Sleep until t3.5 has passed since the last frame on the wire; after a failed
        transaction, until t3.5 after the last stale byte (at most one longest frame)."""
        if self._stale:
            self._stale = False
            first = self._drain(time.perf_counter() + self._longest)
            if first is not None:  # the failed request's answer, late: how late, for the poller
                self.late = (self._sent[0], first - self._sent[1])
        wait = self._quiet_from - time.perf_counter()
        if wait > 0:
            time.sleep(wait)

    def _receive(self, request: bytes, expected: int, deadline: float) -> bytes:
        """The answer to ``request`` as far as it came by ``deadline``: ``expected`` bytes, or
        the first 5 of an exception answer or of a stray one (another address or function).

        Two wake-ups on a wire: poll() wakes at the answer's first bytes; the rest cannot
        come faster than the baud carries it, so the thread sleeps until its end plus t3.5
        and reads it whole, and the next request may go at once (the line has been quiet
        t3.5).  An answer that began before the request was out on the wire is not on a
        wire (a pty without pacing): the rest is polled for.  ``_answer_end`` is when the last byte came (on a wire,
        when it was due: the UART had it then)."""
        poll = self._poll.poll
        clock = time.perf_counter
        buf = b""
        missing = expected
        on_wire = False      # the answer began after its request was out
        came = False         # the last wait brought bytes
        slept = False        # ... in a sleep through the rest of the answer
        while True:
            now = clock()
            if not missing:
                self._answer_end = min(self._answer_end, now) if slept else now
                return buf
            if came and on_wire:
                self._answer_end = now + missing * self._char_s
                time.sleep(max(0.0, min(deadline, self._answer_end + self.t35) - now))
                slept = True
                chunk = self._read_due(missing)
                if not chunk:   # nothing came meanwhile: wait for it
                    came = False
                    continue
            elif poll(max(0.0, deadline - now) * 1000):
                slept = False
                chunk = self._read_some(missing)
            else:
                self._answer_end = now
                return buf
            if buf:
                buf += chunk
            else:
                buf = chunk
                on_wire = clock() >= self._sent[1]
            came = True
            missing = _missing(request, buf, expected)

    def _read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes that poll() said are there; end-of-file or EIO is a lost port."""
        try:
            chunk = os.read(self.fd, n)
        except SERIAL_ERRORS as e:
            raise self._lost(e) from None
        if not chunk:  # a hung-up tty reads as end-of-file
            raise self._lost("the line hung up (adapter unplugged?)")
        return chunk

    def _read_due(self, n: int) -> bytes:
        """Up to ``n`` bytes due by now, without asking poll() first: nothing (b"") if none
        came.  An empty read is end-of-file both on a quiet line (VMIN 0) and on a hung-up
        one; only the hung-up one polls readable (or bytes came just after the read)."""
        try:
            chunk = os.read(self.fd, n)
        except BlockingIOError:   # a line that says "nothing yet" so (EAGAIN) is not a lost port
            return b""
        except SERIAL_ERRORS as e:
            raise self._lost(e) from None
        if chunk or not self._poll.poll(0):
            return chunk
        return self._read_some(n)

    def _drain(self, deadline: float) -> float | None:
        """Skip a stray answer: read until t3.5 of silence (or the deadline); returns
        when its first byte was read (perf_counter), None if the line was quiet."""
        first = None
        while True:
            left = min(deadline - time.perf_counter(), self.t35)
            if left <= 0 or not self._poll.poll(left * 1000):
                return first
            self._read_some(256)
            first = first or time.perf_counter()

    def read(self, read: frames.Read, timeout: float) -> list[int]:
        """The registers or bits that ``read`` (built once, frames.read) asks for."""
        return frames.values(read, self.transact(read.request, read.expected, timeout))

    def read_block(self, address: int, function: int, start: int, count: int,
                   timeout: float) -> list[int]:
        return self.read(frames.read(address, function, start, count), timeout)

    read_registers = read_bits = read_block    # the function says which: 3/4 registers, 1/2 bits

    def write_coil(self, address: int, coil: int, on: bool, timeout: float) -> None:
        self.transact(frames.write_coil_request(address, coil, on), frames.WRITE_ANSWER_LENGTH, timeout)

    def write_register(self, address: int, register: int, value: int, timeout: float) -> None:
        self.transact(frames.write_register_request(address, register, value), frames.WRITE_ANSWER_LENGTH, timeout)
