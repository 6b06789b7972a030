"""The gateway's uplink in a process of its own.

Why a process
-------------
Draining a backlog is steady Python work (paho, CBOR, the send window).
In a thread it shares the interpreter lock with the scan loop, and every
wake-up of the loop waits behind it: scan lateness p99 went from 0.14 ms
to 1.3-2.6 ms while a 100,000-record backlog drained.  In its own process,
at a lower priority (nice ``UPLINK_NICE``), the uplink takes only spare
CPU and the scan loop keeps its figure (docs/uplink.md, `cabguard bench`).

Who owns what
-------------
The gateway keeps everything that decides or persists: the journal (and
its cursor file), the downlink verifier and its sequence store, the command
path.  The uplink process (``child_main``) runs ``controller.link.uplink.Uplink``
over ``JournalFeed``, a read-only view of the journal's segment files, and
talks to the gateway over one pipe:

    gateway -> uplink   ("feed", durable_seq, [urgent seqs])   records ready to send
                        ("heartbeat", doc)                      answer to a heartbeat request
                        ("stop",)
    uplink -> gateway   ("cursor", seq)      acknowledged upstream up to seq: persist it
                        ("command", bytes)   a payload from the command topic: verify, run
                        ("heartbeat",)       health and checkpoint for the next heartbeat
                        ("health", text)     the link's troubles
                        ("link", up)         connected or not

The uplink process ignores SIGTERM and SIGINT (a service stop or a Ctrl-C
reaches the whole group; the gateway decides when the uplink stops) and
ends when told to or when the gateway's end of the pipe closes.  If it
dies, the gateway starts it again with backoff and notes it as uplink
health; it resumes from the persisted cursor.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from controller.errors import CabguardError, JournalError
from controller.journal.index import ReadMarks, first_seq_of, read_durable
from controller.journal.segments import list_segments
from controller.link.child import reap, spawn
from controller.link.uplink import DRAIN_RATE, Uplink
from controller.link.wire import MAX_BYTES as MAX_COMMAND_BYTES, Topics
from drivers.mqtt import Backoff, BrokerSettings, tls_context

if TYPE_CHECKING:     # the gateway's side only: the uplink process never loads the writer (keys, ciphers)
    from controller.journal.journal import Journal

UPLINK_NICE = 10          # the scan loop comes first
HEARTBEAT_WAIT_S = 1.0    # how long a heartbeat waits for the gateway's health
STOP_TIMEOUT_S = 5.0


@dataclass
class UplinkSpec:
    """What the uplink process needs to start (pickled to it)."""
    settings: BrokerSettings
    topics: Topics
    journal_dir: str
    window: int = 64
    heartbeat_s: float = 30.0
    max_rate: float = DRAIN_RATE


class Pipe:
    """One end of the pipe; sends from several threads, and a closed pipe is not an error."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: tuple) -> bool:
        with self.lock:
            try:
                self.conn.send(message)
                return True
            except (OSError, ValueError):     # the other side is gone, or we closed
                return False


# ---- the gateway's side ----------------------------------------------------------

class UplinkProcess:
    """Starts, feeds and answers the uplink process; restarts it if it dies."""

    def __init__(self, spec: UplinkSpec, journal: Journal, *,
                 on_command: Callable[[bytes], None],
                 on_health: Callable[[str], None],
                 heartbeat: Callable[[], dict]):
        if spec.settings.ca_file or spec.settings.cert_file:
            tls_context(spec.settings)        # a bad certificate file fails the start, here
        self.spec = spec
        self.journal = journal
        self.on_command, self.on_health, self.heartbeat = on_command, on_health, heartbeat
        self.connected = False
        self.urgent: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.unsent_urgent: set[int] = set()  # told again to a restarted process
        self.urgent_lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.backoff = Backoff(1.0, 60.0)
        self.process: subprocess.Popen | None = None
        self.pipe: Pipe | None = None
        self.feeder = threading.Thread(target=self._feed, name="uplink-feed", daemon=True)
        self.inbox = threading.Thread(target=self._receive, name="uplink-inbox", daemon=True)
        journal.durable_listeners.append(lambda _seq: self.wake.set())

    def start(self) -> "UplinkProcess":
        self._spawn()
        self.feeder.start()
        self.inbox.start()
        return self

    def notify_urgent(self, seq: int) -> None:
        """An alarm record: sent ahead of the backlog (called from the scan loop)."""
        self.urgent.put(seq)
        self.wake.set()

    @property
    def cursor(self) -> int:
        return self.journal.cursor

    def stop(self) -> None:
        """Stop the process; its last cursor report is persisted before this returns."""
        self.stopping.set()
        self.wake.set()
        if self.pipe is not None:
            self.pipe.send(("stop",))
        reap(self.process, STOP_TIMEOUT_S)
        if self.inbox.ident is not None:
            self.inbox.join(STOP_TIMEOUT_S)
        if self.pipe is not None:
            self.pipe.conn.close()

    def _spawn(self) -> None:
        """A fresh interpreter running this module (controller/link/child.py)."""
        self.process, conn = spawn("controller.link.uplinkproc")
        self.pipe = Pipe(conn)
        with self.urgent_lock:
            urgent = sorted(s for s in self.unsent_urgent if s > self.journal.cursor)
        self.pipe.send((self.spec, self.journal.cursor, self.journal.durable_seq, urgent))

    def _feed(self) -> None:
        """Tell the process about newly durable records and urgent ones, as they come."""
        told = None
        while not self.stopping.is_set():
            self.wake.wait()      # set by every durable write, urgent record, restart and stop
            self.wake.clear()
            urgent = []
            while not self.urgent.empty():
                urgent.append(self.urgent.get_nowait())
            with self.urgent_lock:
                self.unsent_urgent = {s for s in self.unsent_urgent if s > self.journal.cursor}
                self.unsent_urgent.update(urgent)
            durable = self.journal.durable_seq
            if (durable != told or urgent) and self.pipe is not None:
                if self.pipe.send(("feed", durable, urgent)):
                    told = durable

    def _receive(self) -> None:
        while True:
            assert self.pipe is not None
            try:
                message = self.pipe.conn.recv()
            except (EOFError, OSError):
                if self.stopping.is_set() or not self._restart():
                    return
                continue
            try:
                self._handle(message)
            except (CabguardError, OSError) as e:   # e.g. the cursor file cannot be written
                self.on_health("uplink: {}".format(e))

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "cursor":
            self.journal.set_cursor(message[1])
        elif kind == "command":
            self.on_command(message[1])
        elif kind == "heartbeat":
            assert self.pipe is not None
            self.pipe.send(("heartbeat", self.heartbeat()))
        elif kind == "health":
            self.on_health(message[1])
        elif kind == "link":
            self.connected = message[1]

    def _restart(self) -> bool:
        """The process died: start it again after a backoff; False if stopping meanwhile."""
        assert self.process is not None
        try:
            code: int | str = self.process.wait(1)
        except subprocess.TimeoutExpired:     # it closed the pipe but lives on: end it
            self.process.kill()
            code = "killed, it had closed its pipe"
        self.connected = False
        delay = self.backoff.next_delay()
        self.on_health("uplink process ended (exit code {}); starting it again in {:.1f} s".format(code, delay))
        if self.stopping.wait(delay):
            return False
        self._spawn()
        self.wake.set()
        return True


