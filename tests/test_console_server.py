"""The console over a real pseudo-terminal, as picocom would drive it."""

import os
import select
import time

import pytest

from controller.console.auth import Authenticator, PeopleStore, code_at
from controller.console.server import ConsoleServer, PtyStream
from tests.test_console_session import View
from tests.waiting import wait_until


class Terminal:
    """The technician's side: opens the linked pty like picocom does."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.seen = b""

    def send(self, data: bytes):
        os.write(self.fd, data)

    def expect(self, text: bytes, timeout=5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, "did not see {!r}; got {!r}".format(text, self.seen[-300:])
            if select.select([self.fd], [], [], left)[0]:
                self.seen += os.read(self.fd, 4096)
        out, self.seen = self.seen, self.seen[self.seen.index(text) + len(text):]
        return out

    def login(self, people: PeopleStore, who: str = "ana", at: float | None = None) -> bytes:
        """Log ``who`` in with the code of time ``at`` (now); what came up to their prompt."""
        code = code_at(people.people[who].secret, time.time() if at is None else at)
        self.send("login {} {}\r".format(who, code).encode())
        return self.expect("({} {})> ".format(people.people[who].role, who).encode())

    def close(self):
        os.close(self.fd)


def serve(tmp_path, **options):
    """A console on a pty linked at tmp_path/console, for ana (technician), over the stub view."""
    store = PeopleStore(tmp_path / "people.toml")
    store.enrol("ana", "technician")
    view = View()
    server = ConsoleServer(PtyStream(tmp_path / "console"), view, Authenticator(store), idle_s=60,
                           **options).start()
    return server, view, store


def abuse(term, prompt: bytes, status_answer: bytes, floods: int = 300) -> None:
    """What a thief or a bad cable sends: noise, Ctrl-C, an endless line, a flood of commands."""
    term.send(bytes(range(256)) * 16 + b"\x1b[A\x1b[2J")
    term.send(b"\x03")
    term.expect(b"^C\r\n" + prompt)
    term.send(b"x" * 5000 + b"\r")
    term.expect(b"line too long (at most 200 characters); ignored")
    term.send(b"status\r" * floods)
    for _ in range(floods):
        term.expect(status_answer)
    term.expect(prompt)


@pytest.fixture
def console(tmp_path):
    server, view, store = serve(tmp_path)
    term = Terminal(tmp_path / "console")
    yield term, view, store
    term.close()
    server.stop()


def test_login_and_maintenance_over_a_pty(console):
    term, view, store = console
    term.expect(b"gw-1 (anyone)> ")
    assert b"Logged in as ana (technician).\r\ngw-1 (technician ana)> " in term.login(store)
    term.send(b"maint start 20m\r")
    term.expect(b"ok\r\ngw-1 (technician ana)> ")
    assert view.submitted == [("maint start", (3, 1200000), "ana")]


def test_survives_garbage_ctrl_c_overlong_lines_and_floods(console):
    term, view, _ = console
    term.expect(b"> ")
    abuse(term, b"gw-1 (anyone)> ", b"mode armed")
    term.send(b"stauts\r")
    term.expect(b"Did you mean: status")


def test_live_view_streams_until_enter(console):
    term, view, store = console
    term.expect(b"> ")
    term.login(store)
    term.send(b"signals io.*\r")
    term.expect(b"io.door_open")
    term.expect(b"--- ")
    term.send(b"\r")
    term.expect(b"(technician ana)> ")


def test_cable_pulled_mid_command_leaves_nothing_behind(console, tmp_path):
    term, view, store = console
    term.expect(b"> ")
    term.send(b"maint st")
    term.expect(b"maint st")
    term.close()
    time.sleep(0.5)
    term2 = Terminal(tmp_path / "console")
    term2.send(b"\r")
    term2.expect(b"(anyone)> ")
    term2.send(b"status\r")
    term2.expect(b"mode armed")
    assert ("-", "session", "line dropped (cable pulled?)") in view.audits
    term.fd = term2.fd


def test_an_idle_session_is_logged_out_on_its_own(tmp_path):
    """The server checks idleness even when nothing is typed (its clock is injected here)."""
    clock = {"now": time.time()}
    server, view, store = serve(tmp_path, now=lambda: clock["now"])
    term = Terminal(tmp_path / "console")
    try:
        term.login(store, at=clock["now"])
        clock["now"] += 59
        term.send(b"status\r")
        term.expect(b"mode armed\r\ngw-1 (technician ana)> ")
        clock["now"] += 61                          # a minute and a second without a key
        term.expect(b"Session timed out; logged out.\r\ngw-1 (anyone)> ")
        assert ("ana", "session", "idle timeout") in view.audits
    finally:
        term.close()
        server.stop()


class CountingPty(PtyStream):
    """A pty console that counts the hang-ups it reads while no terminal is attached."""

    hangups = 0

    def read(self, timeout_s):
        data = super().read(timeout_s)
        self.hangups += data is None
        return data


def test_the_banner_waits_for_a_terminal_instead_of_piling_up(tmp_path):
    """Finding 9: with nobody attached, 23 banners were waiting on first connect."""
    store = PeopleStore(tmp_path / "people.toml")
    stream = CountingPty(tmp_path / "console")
    server = ConsoleServer(stream, View(), Authenticator(store)).start()
    try:
        assert wait_until(lambda: stream.hangups >= 6)     # the console has looked for a terminal 6 times
        term = Terminal(tmp_path / "console")
        term.send(b"version\r")
        seen = term.expect(b"version\r\n")                 # the echo: the banners were before it
        seen += term.expect(b"gw-1 (anyone)> ")
        assert seen.count(b"cabguard console on gw-1") == 1, seen
        term.close()
    finally:
        server.stop()


class WaitRecordingPty(PtyStream):
    """A pty console that records how long each of its reads may wait."""

    def __init__(self, link):
        super().__init__(link)
        self.waits = []

    def read(self, timeout_s):
        self.waits.append(timeout_s)
        return super().read(timeout_s)


def test_the_console_sleeps_until_a_key_and_wakes_at_once_to_stop(tmp_path):
    """Issue 15: nobody logged in, the console thread waits for a key with no timeout
    (it used to wake 5 times a second to look); logged in, it looks at the clock (the
    idle timeout) at most once a second; stop() wakes it at once."""
    store = PeopleStore(tmp_path / "people.toml")
    store.enrol("ana", "technician")
    stream = WaitRecordingPty(tmp_path / "console")
    server = ConsoleServer(stream, View(), Authenticator(store), idle_s=60).start()
    term = Terminal(tmp_path / "console")
    try:
        term.send(b"\r")
        term.expect(b"gw-1 (anyone)> ")
        assert wait_until(lambda: stream.waits[-1] is None)      # asleep until a key comes
        term.login(store)
        assert wait_until(lambda: stream.waits[-1] is not None)
        assert 0 < stream.waits[-1] <= 1.0
        term.send(b"logout\r")
        term.expect(b"gw-1 (anyone)> ")
        assert wait_until(lambda: stream.waits[-1] is None)
    finally:
        term.close()
        server.stop()
    assert not server.thread.is_alive()
