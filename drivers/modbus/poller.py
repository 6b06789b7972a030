"""The bus poller: one thread per RS-485 bus, snapshots for the scan loop.

Theory of operation
-------------------
``BusPoller`` owns one port and the devices on it.  Its thread polls each
device on its own period (staggered at start), reading the profile's blocks
(at most 125 registers each), decoding them with the profile, and publishing
the device's values and communication twins into a flat snapshot under a
short lock.  The scan loop never waits for the bus: ``copy_into(image,
indices)`` copies the newest snapshot (a few hundred integers, microseconds)
and ``events()`` drains what happened since the last scan.

Timeouts follow each device's measured turnaround (EWMA) plus the wire time
of the request and answer, clamped to [floor, ceiling].  Until a device has
answered once its timeout is the ceiling (first contact: a slow BMS must
get the chance to show how slow it is), with no retry; its first answer
sets the turnaround, later ones (late answers too, as the master sees them
arrive while it waits for a quiet line) average into it.  A failed read is
retried at most ``retries`` times, so a silent or exception-answering
device holds the bus at most ``(1 + retries) * timeout`` per block.  A
device goes offline after ``offline_after`` failed polls in a row and back
online after ``online_after`` good polls (hysteresis); its signals keep
their last good values while ``online`` is 0.

Coil writes are queued to the bus thread (``write_coils``), done between
polls, read back, and reported as events (``write_ok``, ``write_mismatch``,
``write_failed``).

A port that fails under a transaction (USB adapter pulled, simulator gone)
is closed and reopened with backoff (``REOPEN_FIRST_S`` doubling up to
``REOPEN_MAX_S``); meanwhile every poll fails at once, so the devices go
offline through the same hysteresis as a cut cable.  Once it is back, every
device is polled at once.  ``port_lost`` and ``port_reopened`` events say
so.  Should the thread die anyway (a bug), every device is marked offline
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
import math
import queue
import threading
import time
import traceback
from concurrent.futures import Future
from typing import Callable, Generator, NamedTuple

from drivers.errors import (BusError, ModbusCrcError, ModbusError, ModbusException,
                            ModbusFrameError, ModbusPortLost, ModbusTimeout, PortError)
from drivers.modbus import frames
from drivers.modbus.master import RtuMaster
from drivers.modbus.profiles import Profile, RegisterMap, load_profile
from drivers.modbus.sunspec import NotSunSpec, discover

# The twins' names in the order of controller.core.catalog.DEVICE_TWINS (drivers do not
# import controller; tests/test_modbus_bus.py checks they agree).
TWINS = ("online", "comm_ok", "comm_timeouts", "comm_crc", "comm_exc")
COUNTER_MASK = 0x7FFFFFFF  # counters wrap inside 31 bits, like every image value
ALIGN_MARGIN_S = 0.0015    # an aligned poll ends this long before the scan that reads it
REOPEN_FIRST_S = 0.1       # a lost port is tried again after this long ...
REOPEN_MAX_S = 0.5         # ... doubling up to this: a port back is in use within half a second


class PolledDevice(NamedTuple):
    instance: str              # the site config's name: "io", "bms1", ...
    profile: Profile | str     # a Profile or a profile name / path
    address: int               # Modbus slave address 1..247
    period_ms: int             # poll period


class BusOptions(NamedTuple):
    baud: int = 115200
    parity: str = "N"          # N E O: must match the devices' framing
    stopbits: int = 1
    timeout_floor_ms: float = 20.0
    timeout_ceiling_ms: float = 500.0
    retries: int = 1
    offline_after: int = 2
    online_after: int = 2


class BusEvent(NamedTuple):
    device: str
    kind: str      # online offline exception mismatch write_ok write_mismatch write_failed
                   # port_lost port_reopened (device is then the port)
    code: int      # Modbus exception code, or the write's token
    detail: str


Job = Callable[[RtuMaster], Generator[None, None, object]]


# ``comm_exc`` while the bus's port is gone (docs/signals.md): not a Modbus exception code.
PORT_LOST = 256


class _QueuedJob(NamedTuple):
    job: Job
    future: Future


class _State:
    """One device's bookkeeping, owned by the bus thread."""

    def __init__(self, spec: PolledDevice, profile: Profile, slot: int, due: float) -> None:
        self.instance = spec.instance
        self.profile = profile
        self.address = spec.address
        self.period = spec.period_ms / 1000
        self.regmap: RegisterMap | None = None if profile.sunspec else profile.bind()
        self.names = [n for n, _u, _s in profile.signal_specs()]
        self.slot = slot                 # first index in the flat snapshot
        self.due = due
        self.online = 0
        self.good_run = 0
        self.bad_run = 0
        self.ok = self.timeouts = self.crc = self.exc = self.exc_count = 0
        self.not_implemented = 0
        self.mismatch = False            # a SunSpec discovery failure was reported
        self.latency = 0.0               # EWMA of turnaround beyond wire time, seconds
        self.answered = False            # it answered once: latency is measured, not guessed
        self.poll_s = 0.0                # EWMA of a whole poll of this device, seconds
        self.reason = ""                 # why the last read failed, for the offline event

    def twins(self) -> list[int]:
        return [self.online, self.ok, self.timeouts, self.crc, self.exc]


