"""The console's I/O shell: a Session served over a byte stream, in its own thread.

Streams: a serial port (pyserial), a pseudo-terminal (for tests and HIL:
the slave end is linked at a path that picocom, minicom or screen open), or
the local terminal (``cabguard console --local``).  The thread only reads,
edits lines and writes; commands that change the cabinet go through the
GatewayView into the scan loop's command queue, so a slow terminal or a
flood of input never delays a scan.  A pulled cable (EOF, EIO) ends the
session — logged out, audited — and the console waits for the next one.
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty
from pathlib import Path

from controller.console.auth import Authenticator
from controller.console.line import LineEditor
from controller.console.session import GatewayView, Session

BANNER = "cabguard console on {gw}. Type 'help'.\r\n"
LIVE_PERIOD_S = 1.0
HANGUP_RETRY_S = 0.2    # a pty nobody has open is looked at again this often
CLOCK_CHECK_S = 1.0     # a logged-in session looks at the wall clock (idle timeout) at least this often
READ_CHUNK = 4096


class Stream:
    """A byte stream with a read timeout; ``None`` from read means hung up.

    A read waits for bytes (or a hang-up) and nothing else: ``interrupt()``
    ends it at once, so the console's thread sleeps until a key, the next
    thing it has to do, or its stop, instead of waking to look."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def read(self, timeout_s: float | None) -> bytes | None:
        """What came within ``timeout_s`` (None: no limit); b"" if nothing came or
        ``interrupt()`` was called; None if the line hung up."""
        raise NotImplementedError

    def write(self, data: bytes) -> bool:
        raise NotImplementedError

    def interrupt(self) -> None:
        """End the read in progress, or the next one, at once (the server is stopping)."""
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:   # the pipe is full of earlier wake-ups: one is enough
            pass

    def _readable(self, fd: int, timeout_s: float | None) -> bool:
        """Wait until ``fd`` is readable (True), or the timeout or an interrupt (False)."""
        ready, _, _ = select.select([fd, self._wake_r], [], [], timeout_s)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, READ_CHUNK)
            except BlockingIOError:
                pass
            return False
        return bool(ready)

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class FdStream(Stream):
    """A file descriptor: a pty master, or the local terminal's stdin/stdout."""

    def __init__(self, rfd: int, wfd: int):
        super().__init__()
        self.rfd, self.wfd = rfd, wfd

    def read(self, timeout_s: float | None) -> bytes | None:
        if not self._readable(self.rfd, timeout_s):
            return b""
        try:
            data = os.read(self.rfd, READ_CHUNK)
        except BlockingIOError:  # ready was a hang-up that a terminal opening has since cleared
            return b""
        except OSError:  # EIO: the pty's other side closed (cable pulled)
            return None
        return data if data else None

    def write(self, data: bytes) -> bool:
        try:
            view = memoryview(data)
            while view:
                _, ready, _ = select.select([], [self.wfd], [], 1.0)
                if not ready:
                    return False  # nobody reads: drop rather than block
                view = view[os.write(self.wfd, view):]
            return True
        except OSError:
            return False


class PtyStream(FdStream):
    """A pty whose slave end is symlinked at ``link`` for terminal programs.

    The slave is not held open here, so when the terminal program exits
    (the cable is pulled) reads fail with EIO — a hang-up, like a serial
    line losing carrier — until the next one opens it.
    """

    def __init__(self, link: str | Path):
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        name = os.ttyname(slave)
        os.close(slave)
        # Non-blocking: select reports a hang-up as readable, and a terminal opening
        # between that select and the read would otherwise block the read until it types.
        os.set_blocking(master, False)
        super().__init__(master, master)
        self.link = Path(link)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, self.link)

    def close(self) -> None:
        try:
            os.close(self.rfd)
        except OSError:
            pass
        if self.link.is_symlink():
            self.link.unlink()
        super().close()


