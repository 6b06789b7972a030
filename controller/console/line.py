"""The console's line discipline: bytes in, echo and whole lines out.

Works with picocom, minicom and screen as they are usually set up: they
send CR for Enter (some CR LF, some LF), DEL or BS for backspace, and expect
the far end to echo.  No ANSI is needed: backspace is echoed as BS SP BS.
Binary garbage (a thief's fuzzing, a baud-rate mismatch) is dropped without
echo; a line over the cap is cut with a message; Ctrl-C abandons the line
(or stops a live view); Ctrl-U clears it.  Pure: feed bytes, get results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINE = 200
CR, LF, BS, DEL, ETX, NAK = 0x0D, 0x0A, 0x08, 0x7F, 0x03, 0x15


@dataclass
class Fed:
    echo: bytes = b""
    lines: list[str] = field(default_factory=list)
    interrupted: bool = False
    overflowed: bool = False


class LineEditor:
    def __init__(self, max_line: int = MAX_LINE, echo: bool = True):
        self.max_line = max_line
        self.echo_on = echo
        self.buf = bytearray()
        self.last_was_cr = False
        self.discarding = False  # after an overflow, until the end of that line

    def feed(self, data: bytes) -> Fed:
        out = Fed()
        echo = bytearray()
        for b in data:
            if b == LF and self.last_was_cr:
                self.last_was_cr = False
                continue  # CR LF is one Enter
            self.last_was_cr = b == CR
            if b in (CR, LF):
                echo += b"\r\n"
                if not self.discarding:
                    out.lines.append(self.buf.decode("ascii"))
                self.buf.clear()
                self.discarding = False
            elif b in (BS, DEL):
                if self.buf:
                    self.buf.pop()
                    echo += b"\b \b"
            elif b == ETX:
                out.interrupted = True
                self.buf.clear()
                self.discarding = False
                echo += b"^C\r\n"
            elif b == NAK:
                echo += b"\b \b" * len(self.buf)
                self.buf.clear()
            elif 0x20 <= b < 0x7F:
                if self.discarding:
                    continue
                if len(self.buf) >= self.max_line:
                    out.overflowed = True
                    self.discarding = True
                    self.buf.clear()
                    echo += b"\r\n"
                    continue
                self.buf.append(b)
                echo.append(b)
            # anything else (binary, escape sequences' bytes < 0x20) is dropped
        out.echo = bytes(echo) if self.echo_on else b""
        return out
