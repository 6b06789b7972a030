"""``cabguard console --local``: this terminal on a running gateway's console.

The gateway owns its console (controller/console/server.py): with
``[console] port = "pty:PATH"`` it serves it on a pseudo-terminal linked at
PATH.  ``--local`` opens that link the way picocom would and relays bytes
both ways, so a person on the gateway itself (ssh, a local keyboard) gets
the same shell, the same login and the same audit as one on the serial
cable.  Leaving (Ctrl-], or the end of a script) hangs the line up: the
gateway logs the session out.

Two modes:

* stdin is a terminal: it is put in raw mode (termios) so every key —
  Ctrl-C, backspace — reaches the console unchanged, and restored on exit
  whatever happens.  Ctrl-] quits (Ctrl-C belongs to the console).
* stdin is not a terminal (a script, a pipe): each input line is sent once
  the console shows its prompt, and the transcript goes to stdout with
  plain newlines.  A line that brings no prompt back within ``--timeout``
  seconds (a live view waits for Enter) ends the script with an error.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Callable, Iterable, TextIO

from controller.errors import CabguardError, UsageError
from controller.gateway.config import load

QUIT = 0x1D        # Ctrl-]: telnet's escape; Ctrl-C is the console's own
ETX = b"\x03"      # Ctrl-C: abandons any half-typed line and prints a fresh prompt
READ_CHUNK = 4096
# A prompt at the end of what the console sent: "gw-17 (technician ana)> ".
PROMPT = re.compile(rb"(?:^|\n)[^\r\n]* \((?:anyone|technician \S+|installer \S+)\)> $")


class ConsoleLinkError(CabguardError):
    """The gateway's console cannot be reached or went away."""


def link_path(link: str | None, config: str | None) -> Path:
    """``--link`` as given, else the pty link of the site config's [console] port."""
    if link:
        return Path(link)
    if not config:
        raise UsageError("give --link PATH (the gateway's console pty) or --config SITE.toml")
    console = load(config).doc.get("console")
    port = console["port"] if console else ""
    if not port.startswith("pty:"):
        raise UsageError("{}: [console] port must be pty:PATH for --local (it is {!r}); a serial "
                         "console is reached over its cable with picocom".format(config, port or "not set"))
    return Path(port[4:])


def open_link(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise ConsoleLinkError("{}: {}; is `cabguard run` running with [console] port = \"pty:{}\"?".format(
            path, e.strerror, path)) from None
    if os.isatty(fd):
        tty.setraw(fd)   # as picocom does: no line discipline between us and the console
    return fd


def _read(fd: int) -> bytes:
    """What is there (b"" when the other side hung up)."""
    try:
        return os.read(fd, READ_CHUNK)
    except OSError:  # EIO: the gateway closed its end
        return b""


def interactive(link: int, stdin: int, stdout: int) -> int:
    """Raw relay until Ctrl-] or the gateway goes away; the terminal is always restored."""
    saved = termios.tcgetattr(stdin)
    os.write(2, b"cabguard: connected to the gateway console; Ctrl-] quits\r\n")
    tty.setraw(stdin)
    try:
        os.write(link, b"\r")
        while True:
            ready, _, _ = select.select([stdin, link], [], [])
            if link in ready:
                data = _read(link)
                if not data:
                    os.write(2, b"\r\ncabguard: the console closed (gateway stopped?)\r\n")
                    return 1
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, READ_CHUNK)
                head, quit_key, _ = data.partition(bytes([QUIT]))
                if head:
                    os.write(link, head)
                if quit_key or not data:
                    return 0
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.write(2, b"\n")


class Scripted:
    """Lines in, transcript out: each line waits for the console's prompt."""

    def __init__(self, link: int, out: TextIO, timeout_s: float):
        self.link = link
        self.out = out
        self.timeout_s = timeout_s

    def _until(self, done: Callable[[bytes], object], what: str) -> bytes:
        got = b""
        deadline = time.monotonic() + self.timeout_s
        while not done(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConsoleLinkError("no prompt within {} s after {}".format(self.timeout_s, what))
            if select.select([self.link], [], [], left)[0]:
                data = _read(self.link)
                if not data:
                    raise ConsoleLinkError("the console closed after {} (gateway stopped?)".format(what))
                got += data
        return got

    def run(self, lines: Iterable[str]) -> int:
        # Ctrl-C first: whatever the line held is dropped, and its "^C" tells our
        # fresh prompt apart from a banner sent before we opened the link.
        os.write(self.link, ETX)
        got = self._until(lambda b: b"^C\r\n" in b and PROMPT.search(b.rsplit(b"^C\r\n", 1)[1]), "connecting")
        self._show(got.rsplit(b"^C\r\n", 1)[1])
        for line in lines:
            line = line.rstrip("\r\n")
            os.write(self.link, line.encode("ascii", "replace") + b"\r")
            self._show(self._until(lambda b: PROMPT.search(b) is not None, repr(line)))
        self.out.write("\n")
        self.out.flush()
        return 0

    def _show(self, data: bytes) -> None:
        self.out.write(data.replace(b"\r\n", b"\n").decode("ascii", "replace"))
        self.out.flush()


def main(args: argparse.Namespace) -> int:
    path = link_path(args.link, args.config)
    link = open_link(path)
    try:
        if sys.stdin.isatty():
            return interactive(link, sys.stdin.fileno(), sys.stdout.fileno())
        return Scripted(link, sys.stdout, args.timeout).run(sys.stdin)
    finally:
        os.close(link)