class SerialStream(Stream):
    """A real serial port through pyserial (a USB-serial cable's far end)."""

    def __init__(self, port: str, baud: int):
        import serial  # host-only dependency, imported where it is used

        super().__init__()
        self.serial = serial.Serial(port, baud, timeout=0)
        self.serial_error = serial.SerialException

    def read(self, timeout_s: float | None) -> bytes | None:
        try:
            return self.serial.read(READ_CHUNK) if self._readable(self.serial.fileno(), timeout_s) else b""
        except (OSError, self.serial_error):
            return None

    def write(self, data: bytes) -> bool:
        try:
            self.serial.write(data)
            return True
        except (OSError, self.serial_error):
            return False

    def close(self) -> None:
        self.serial.close()
        super().close()


class ConsoleServer:
    """Runs sessions on one stream until stopped; one session at a time."""

    def __init__(self, stream: Stream, view: GatewayView, auth: Authenticator, idle_s: int = 300,
                 max_line: int = 200, now=time.time):
        self.stream = stream
        self.view = view
        self.auth = auth
        self.idle_s = idle_s
        self.max_line = max_line
        self.now = now
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console", daemon=True)

    def start(self) -> "ConsoleServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.stream.interrupt()
        self.thread.join(5)
        self.stream.close()

    def _send(self, text: str) -> None:
        if text:
            self.stream.write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii", "replace"))

    def _input(self, session: Session, editor: LineEditor, data: bytes, now: float,
               next_live: float) -> float:
        """Echo, run whole lines; returns when the live view is next due."""
        fed = editor.feed(data)
        self.stream.write(fed.echo)
        if fed.overflowed:
            self._send("line too long (at most {} characters); ignored\n".format(self.max_line))
        lines = fed.lines
        if fed.interrupted or (session.live_pattern and lines):
            if session.live_pattern and not fed.interrupted:
                lines = lines[1:]  # the Enter that stopped the live view
            session.stop_live()
            self._send(session.prompt())
        for line in lines:
            if self.stop_event.is_set():   # stopping: typed-ahead lines are not run (the journal is closing)
                break
            answer = session.handle(line, now)
            self._send(answer + "\n" if answer else "")
            if session.live_pattern:
                return now + LIVE_PERIOD_S  # typing ahead during a live view is dropped
            self._send(session.prompt())
        return next_live

    @staticmethod
    def _wait_s(session: Session, now: float, next_live: float) -> float | None:
        """How long a session waits for a key: until the live view's next frame; with
        someone logged in, at most CLOCK_CHECK_S (the idle timeout counts on the wall
        clock, which a time service may step); else until a key comes or stop()."""
        if session.live_pattern:
            return max(0.0, min(next_live - now, CLOCK_CHECK_S))
        return CLOCK_CHECK_S if session.person else None

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self._serve_one()

    def _serve_one(self) -> None:
        # The banner waits for a terminal: a pty nobody has open reads as a
        # hang-up, and what is written meanwhile piles up for whoever opens it.
        typed = self.stream.read(HANGUP_RETRY_S)
        if typed is None:   # a hung-up pty reads at once: look again later (no event says a terminal opened)
            self.stop_event.wait(HANGUP_RETRY_S)
            return
        session = Session(self.view, self.auth, self.idle_s)
        editor = LineEditor(self.max_line)
        session.last_input = self.now()
        self._send(BANNER.format(gw=self.view.gateway_id) + session.prompt())
        next_live = 0.0
        heard = False
        while not self.stop_event.is_set():
            data, typed = typed or self.stream.read(self._wait_s(session, self.now(), next_live)), b""  # keys typed before the banner first
            now = self.now()
            if data is None:  # hang-up: end this session, wait for the next terminal
                if heard:
                    self.view.audit(session.actor, "session", "line dropped (cable pulled?)")
                self.stop_event.wait(HANGUP_RETRY_S)
                return
            heard = heard or bool(data)
            if data:
                next_live = self._input(session, editor, data, now, next_live)
            if session.live_pattern and now >= next_live:
                self._send("--- {} ---\n{}\n".format(time.strftime("%H:%M:%S"), session.live_view()))
                next_live = now + LIVE_PERIOD_S
            message = session.idle_check(now)
            if message:
                self._send(message + "\n" + session.prompt())
