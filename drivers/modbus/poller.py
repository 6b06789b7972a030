"""The bus poller: one thread per RS-485 bus, snapshots for the scan loop.

Theory of operation
-------------------
``BusPoller`` owns one port and the devices on it.  Its thread polls each
device on its own period, reading the profile's blocks
(at most 125 registers each), decoding them with the profile, and publishing
the device's values and communication twins into a flat snapshot under a
short lock.  The scan loop never waits for the bus: ``copy_into(image,
indices)`` copies the newest snapshot (a few hundred integers, microseconds)
and ``events()`` drains what happened since the last scan.

A poll is a sequence of reads (a device's blocks, long ones split for the
baud and the periods), taken one at a time: what the thread does next —
which device's next read, a queued write or job first, a shorter period's
poll between a battery's reads, a poll aligned with the scan loop — is
decided by ``Schedule`` (drivers/modbus/schedule.py), a pure function of the
time it is given.  What each transaction's outcome
means for its device — the adaptive
timeout, retries, first contact, the online/offline hysteresis, the
counters — is decided by the device's ``DeviceLink`` (drivers/modbus/link.py),
a pure state machine; this module does the I/O around it.  A device's
signals keep their last good values while ``online`` is 0.

The port and its master are built by a factory (``master_factory``, by
default ``open_master``: an ``RtuMaster`` on the bus's serial port), as
gpiozero injects pin factories; the poller calls it again to reopen a lost
port.

Coil writes are queued to the bus thread (``write_coils``), done between
reads, read back, and reported as events (``WRITE_OK``, ``WRITE_MISMATCH``,
``WRITE_FAILED``; the kinds are in drivers/modbus/events.py).

A port that fails under a transaction (USB adapter pulled, simulator gone)
is closed and reopened with backoff (``PortLink``: 0.1 s doubling up to
0.5 s); meanwhile every device is offline, its ``comm_exc`` twin at
``PORT_LOST``.  Once it is back, every device is polled at once.
``PORT_LOST`` and ``PORT_REOPENED`` events say so.  Should the thread die anyway (a bug), every device is marked offline
and ``crashed()`` tells the runtime, which journals it and calls
``restart()``.

Other bus work — a technician's ``bus scan`` while the gateway runs — is a
*job* (``run_job``): a generator that does one short transaction per step.
The bus thread runs a step only while no poll is due, so the cabinet's
devices keep their poll schedule (late by at most one step) and the job's
answer arrives on a Future.
"""

from __future__ import annotations

import collections
import collections.abc
import queue
import threading
import time
import traceback
from concurrent.futures import Future
from typing import Callable, Generator, NamedTuple, Sequence

from drivers.errors import (BusError, ModbusCrcError, ModbusError, ModbusException,
                            ModbusFrameError, ModbusPortLost, ModbusTimeout, PortError)
from drivers.modbus import frames
from drivers.modbus.budget import read_limit_s
from drivers.modbus.events import (OFFLINE, ON_PACE, PORT_LOST as PORT_LOST_EVENT, PORT_REOPENED, STRETCHED,
                                   WRITE_FAILED, WRITE_MISMATCH, WRITE_OK, BusEvent)
from drivers.modbus.link import (COUNTER_MASK, GARBLED, PORT_GONE, REFUSED, REOPEN_MAX_US, TIMEOUT, DeviceLink,
                                 PortLink)
from drivers.modbus.options import BusOptions
from drivers.modbus.master import RtuMaster
from drivers.modbus.profiles import Profile, RegisterMap, load_profile
from drivers.modbus.schedule import COMMAND, JOB, WAIT, Schedule
from drivers.modbus.sunspec import NotSunSpec, discover, read_facts

# The twins' names in the order of controller.core.catalog.DEVICE_TWINS (drivers do not
# import controller; tests/test_modbus_bus.py checks they agree).
TWINS = ("online", "comm_ok", "comm_timeouts", "comm_crc", "comm_exc")
# A coil write's request and echo (8 characters each) fit in the wire time of a 2-register read.
WRITE_REGISTERS = 2


class PolledDevice(NamedTuple):
    instance: str              # the site config's name: "io", "bms1", ...
    profile: Profile | str     # a Profile or a profile name / path
    address: int               # Modbus slave address 1..247
    period_ms: int             # poll period


Job = Callable[[RtuMaster], Generator[None, None, object]]
MasterFactory = Callable[[str, BusOptions], RtuMaster]