# ---- the uplink process -----------------------------------------------------------

class JournalFeed:
    """The gateway's journal as the uplink process sees it: the segment files,
    read only, up to the durable sequence number the gateway reports; a cursor
    move goes back to the gateway, which persists it."""

    def __init__(self, directory: Path, cursor: int, durable_seq: int, pipe: Pipe):
        self.directory = directory
        self.cursor = cursor
        self.durable_seq = durable_seq
        self.pipe = pipe
        self.first_seqs: dict[Path, int] = {}
        self.read_marks: ReadMarks = {}   # where read_from last was in each segment
        self.durable_listeners: list[Callable[[int], None]] = []

    def durable(self, seq: int) -> None:
        """The gateway says records up to ``seq`` are on disk."""
        self.durable_seq = seq
        for listener in self.durable_listeners:
            listener(seq)

    def read_from(self, seq: int):
        return read_durable(self._segments(), seq, lambda: self.durable_seq, self.read_marks)

    def set_cursor(self, acked: int) -> None:
        self.cursor = acked
        self.pipe.send(("cursor", acked))

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for _number, path in list_segments(self.directory):
            first = self.first_seqs.get(path)
            if first is None:
                try:
                    first = first_seq_of(path)
                except (OSError, JournalError):    # just created (no frame yet) or just dropped
                    continue
                self.first_seqs[path] = first
            found.append((first, path))
        return found


def child_main(conn: Connection, spec: UplinkSpec, cursor: int, durable_seq: int, urgent: list[int]) -> None:
    """The uplink process: ``Uplink.run`` until the gateway says stop or goes away."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    os.nice(UPLINK_NICE)
    pipe = Pipe(conn)
    feed = JournalFeed(Path(spec.journal_dir), cursor, durable_seq, pipe)
    docs: queue.SimpleQueue[dict] = queue.SimpleQueue()

    def heartbeat() -> dict:
        while not docs.empty():               # a late answer to an earlier request
            docs.get_nowait()
        pipe.send(("heartbeat",))
        try:
            return docs.get(timeout=HEARTBEAT_WAIT_S)
        except queue.Empty:
            return {"error": "the gateway did not answer within {} s".format(HEARTBEAT_WAIT_S)}

    uplink = Uplink(spec.settings, spec.topics, feed, window=spec.window, heartbeat_s=spec.heartbeat_s,
                    max_rate=spec.max_rate, heartbeat=heartbeat,
                    # More than the verifier accepts is cut here, not copied whole to the gateway.
                    on_command=lambda payload: pipe.send(("command", payload[:MAX_COMMAND_BYTES + 1])),
                    on_health=lambda text: pipe.send(("health", text)),
                    on_link=lambda up: pipe.send(("link", up)))
    for seq in urgent:
        uplink.notify_urgent(seq)
    threading.Thread(target=_listen, args=(conn, feed, uplink, docs), name="gateway-pipe", daemon=True).start()
    uplink.run()
    uplink.stop()                             # acknowledgements settled, cursor told, offline
    conn.close()


def _listen(conn: Connection, feed: JournalFeed, uplink: Uplink, docs: queue.SimpleQueue) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):           # the gateway is gone
            break
        if message[0] == "feed":
            for seq in message[2]:
                uplink.notify_urgent(seq)
            feed.durable(message[1])
        elif message[0] == "heartbeat":
            docs.put(message[1])
        elif message[0] == "stop":
            break
    uplink.request_stop()


if __name__ == "__main__":
    _conn = Connection(int(sys.argv[1]))
    child_main(_conn, *_conn.recv())