class BusPoller:
    """Polls the devices of one bus in its own thread.

    >>> poller = BusPoller("/dev/ttyUSB0", [PolledDevice("io", "io-dvt", 1, 100),
    ...                                     PolledDevice("bms1", "bms16-vendor", 2, 1000)])  # doctest: +SKIP
    >>> indices = poller.indices(catalog)     # once, after building the catalog  # doctest: +SKIP
    >>> poller.start()                        # doctest: +SKIP
    >>> poller.copy_into(image, indices)      # every scan: non-blocking  # doctest: +SKIP
    """

    def __init__(self, port: str, devices: list[PolledDevice], options: BusOptions = BusOptions()) -> None:
        self.port = port
        self.options = options
        self._states: list[_State] = []
        names: list[str] = []
        seen = set()
        now = time.monotonic()
        for i, spec in enumerate(devices):
            if spec.instance in seen or not 1 <= spec.address <= 247 or spec.period_ms <= 0:
                raise BusError("bus {}: device {!r} is repeated or has a bad address/period".format(
                    port, spec.instance))
            seen.add(spec.instance)
            profile = spec.profile if isinstance(spec.profile, Profile) else load_profile(spec.profile)
            stagger = spec.period_ms / 1000 * i / max(1, len(devices))
            self._states.append(_State(spec, profile, len(names), now + stagger))
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
        self._grid: tuple[float, float] | None = None   # the scan loop's (anchor, period), see align()
        self._jobs: collections.deque[_QueuedJob] = collections.deque()   # bus thread only
        self._job_turn = False   # a poll ran since the last job step (bus thread only)
        self._steps: Generator[None, None, object] | None = None          # the first job's, once begun
        self._reopen_at = 0.0            # when to try a lost port again (bus thread only)
        self._reopen_delay = REOPEN_FIRST_S
        self._lost_at = self._opened_at = 0.0
        self._death: str | None = None   # why the bus thread died, until restart()

    # ---- the scan loop's side (never blocks on the bus) --------------------

    def device_specs(self) -> list[tuple[str, list[tuple[str, str, int]]]]:
        """``(instance, profile.signal_specs())`` per device, in bus order: the runtime
        passes each to controller.core.catalog.device_signals() to build the catalog."""
        return [(st.instance, st.profile.signal_specs()) for st in self._states]

    def indices(self, catalog) -> list[int]:
        """Image index for each snapshot value; build once after the catalog."""
        return [catalog.lookup(name, "bus " + self.port) for name in self.names]

    def copy_into(self, image: list[int], indices: list[int]) -> None:
        """Copy the newest snapshot into ``image`` (a short lock, no I/O)."""
        with self._lock:
            for i, v in zip(indices, self._flat):
                image[i] = v

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(zip(self.names, self._flat))

    def events(self) -> list[BusEvent]:
        """Everything that happened since the last call (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
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
        return {st.instance: {"online": st.online, "ok": st.ok, "timeouts": st.timeouts,
                              "crc": st.crc, "exceptions": st.exc_count, "last_exception": st.exc,
                              "not_implemented": st.not_implemented,
                              "latency_ms": st.latency * 1000, "timeout_ms": self._timeout(st, 0) * 1000}
                for st in self._states}

    def open(self) -> "BusPoller":
        """Open the port; PortError names it and the ports that exist if it is missing."""
        if self._master is None:
            self._master = self._open_master()
        return self

    def _open_master(self) -> RtuMaster:
        opts = self.options
        return RtuMaster(self.port, opts.baud, opts.parity, opts.stopbits)

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
        """Why the bus thread died, if it did (not stopped); the runtime checks every scan."""
        thread = self._thread
        if thread is None or thread.is_alive() or self._stop.is_set():
            return None
        return self._death or "the bus thread ended"

    def restart(self) -> None:
        """A new bus thread after ``crashed()``; it reopens the port itself if needed."""
        self._death = None
        self._start_thread()

    def _start_thread(self) -> None:
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
            for queued in self._jobs:
                queued.future.set_exception(BusError("bus {} stopped before the job ended".format(self.port)))
            self._jobs.clear()
            self._steps = None

    def _all_offline(self, why: str) -> None:
        """No thread polls them: their values are no longer known."""
        for st in self._states:
            st.good_run = 0
            if st.online:
                st.online = 0
                self._events.put(BusEvent(st.instance, "offline", st.exc, why))
            self._publish(st, None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._check_port()
            st = min(self._states, key=lambda s: s.due)
            due = st.due if self._master is not None else min(st.due, self._reopen_at)
            wait = due - time.monotonic()
            # A job steps while no poll is due, and on a busy wire (a poll always due)
            # every other transaction, so a scan neither delays polls much nor starves.
            if self._jobs and self._commands.empty() and (wait > 0 or self._job_turn):
                self._job_turn = False
                self._job_step()
                continue
            # A queued write (a siren) goes ahead of a due poll: on a busy wire a poll is
            # always due, and the write would wait for ever.
            try:
                command = self._commands.get(timeout=wait) if wait > 0 else self._commands.get_nowait()
            except queue.Empty:
                command = None
            if isinstance(command, _QueuedJob):
                self._jobs.append(command)
            elif command is not None:
                self._write(*command)
            if wait > 0 or command is not None:
                continue
            if st.due > time.monotonic():
                continue  # it was time to reopen the port, not to poll
            started = time.monotonic()
            self._job_turn = True
            self.poll(st)
            now = time.monotonic()
            st.poll_s += (now - started - st.poll_s) / 8
            st.due = self._next_due(st, now)

    def _check_port(self) -> None:
        """Close a port that failed; reopen a lost one when its backoff is up."""
        master = self._master
        if master is not None and master.lost:
            master.close()
            self._master = None
            now = time.monotonic()
            # A port that flaps (a loose plug) backs off too; one that held a while starts afresh.
            held = now - self._opened_at > 10 * REOPEN_MAX_S
            self._reopen_delay = REOPEN_FIRST_S if held else min(REOPEN_MAX_S, 2 * self._reopen_delay)
            self._lost_at = now
            self._reopen_at = now + self._reopen_delay
            self._events.put(BusEvent(self.port, "port_lost", 0, "{}; its devices fall silent, reopening "
                                      "every {:.1f} s at most".format(master.lost, REOPEN_MAX_S)))
            self._silence_all(master.lost)
        if self._master is not None or time.monotonic() < self._reopen_at:
            return
        try:
            self._master = self._open_master()
        except PortError:
            self._reopen_delay = min(REOPEN_MAX_S, 2 * self._reopen_delay)
            self._reopen_at = time.monotonic() + self._reopen_delay
            return
        self._opened_at = time.monotonic()
        for st in self._states:  # poll everyone now: the devices come back one period sooner
            st.due = min(st.due, self._opened_at)
        self._events.put(BusEvent(self.port, "port_reopened", 0, "port {} is back after {:.1f} s".format(
            self.port, time.monotonic() - self._lost_at)))

    def _silence_all(self, why: str) -> None:
        """The port itself is gone: no answer can come, so every device is offline
        now, not after the hysteresis that rides out a glitch, and says why on its
        ``comm_exc`` twin (PORT_LOST, outside Modbus's exception codes 1..255)."""
        for st in self._states:
            st.exc = PORT_LOST
            st.reason = why
            st.bad_run = max(st.bad_run, self.options.offline_after - 1)
            self._failed(st)

    def _next_due(self, st: _State, now: float) -> float:
        """When to poll ``st`` next: on its own period, keeping its phase; or, for a
        device polled once per scan of an aligned loop, just early enough that its
        answer is in the snapshot when the scan copies it."""
        grid = self._grid
        if grid is not None and abs(st.period - grid[1]) < 1e-6:
            anchor, period = grid
            lead = st.poll_s + ALIGN_MARGIN_S
            return anchor + (math.floor((now + lead - anchor) / period) + 1) * period - lead
        due = st.due + st.period
        if due < now:  # overrun: skip missed slots, keep the phase
            due += ((now - due) // st.period + 1) * st.period
        return due

    def align(self, anchor_s: float, period_s: float) -> None:
        """Phase-lock the devices polled once per scan to the scan loop, whose scans
        start at ``anchor_s + k * period_s`` (time.monotonic seconds).  Without it a
        fresh reading can wait almost a whole period in the snapshot before a scan
        sees it; with it a door opening reaches ``step()`` within one poll period
        plus one transaction.  Safe to call from the loop's thread at any time."""
        self._grid = (anchor_s, period_s)

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
        """Read and decode one device now; update its twins and the snapshot."""
        try:
            if st.regmap is None:
                st.regmap = st.profile.bind(discover(lambda a, n: self._read(st, frames.READ_HOLDING, a, n),
                                                     st.profile))
            blocks = [self._read_split(st, frames.READ_FUNCTION[b.table], b.start, b.count)
                      for b in st.regmap.blocks]
            values, missing = st.regmap.decode(blocks)
        except NotSunSpec as e:
            self._failed(st)
            if not st.mismatch:  # once per episode, not every period
                self._events.put(BusEvent(st.instance, "mismatch", 0, str(e)))
            st.mismatch = True
            return False
        except ModbusError:
            self._failed(st)
            return False
        st.not_implemented = (st.not_implemented + missing) & COUNTER_MASK
        st.mismatch = False
        st.bad_run = 0
        st.good_run += 1
        if not st.online and st.good_run >= self.options.online_after:
            st.online = 1
            self._events.put(BusEvent(st.instance, "online", 0, "answering"))
        if st.exc:
            st.exc = 0
        self._publish(st, [values[n] for n in st.names])
        return True

    def _failed(self, st: _State) -> None:
        st.good_run = 0
        st.bad_run += 1
        if st.online and st.bad_run >= self.options.offline_after:
            st.online = 0
            if st.profile.sunspec:
                st.regmap = None  # rediscover: it may be a different device when it returns
            self._events.put(BusEvent(st.instance, "offline", st.exc, "{} failed polls; last: {}".format(
                st.bad_run, st.reason)))
        self._publish(st, None)

    def _publish(self, st: _State, values: list[int] | None) -> None:
        n = len(st.names)
        with self._lock:
            if values is not None:
                self._flat[st.slot:st.slot + n] = values
            self._flat[st.slot + n:st.slot + n + len(TWINS)] = st.twins()

    def _timeout(self, st: _State, count: int) -> float:
        if not st.answered:
            return self.options.timeout_ceiling_ms / 1000
        wire = frames.wire_seconds(8 + 5 + 2 * count, self.options.baud)
        t = wire + 4 * st.latency + 0.002
        return min(self.options.timeout_ceiling_ms / 1000, max(self.options.timeout_floor_ms / 1000, t))

    def _port(self) -> RtuMaster:
        if self._master is None:
            raise ModbusPortLost("port {} is gone (unplugged?); trying to reopen it".format(self.port))
        return self._master

    def _read_split(self, st: _State, function: int, start: int, count: int) -> list[int]:
        """A block in as many reads as the baud needs for each to fit the ceiling."""
        values: list[int] = []
        for first, n in frames.split_reads(function, start, count, self.options.baud,
                                           self.options.timeout_ceiling_ms / 1000):
            values += self._read(st, function, first, n)
        return values

    def _read(self, st: _State, function: int, start: int, count: int) -> list[int]:
        """One block read with bounded retries; counts every attempt on the twins."""
        timeout = self._timeout(st, count)
        retries = self.options.retries if st.answered else 0  # first contact already waits the ceiling
        for attempt in range(1 + retries):
            try:
                master = self._port()
                master.wait_quiet()
                t0 = time.perf_counter()
                values = master.read_block(st.address, function, start, count, timeout)
            except ModbusPortLost as e:
                st.timeouts = (st.timeouts + 1) & COUNTER_MASK
                st.reason = str(e)
                raise  # no retry: the port is closed and reopened between polls
            except ModbusTimeout:
                st.timeouts = (st.timeouts + 1) & COUNTER_MASK
                st.reason = "no answer within {:.0f} ms".format(timeout * 1000)
                error: ModbusError = ModbusTimeout()
            except (ModbusCrcError, ModbusFrameError) as e:
                st.crc = (st.crc + 1) & COUNTER_MASK
                st.reason = str(e)
                error = e
            except ModbusException as e:
                self._exception(st, e.code)
                st.reason = str(e)
                st.answered = True
                raise  # the device answered: retrying will not change its mind
            else:
                self._learn(st, time.perf_counter() - t0 - frames.wire_seconds(8 + 5 + 2 * count,
                                                                                 self.options.baud))
                st.ok = (st.ok + 1) & COUNTER_MASK
                return values
            finally:
                self._late_answer()
            if self._stop.is_set() or attempt == retries:
                raise error

    @staticmethod
    def _learn(st: _State, turnaround: float) -> None:
        """A measured turnaround: the first one is the estimate, later ones average in."""
        turnaround = max(0.0, turnaround)
        st.latency = st.latency + (turnaround - st.latency) / 8 if st.answered else turnaround
        st.answered = True

    def _late_answer(self) -> None:
        """Learn from an answer the master saw arrive after its request had timed out."""
        master = self._master
        if master is None or master.late is None:
            return
        address, turnaround = master.late
        master.late = None
        for st in self._states:
            if st.address == address:
                self._learn(st, turnaround)

    def _exception(self, st: _State, code: int) -> None:
        st.exc_count = (st.exc_count + 1) & COUNTER_MASK
        if code != st.exc:
            self._events.put(BusEvent(st.instance, "exception", code,
                                      "Modbus exception {} from address {}".format(code, st.address)))
        st.exc = code

    def _write(self, token: int, st: _State, addresses: dict[str, int], values: dict[str, int]) -> None:
        try:
            for name, coil in sorted(addresses.items()):
                self._port().write_coil(st.address, coil, bool(values[name]), self._timeout(st, 0))
        except ModbusError as e:
            if isinstance(e, ModbusException):
                self._exception(st, e.code)
            self._events.put(BusEvent(st.instance, "write_failed", token, str(e) or "timeout"))
            return
        if not self.poll(st):
            self._events.put(BusEvent(st.instance, "write_failed", token, "readback failed"))
            return
        got = self.snapshot()
        wrong = [n for n in values if got[st.instance + "." + n] != (1 if values[n] else 0)]
        kind = "write_mismatch" if wrong else "write_ok"
        self._events.put(BusEvent(st.instance, kind, token, ", ".join(wrong) or "read back"))