def open_master(port: str, options: BusOptions) -> RtuMaster:
    """The default master factory: an RtuMaster on the serial port ``port``."""
    return RtuMaster(port, options.baud, options.parity, options.stopbits, options.rs485)


def _now_us() -> int:
    """The monotonic clock in whole microseconds (the bus thread's time base)."""
    return time.monotonic_ns() // 1000


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class _QueuedJob(NamedTuple):
    job: Job
    future: Future


class _State:
    """One device's bookkeeping, owned by the bus thread: its link and its schedule."""

    def __init__(self, spec: PolledDevice, profile: Profile, index: int, slot: int, options: BusOptions) -> None:
        self.index = index               # in the bus's Schedule
        self.instance = spec.instance
        self.profile = profile
        self.address = spec.address
        self.link = DeviceLink(spec.instance, spec.address, options)
        self.regmap: RegisterMap | None = None if profile.sunspec else profile.bind()
        self.names = [n for n, _u, _s in profile.signal_specs()]
        self.slot = slot                 # first index in the flat snapshot
        self.not_implemented = 0
        self.plan: tuple[RegisterMap | None, list[Piece]] = (None, [])   # BusPoller._plan's
        self.reading: _Reading | None = None   # the poll in progress, between its reads
        # The plan and answers of the last poll decoded (its values are the snapshot's), and
        # its not-implemented count: a quiet device answers the same bytes poll after poll,
        # and those need no decoding again.
        self.decoded: tuple[list[Piece], list[bytes], int] | None = None


class Piece(NamedTuple):
    """One read of a poll: a block, or a piece of a block split for the baud and the periods."""
    block: int                 # index in the register map's blocks
    read: frames.Read          # built once: the request with its CRC, the answer's length


class _Reading:
    """A poll in progress: its reads (``pieces``) and the answers (data bytes) of the done ones."""

    def __init__(self, pieces: list[Piece], started_us: int) -> None:
        self.pieces = pieces
        self.answers: list[bytes] = []
        self.started_us = started_us


class _Asked(collections.abc.Sequence):
    """One value per device, computed when Schedule.next reads it: most calls read none
    (nothing is due) or one (the device it picks), not every device's at every call."""

    def __init__(self, states: list[_State], value: Callable[[_State], object]) -> None:
        self._states = states
        self._value = value

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, index: int) -> object:
        return self._value(self._states[index])


class BusPoller:
    """Polls the devices of one bus in its own thread.

    >>> poller = BusPoller("/dev/ttyUSB0", [PolledDevice("io", "io-dvt", 1, 100),
    ...                                     PolledDevice("bms1", "bms16-vendor", 2, 1000)])  # doctest: +SKIP
    >>> indices = poller.indices(catalog)     # once, after building the catalog  # doctest: +SKIP
    >>> poller.start()                        # doctest: +SKIP
    >>> poller.copy_into(image, indices)      # every scan: non-blocking  # doctest: +SKIP
    """

    def __init__(self, port: str, devices: list[PolledDevice], options: BusOptions = BusOptions(),
                 master_factory: MasterFactory = open_master) -> None:
        self.port = port
        self.options = options
        self.master_factory = master_factory
        self._states: list[_State] = []
        names: list[str] = []
        seen = set()
        for i, spec in enumerate(devices):
            if spec.instance in seen or not 1 <= spec.address <= 247 or spec.period_ms <= 0:
                raise BusError("bus {}: device {!r} is repeated or has a bad address/period".format(
                    port, spec.instance))
            seen.add(spec.instance)
            profile = spec.profile if isinstance(spec.profile, Profile) else load_profile(spec.profile)
            self._states.append(_State(spec, profile, i, len(names), options))
            names += [spec.instance + "." + n for n, _u, _s in profile.signal_specs()]
            names += [spec.instance + "." + t for t in TWINS]
        self.names = names
        self._flat = [0] * len(names)
        self._lock = threading.Lock()
        self._events: queue.SimpleQueue[BusEvent] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: RtuMaster | None = None
        self._tokens = 0
        # What is due when (drivers/modbus/schedule.py); the bus thread's, but for align().
        self._schedule = Schedule([d.period_ms * 1000 for d in devices], _now_us())
        self._read_us = _Asked(self._states, lambda st: st.link.expected_us(self._next_read(st)))
        # Which devices are online, for Schedule.next: a plain list (read at C speed, once per
        # transaction), kept by _publish, which follows every change of a link's ``online``.
        self._online = [False] * len(self._states)
        self._jobs: collections.deque[_QueuedJob] = collections.deque()   # bus thread only
        self._steps: Generator[None, None, object] | None = None          # the first job's, once begun
        self._reopen = PortLink()        # when to try a lost port again (bus thread only)
        # No read longer than the ceiling, nor than the shortest poll period (drivers/modbus/budget.py).
        self._read_limit = read_limit_s(options.timeout_ceiling_ms / 1000, [d.period_ms / 1000 for d in devices])
        self._death: str | None = None   # why the bus thread died, until restart()
        self._ended = False              # the bus thread's last act: crashed() asks no more of a live one

    # ---- the scan loop's side (never blocks on the bus) --------------------

    def device_specs(self) -> list[tuple[str, list[tuple[str, str, int]]]]:
        """``(instance, profile.signal_specs())`` per device, in bus order: the runtime
        passes each to controller.core.catalog.device_signals() to build the catalog."""
        return [(st.instance, st.profile.signal_specs()) for st in self._states]

    def indices(self, catalog) -> Sequence[int]:
        """Image index for each snapshot value; build once after the catalog.  A range when
        they follow one another (the catalog lists a bus's devices so), copied as a slice."""
        found = [catalog.lookup(name, "bus " + self.port) for name in self.names]
        span = range(found[0], found[0] + len(found)) if found else range(0)
        return span if found == list(span) else found

    def copy_into(self, image: list[int], indices: Sequence[int]) -> None:
        """Copy the newest snapshot into ``image`` (a short lock, no I/O)."""
        with self._lock:
            if isinstance(indices, range):
                image[indices.start:indices.stop] = self._flat
            else:
                for i, v in zip(indices, self._flat):
                    image[i] = v

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(zip(self.names, self._flat))

    def events(self) -> list[BusEvent]:
        """Everything that happened since the last call (non-blocking; the scan loop is the
        only reader, so what ``empty()`` says stays true until it takes it)."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    def write_coils(self, instance: str, values: dict[str, int]) -> int:
        """Queue coil writes (e.g. ``{"k1": 1}``) with readback; returns a token that the
        result event (``write_ok`` / ``write_mismatch`` / ``write_failed``) carries as code."""
        st = self._state(instance)
        addresses = {name: (st.regmap or st.profile.bind()).coil(name) for name in values}
        self._tokens += 1
        self._commands.put((self._tokens, st, addresses, dict(values)))
        return self._tokens

    def run_job(self, job: Job) -> Future:
        """Queue ``job(master)`` for the bus thread, which runs its steps between polls;
        the Future holds the generator's return value (or its ModbusError / BusError)."""
        if self._thread is None or not self._thread.is_alive():
            raise BusError("bus {} is not being polled (port missing?), so it cannot run this now".format(
                self.port))
        future: Future = Future()
        self._commands.put(_QueuedJob(job, future))
        return future

    def stats(self) -> dict[str, dict[str, float]]:
        """Per-device counters and timing, for status pages and the bench."""
        return {st.instance: {"online": st.link.online, "ok": st.link.ok, "timeouts": st.link.timeouts,
                              "crc": st.link.crc, "exceptions": st.link.exc_count, "last_exception": st.link.exc,
                              "not_implemented": st.not_implemented,
                              "latency_ms": st.link.latency_us / 1000, "timeout_ms": st.link.timeout_us(0) / 1000,
                              "poll_gap_ms": self._schedule.gap_us[st.index] / 1000}
                for st in self._states}

    def open(self) -> "BusPoller":
        """Open the port; PortError names it and the ports that exist if it is missing."""
        if self._master is None:
            self._master = self.master_factory(self.port, self.options)
        return self

    def poll_cycle(self) -> list[bool]:
        """Poll every device once now, in the calling thread (before ``start()``; the bench
        and start-up checks use it).  True for each device that answered."""
        if self._thread is not None:
            raise BusError("bus {}: poll_cycle() is for a poller whose thread is not running".format(
                self.port))
        self.open()
        return [self.poll(st) for st in self._states]

    def register_maps(self) -> dict[str, RegisterMap | None]:
        """Each device's bound register map (None for a SunSpec device not yet discovered)."""
        return {st.instance: st.regmap for st in self._states}

    def start(self) -> "BusPoller":
        """Open the port (PortError if it is missing) and start the bus thread."""
        self.open()
        self._start_thread()
        return self

    def crashed(self) -> str | None:
        """Why the bus thread died, if it did (not stopped); the runtime checks every scan,
        so a live thread costs one attribute (its ``_run`` sets ``_ended`` as it ends)."""
        if not self._ended or self._stop.is_set():
            return None
        return self._death or "the bus thread ended"

    def restart(self) -> None:
        """A new bus thread after ``crashed()``; it reopens the port itself if needed."""
        self._death = None
        self._start_thread()

    def _start_thread(self) -> None:
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="bus-" + self.port, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (within one transaction's timeout) and close the port."""
        self._stop.set()
        self._commands.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._master is not None:
            self._master.close()

    def _state(self, instance: str) -> _State:
        for st in self._states:
            if st.instance == instance:
                return st
        raise BusError("no device {!r} on bus {}".format(instance, self.port))

    # ---- the bus thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug: the devices fall silent, the runtime restarts us
            traceback.print_exc()
            self._death = "{}: {}".format(type(e).__name__, e)
            self._all_offline("the bus thread died ({})".format(self._death))
        finally:
            try:
                for queued in self._jobs:
                    queued.future.set_exception(BusError("bus {} stopped before the job ended".format(self.port)))
                self._jobs.clear()
                self._steps = None
            finally:
                self._ended = True   # whatever failed above, crashed() must see the thread gone

    def _all_offline(self, why: str) -> None:
        """No thread polls them: their values are no longer known."""
        for st in self._states:
            self._report(st.link.unpolled(why))
            self._publish(st, None)

    def _report(self, events: list[BusEvent]) -> None:
        for event in events:
            self._events.put(event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            master = self._master
            if master is None or master.lost:   # an open, working port needs no check per transaction
                self._check_port()
            now = _now_us()
            action = self._schedule.next(now, not self._commands.empty(), bool(self._jobs),
                                         None if self._master is not None else self._reopen.reopen_at,
                                         self._read_us, self._online)
            if action.kind == JOB:
                self._schedule.job_stepped()
                self._job_step()
            elif action.kind == COMMAND:
                self._command(self._commands.get_nowait())
            elif action.kind == WAIT:
                try:   # a command (a siren) that comes meanwhile is taken at once
                    self._command(self._commands.get(timeout=max(0, action.at_us - now) / 1e6))
                except queue.Empty:
                    pass
            else:
                self._poll_due(self._states[action.device], now)

    def _command(self, command: object) -> None:
        if isinstance(command, _QueuedJob):
            self._jobs.append(command)
        elif command is not None:   # None: stop() wakes the thread
            self._write(*command)

    def _poll_due(self, st: _State, now: int) -> None:
        """The next read of a device whose time (``now``) has come; once its poll is done,
        schedule the next one.  Between a poll's reads the schedule may put others (a shorter
        period's poll, a queued write)."""
        started = st.reading.started_us if st.reading is not None else now
        done = self._poll_step(st, now)
        if done is None:
            self._schedule.reading(st.index)
        else:
            was = self._schedule.stretched[st.index]
            self._schedule.polled(st.index, started, _now_us(), not done, bool(st.link.online))
            if self._schedule.stretched[st.index] != was:
                self._report([self._pace_news(st)])

    def _pace_news(self, st: _State) -> BusEvent:
        """Whether ``st`` is polled on its period, said when that changes (Schedule._pace)."""
        gap_s, period_s = self._schedule.gap_us[st.index] / 1e6, self._schedule.period_us[st.index] / 1e6
        if self._schedule.stretched[st.index]:
            return BusEvent(st.instance, STRETCHED, 0, (
                "polled every {:.1f} s on average, not every {:g} s: the bus needs more than its wire "
                "(its values are that old; raise the baud, lengthen poll_ms or move devices to another "
                "bus: see `cabguard config check`)").format(gap_s, period_s))
        return BusEvent(st.instance, ON_PACE, 0, "polled on its period again (every {:.1f} s)".format(gap_s))

    def _check_port(self) -> None:
        """Close a port that failed; reopen a lost one when its backoff is up."""
        master = self._master
        if master is not None and master.lost:
            master.close()
            self._master = None
            self._reopen.lost(_now_us())
            self._events.put(BusEvent(self.port, PORT_LOST_EVENT, 0, "{}; its devices fall silent, reopening "
                                      "every {:.1f} s at most".format(master.lost, REOPEN_MAX_US / 1e6)))
            for st in self._states:
                self._failed(st, st.link.port_gone(master.lost))
        if self._master is not None or _now_us() < self._reopen.reopen_at:
            return
        try:
            self._master = self.master_factory(self.port, self.options)
        except PortError:
            self._reopen.open_failed(_now_us())
            return
        opened = _now_us()
        gone_us = self._reopen.opened(opened)
        self._schedule.port_reopened(opened)
        self._events.put(BusEvent(self.port, PORT_REOPENED, 0, "port {} is back after {:.1f} s".format(
            self.port, gone_us / 1e6)))

    def align(self, anchor_s: float, period_s: float) -> None:
        """Phase-lock the devices polled once per scan to the scan loop, whose scans
        start at ``anchor_s + k * period_s`` (time.monotonic seconds).  Without it a
        fresh reading can wait almost a whole period in the snapshot before a scan
        sees it; with it a door opening reaches ``step()`` within one poll period
        plus one transaction.  Safe to call from the loop's thread at any time."""
        self._schedule.align(_us(anchor_s), _us(period_s))

    def _job_step(self) -> None:
        """One step of the first queued job; its Future gets the result when it ends."""
        first = self._jobs[0]
        try:
            if self._steps is None:
                self._steps = first.job(self._port())
            next(self._steps)
            return
        except StopIteration as done:
            first.future.set_result(done.value)
        except Exception as e:  # the job's failure (or bug) is its caller's news, not the bus's
            first.future.set_exception(e)
        self._jobs.popleft()
        self._steps = None

    def poll(self, st: _State) -> bool:
        """Read and decode one device now (all its reads, or the rest of a poll in progress);
        update its twins and the snapshot.  True if it answered."""
        while True:
            done = self._poll_step(st, _now_us())
            if done is not None:
                return done

    def _poll_step(self, st: _State, now_us: int) -> bool | None:
        """One read of ``st``'s poll (a SunSpec discovery first, if due), beginning a poll if
        none is in progress: None while reads remain, else whether the poll succeeded (the
        values decoded and published)."""
        try:
            if st.reading is None:
                discovering = st.regmap is None
                if discovering:
                    def read_holding(start: int, count: int) -> list[int]:
                        return self._read(st, frames.READ_HOLDING, start, count)
                    layout = discover(read_holding, st.profile)
                    st.regmap = st.profile.bind(layout, read_facts(read_holding, st.profile, layout))
                st.reading = _Reading(self._plan(st), now_us)
                if discovering:
                    return None   # a step of its own: a few reads of the model chain
            reading = st.reading
            read = reading.pieces[len(reading.answers)].read
            reading.answers.append(self._transact(st, read.count, read.request, read.expected))
            if len(reading.answers) < len(reading.pieces):
                return None
            st.reading = None
            values, missing = self._decode(st, reading)
        except NotSunSpec as e:
            self._failed(st, st.link.not_sunspec(str(e)))
            return False
        except ModbusError:
            self._failed(st, st.link.poll_failed())
            return False
        st.not_implemented = (st.not_implemented + missing) & COUNTER_MASK
        news = st.link.poll_ok()
        if news:   # most polls have none
            self._report(news)
        self._publish(st, values)
        return True

    def _decode(self, st: _State, reading: _Reading) -> tuple[list[int] | None, int]:
        """The signal values of a whole poll (in ``st.names`` order) and its count of
        not-implemented points; values None when the answers are those of the last decoded
        poll of the same plan (they decode to the values already published): a quiet bus's
        polls then cost their I/O and the twins, not a decode each."""
        last = st.decoded
        if last is not None and last[0] is reading.pieces and last[1] == reading.answers:
            return None, last[2]
        blocks: list[list[int]] = [[] for _ in st.regmap.blocks]
        for piece, data in zip(reading.pieces, reading.answers):
            blocks[piece.block] += frames.values(piece.read, data)
        decoded, missing = st.regmap.decode(blocks)
        values = [decoded[n] for n in st.names]
        st.decoded = (reading.pieces, reading.answers, missing)
        return values, missing

    def _failed(self, st: _State, events: list[BusEvent]) -> None:
        st.reading = None   # a poll in progress is over
        if st.profile.sunspec and any(e.kind == OFFLINE for e in events):
            st.regmap = None  # rediscover: it may be a different device when it returns
        self._report(events)
        self._publish(st, None)

    def _publish(self, st: _State, values: list[int] | None) -> None:
        n = len(st.names)
        self._online[st.index] = bool(st.link.online)
        with self._lock:
            if values is not None:
                self._flat[st.slot:st.slot + n] = values
            self._flat[st.slot + n:st.slot + n + len(TWINS)] = st.link.twins()

    def _port(self) -> RtuMaster:
        if self._master is None:
            raise ModbusPortLost("port {} is gone (unplugged?); trying to reopen it".format(self.port))
        return self._master

    def _plan(self, st: _State) -> list[Piece]:
        """The reads of one poll of ``st`` (none before a SunSpec device is discovered): its
        blocks in as many reads as the baud needs for each to fit the ceiling and the
        shortest poll period, so the devices polled often are polled between them; kept
        with the register map it was planned for."""
        if st.plan[0] is not st.regmap:
            st.plan = (st.regmap, [] if st.regmap is None else [
                Piece(i, frames.read(st.address, frames.READ_FUNCTION[b.table], first, n))
                for i, b in enumerate(st.regmap.blocks)
                for first, n in frames.split_reads(frames.READ_FUNCTION[b.table], b.start, b.count,
                                                   self.options.baud, self._read_limit)])
        return st.plan[1]

    def _next_read(self, st: _State) -> int:
        """Registers of ``st``'s next read: of its poll in progress, or the first of a new one."""
        reading = st.reading
        if reading is not None:
            return reading.pieces[len(reading.answers)].read.count
        pieces = self._plan(st)
        return pieces[0].read.count if pieces else 0

    def _read(self, st: _State, function: int, start: int, count: int) -> list[int]:
        """One block read with the retries its link allows."""
        read = frames.read(st.address, function, start, count)
        return frames.values(read, self._transact(st, count, read.request, read.expected))

    def _transact(self, st: _State, count: int, request: bytes, expected: int, write: bool = False) -> bytes:
        """The data part of the answer to ``request`` (``expected`` bytes long), with the retries
        the device's link allows (a read, or a write: writing a coil is idempotent); ``count``
        registers size its timeout.  Every attempt goes to the link."""
        link = st.link
        timeout_us = link.timeout_us(count)
        attempts, attempt = link.attempts(write), 1
        while True:
            try:
                master = self._port()
                master.wait_quiet()
                t0 = time.perf_counter()
                answer = master.transact(request, expected, timeout_us / 1e6)
            except ModbusPortLost as e:
                link.failed(PORT_GONE, str(e))
                raise  # no retry: the port is closed and reopened between polls
            except ModbusTimeout:
                link.failed(TIMEOUT, "no answer within {:.0f} ms".format(timeout_us / 1000))
                error: ModbusError = ModbusTimeout()
            except (ModbusCrcError, ModbusFrameError) as e:
                link.failed(GARBLED, str(e))
                error = e
            except ModbusException as e:
                self._report(link.failed(REFUSED, str(e), e.code))
                raise  # the device answered: retrying will not change its mind
            else:
                link.answered_in(_us(time.perf_counter() - t0), count)
                return answer
            finally:   # the check inline: a late answer is rare, this runs every transaction
                if self._master is not None and self._master.late is not None:
                    self._late_answer(self._master)
            if self._stop.is_set() or attempt >= attempts:
                raise error
            attempt += 1

    def _late_answer(self, master: RtuMaster) -> None:
        """Learn from an answer ``master`` saw arrive after its request had timed out."""
        address, turnaround = master.late
        master.late = None
        for st in self._states:
            if st.address == address:
                st.link.late(_us(turnaround))

    def _write(self, token: int, st: _State, addresses: dict[str, int], values: dict[str, int]) -> None:
        try:
            for name, coil in sorted(addresses.items()):
                on = bool(values[name])
                self._transact(st, WRITE_REGISTERS, frames.write_coil_request(st.address, coil, on),
                               frames.WRITE_ANSWER_LENGTH, write=True)
        except ModbusError as e:
            self._events.put(BusEvent(st.instance, WRITE_FAILED, token, str(e) or "timeout"))
            return
        if not self.poll(st):
            self._events.put(BusEvent(st.instance, WRITE_FAILED, token, "readback failed"))
            return
        got = self.snapshot()
        wrong = [n for n in values if got[st.instance + "." + n] != (1 if values[n] else 0)]
        kind = WRITE_MISMATCH if wrong else WRITE_OK
        self._events.put(BusEvent(st.instance, kind, token, ", ".join(wrong) or "read back"))

