"""The journal: sealed, chained records in crash-safe segment files.

Theory of operation
-------------------
The scan loop calls ``append(record)``: it takes a lock, gives the record
the next sequence number and puts it on a queue, nothing more (O(1), never
touches the disk).  One writer thread drains the queue in batches: it adds
the chain fields (seq, boot, gateway, previous tag), seals each record
with the current epoch key (COSE_Mac0 or COSE_Encrypt0), frames it and
writes the batch with one ``write``.  A batch holding an alarm or critical
record (or a ``flush``) is fsync'd at once; otherwise the writer fsyncs at
most 1 s after the first unsynced write.  After each fsync ``durable_seq``
moves and the ``durable_listeners`` are called: a record reported durable
is on disk.

State that records announce (the core's mode and lock) goes through the
same queue with ``persist``: the writer saves the newest such state before
it writes any record of the batch, so a crash can leave that state ahead
of the journal but never behind it (docs/runtime.md, "Crash order").

Records the journal writes itself (genesis, recovered, key rotation,
checkpoint, retention, health) take their sequence number the same way,
so the queue order is always the sequence order.

At start-up only the last segment is scanned: a torn tail (an incomplete
final frame or a zero-filled end, as a crash leaves) is cut; any other
damage, a complete frame with a bad CRC included, is quarantined: left in
place for ``cabguard verify``, writing going on in a new segment, and the
"recovered" record is an alarm.  The sequence and the chain resume from the
last good record, the record key moves one epoch on, and the "recovered"
record says what was found.

Key rotation (docs/keys.md, "Rotation order"): the key_rotation record is
sealed with the old key and made durable before the new key file replaces
the old one, so a crash leaves the key file at most one epoch past the
journal's tail, whose last record then announces it; a start that finds a
rotation announced but the key not moved finishes it.

Disk budget: when the segments outgrow it, whole segments go, oldest
first, but only those whose records have all been acknowledged upstream:
a record above the cursor is never deleted.  Over budget with nothing sent
left to drop, the journal is full: it records a critical health event and
refuses info records (telemetry, the look-only console) from then on,
keeping warnings and above as long as the disk takes them, until the
uplink's acknowledgements let retention make room.  A retention record
names every dropped range so that ``verify`` can tell retention from
deletion.  See docs/journal.md.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import cbor2

from controller.core.events import ALARM, CRITICAL, INFO, WARNING
from controller.errors import JournalError
from controller.journal import records as R
from controller.journal.index import ReadMarks, Segment, read_durable, recover
from controller.journal.segments import frame, list_segments, segment_name
from drivers import cose
from drivers.atomicfile import fsync_dir, write_atomic
from drivers.errors import DriverError
from drivers.keys import CoseKey, epoch_number, first_epoch, load_key, next_epoch, write_key
from drivers.safefile import loads_cbor

BATCH_S = 1.0
SEGMENT_BYTES = 16 << 20
CHECKPOINT_EVERY = 1000
DAY_MS = 86_400_000
ZERO_TAG = bytes(cose.TAG_LEN)
_MAX_BATCH = 4096

# Queue item kinds.
_RECORD, _ROTATE, _CHECKPOINT, _FLUSH, _STOP, _PERSIST = range(6)


def default_clock() -> R.Context:
    """Wall time not known to be synchronised; the runtime passes its own clock."""
    return R.Context(time.time_ns() // 1_000_000, False, time.monotonic_ns() // 1_000_000)


class Journal:
    """Open with ``Journal.open``; see the module's theory of operation."""

    def __init__(self, directory: Path, gateway: str, key: CoseKey, key_path: Path,
                 clock: Callable[[], R.Context], segment_bytes: int, budget_bytes: int | None,
                 checkpoint_every: int, on_durable: Callable[[int], None] | None):
        self.directory = directory
        self.gateway = gateway
        self._key = key
        self._key_path = key_path
        self._sealer = cose.Sealer(key.alg, key.kid, key.k)
        self._encoder = cose.Encoder()     # the writer thread's
        self._clock = clock
        self._segment_bytes = segment_bytes
        self._budget = budget_bytes
        self._checkpoint_every = checkpoint_every
        # Called with each new durable_seq from the writer thread (keep them short).
        self.durable_listeners: list[Callable[[int], None]] = [on_durable] if on_durable else []
        self.segments: list[Segment] = []
        self.boot = 0
        self._next_seq = 0
        self._prev_tag = ZERO_TAG
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._durable = threading.Condition()
        self.durable_seq = -1
        self._written_seq = -1
        self._since_checkpoint = 0
        self._since_boot = 0
        self.last_checkpoint: tuple[int, bytes] | None = None
        self._checkpoint_tag: tuple[int, bytes] | None = None
        self._epoch_day = -1
        self._tail: cose.Message | None = None   # the last record found at start-up
        self._over_budget = False
        self._full = False           # over budget with only unsent records: info is refused
        self.refused_while_full = 0  # info records refused since the journal became full
        self._fd = -1
        self.cursor = -1
        self.error: BaseException | None = None
        self._batch_waiters: list[threading.Event] = []
        self._read_marks: ReadMarks = {}   # where read_from last was in each segment
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)

    # ---- opening ---------------------------------------------------------

    @classmethod
    def open(cls, directory: str | Path, gateway: str, key_path: str | Path,
             provisioning: CoseKey | None = None, *, clock: Callable[[], R.Context] = default_clock,
             segment_bytes: int = SEGMENT_BYTES, budget_bytes: int | None = None,
             checkpoint_every: int = CHECKPOINT_EVERY,
             on_durable: Callable[[int], None] | None = None) -> "Journal":
        """Open (or create) the journal in ``directory`` and start its writer.

        ``key_path`` holds the current epoch key (0600); on a new gateway it
        does not exist yet and ``provisioning`` (the record key from
        ``cabguard keys gen``) starts epoch 0 and the genesis record.
        """
        directory = Path(directory)
        key_path = Path(key_path)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError("cannot create journal folder {}: {}".format(directory, e.strerror)) from None
        fresh_key = not key_path.exists()
        if fresh_key and list_segments(directory):
            raise JournalError("{} holds records but the record key {} is gone: the chain cannot go on "
                               "(move the journal aside, or restore the key file)".format(directory, key_path))
        if fresh_key:
            if provisioning is None:
                raise JournalError("no record key at {}: provision the gateway with the record key "
                                   "from `cabguard keys gen`".format(key_path))
            key = first_epoch(provisioning)
        else:
            key = load_key(key_path)
        j = cls(directory, gateway, key, key_path, clock, segment_bytes, budget_bytes,
                checkpoint_every, on_durable)
        j._start(fresh_key)
        return j

    def _start(self, fresh_key: bool) -> None:
        found = self._recover()
        state_path = self.directory / "state"
        self.boot = self._read_json(state_path, "boot", -1) + 1
        self.cursor = self._read_json(self.directory / "cursor", "acked", -1)
        write_atomic(state_path, json.dumps({"boot": self.boot}).encode())
        if fresh_key:
            write_key(self._key_path, self._key)
        finished = found is not None and self._finish_rotation(found)
        self._open_segment(self._next_seq, reuse_tail=True)
        self._epoch_day = self._clock().wall_ms // DAY_MS
        self._thread.start()
        if found is None:  # an empty journal
            # Epoch 0 with no records: provisioning was cut short by a crash.
            if fresh_key or epoch_number(self._key.kid) == 0:
                self._enqueue(_RECORD, R.make(R.GENESIS, INFO, self._clock(), {
                    R.GENESIS_KID: self._key.kid, R.GENESIS_ALG: self._key.alg}), True)
            else:
                self._enqueue(_RECORD, R.make(R.RECOVERED, CRITICAL, self._clock(),
                                              {R.RECOVERED_LAST_SEQ: -1}), True)
            return
        if not finished:
            self._enqueue(_ROTATE, R.ROTATE_BOOT, False)
        alarm = R.RECOVERED_CORRUPT in found or R.RECOVERED_KEY_MISMATCH in found
        self._enqueue(_RECORD, R.make(R.RECOVERED, ALARM if alarm else INFO, self._clock(), found), True)

    def _finish_rotation(self, found: dict[int, object]) -> bool:
        """Complete a rotation a crash cut short; True if the key moved on here.

        The rotation record (sealed with the old key) is durable before the new
        key file replaces the old one, so after a crash the key file is the
        tail's epoch or the one after it.  A tail that is a rotation record under
        the key we hold announced the next epoch and the key file never moved:
        move it now.  Any other key is not this journal's: say so (an alarm)."""
        key_epoch, tail_epoch = epoch_number(self._key.kid), epoch_number(self._tail.kid)
        if key_epoch == tail_epoch:
            try:
                tail = cbor2.loads(self._tail.verify(self._key.k))
            except (DriverError, ValueError):
                tail = None
            if isinstance(tail, dict) and tail.get(R.TYPE) == R.KEY_ROTATION \
                    and tail[R.DATA][R.ROTATION_NEW_KID] == next_epoch(self._key).kid:
                self._rotate()
                return True
        elif key_epoch != tail_epoch + 1:
            found[R.RECOVERED_KEY_MISMATCH] = self._tail.kid
        return False

    def _recover(self) -> dict[int, object] | None:
        """The segments' index rebuilt (controller/journal/index.py), seq and chain
        resumed; returns the recovered record's data, or None for an empty journal."""
        recovered = recover(self.directory)
        if recovered is None:
            return None
        self.segments = recovered.segments
        self._tail = recovered.tail
        self._prev_tag = recovered.tail.tag
        self._next_seq = recovered.last_seq + 1
        self.durable_seq = self._written_seq = recovered.last_seq
        if recovered.quarantined:
            self._fd = -2  # do not append after damage: the next segment starts fresh
        return recovered.found

    @staticmethod
    def _read_json(path: Path, field: str, default: int) -> int:
        try:
            value = json.loads(path.read_bytes())[field]
        except FileNotFoundError:
            return default
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise JournalError("{}: damaged ({}); it holds {{\"{}\": N}}".format(path, e, field)) from None
        if not isinstance(value, int):
            raise JournalError("{}: '{}' must be an integer".format(path, field))
        return value

    def _open_segment(self, first_seq: int, reuse_tail: bool) -> None:
        last = self.segments[-1] if self.segments else None
        if reuse_tail and last is not None and self._fd != -2 and last.size < self._segment_bytes:
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
            return
        number = last.number + 1 if last else 0
        path = self.directory / segment_name(number)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fsync_dir(self.directory)
        self.segments.append(Segment(number, path, first_seq, first_seq - 1, 0))

    # ---- the loop's side --------------------------------------------------

    def _enqueue(self, kind: int, item: object, urgent: bool) -> int:
        with self._lock:
            if self._closed:
                raise JournalError("the journal is closed")
            if self.error is not None:
                raise JournalError("the journal writer stopped: {}".format(self.error))
            seq = self._next_seq
            self._next_seq += 1
            self._queue.put((kind, seq, item, urgent))
        return seq

    def append(self, record: dict[int, object], urgent: bool | None = None) -> int:
        """Queue a record (from controller.journal.records) and return its sequence
        number.  Never blocks on the disk; alarm and critical records are
        fsync'd at once (``urgent`` overrides).  The journal owns ``record``.
        A full journal (see ``health()``) refuses an info record: it returns
        -1 and the record is only counted (``refused_while_full``)."""
        severity: int = record.get(R.SEVERITY, INFO)  # type: ignore[assignment]
        if self._full and severity < WARNING:
            with self._lock:
                self.refused_while_full += 1
            return -1
        if urgent is None:
            urgent = severity >= ALARM
        return self._enqueue(_RECORD, record, urgent)

    def persist(self, save: Callable[[], None]) -> None:
        """Have the writer call ``save`` (e.g. write the core's mode to its
        file) before it writes any record appended after this call.  Of the
        calls queued together only the newest runs: each saves a whole state.
        If ``save`` raises, the writer stops (see ``error``)."""
        with self._lock:
            if self._closed:
                raise JournalError("the journal is closed")
            self._queue.put((_PERSIST, -1, save, False))

    def rotate_key(self) -> int:
        """Move the record key one epoch on now (the installer's ``keys rotate``);
        returns the sequence number of the key-rotation record."""
        return self._enqueue(_ROTATE, R.ROTATE_COMMAND, True)

    def checkpoint(self) -> int:
        """Queue a checkpoint record now (e.g. for the uplink's heartbeat);
        ``last_checkpoint`` becomes its ``(seq, tag)`` once durable."""
        return self._enqueue(_CHECKPOINT, None, True)

    def flush(self, timeout: float | None = None) -> bool:
        """Make everything appended so far durable; False on timeout or if
        the writer has failed (see ``error``)."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return self.error is None
            self._queue.put((_FLUSH, -1, done, True))
        if self.error is not None:
            self._release_waiters()
        return done.wait(timeout) and self.error is None

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        with self._durable:
            return self._durable.wait_for(lambda: self.durable_seq >= seq or self.error is not None,
                                          timeout) and self.durable_seq >= seq

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, fsync, stop the writer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put((_STOP, -1, None, True))
        self._thread.join(timeout)

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def next_seq(self) -> int:
        return self._next_seq

    # ---- the uplink's side ------------------------------------------------

    def read_from(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Durable records with sequence number >= ``seq``, in order, as
        ``(seq, tagged COSE bytes)``.  Damaged frames are skipped."""
        return read_durable([(s.first_seq, s.path) for s in self.segments], seq, lambda: self.durable_seq,
                            self._read_marks)

    def opened_from(self, seq: int) -> Iterator[dict]:
        """Durable records with sequence number >= ``seq`` as written, for a
        person at the gateway (the console's ``journal`` view): a COSE_Mac0's
        payload as it stands, not verified (`cabguard verify` checks MACs and
        chain, with the record key), a COSE_Encrypt0 opened with the current
        epoch key; one sealed under an older epoch key is left out."""
        for _seq, data in self.read_from(seq):
            key = self._key
            try:
                msg = cose.decode(data)
                if msg.encrypted and msg.kid != key.kid:
                    continue
                rec = loads_cbor(msg.verify(key.k) if msg.encrypted else msg.body)
            except (DriverError, ValueError):
                continue
            if isinstance(rec, dict):
                yield rec

    def set_cursor(self, acked: int) -> None:
        """Record that every record up to ``acked`` is acknowledged upstream (atomic)."""
        if acked < self.cursor:
            raise JournalError("cursor cannot move back from {} to {}".format(self.cursor, acked))
        write_atomic(self.directory / "cursor", json.dumps({"acked": acked}).encode())
        self.cursor = acked
        if self._full:   # wake the writer: retention may make room now, and info be taken again
            with self._lock:
                if not self._closed:
                    self._queue.put((_FLUSH, -1, threading.Event(), False))

    def is_sent(self, seq: int) -> bool:
        return seq <= self.cursor

    def health(self) -> dict[str, int | bool]:
        return {"bytes": sum(s.size for s in self.segments), "budget": self._budget or 0,
                "over_budget": self._over_budget, "full": self._full, "durable_seq": self.durable_seq,
                "backlog": max(0, self.durable_seq - self.cursor), "boot": self.boot,
                "writer_failed": self.error is not None}

    # ---- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported through .error, append() and the waiters
            self.error = e
            with self._durable:
                self._durable.notify_all()
            self._release_waiters()

    def _release_waiters(self) -> None:
        """Wake every flush() in the failed batch or still queued: the writer is gone."""
        for waiter in self._batch_waiters:
            waiter.set()
        while True:
            try:
                kind, _seq, item, _urgent = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == _FLUSH:
                item.set()

    def _loop(self) -> None:
        unsynced_since: float | None = None
        while True:
            timeout = None if unsynced_since is None else max(0.0, unsynced_since + BATCH_S - time.monotonic())
            try:
                items = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                self._sync()
                unsynced_since = None
                continue
            while len(items) < _MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._batch_waiters = [item for kind, _s, item, _u in items if kind == _FLUSH]
            urgent, stop = self._write_batch(items)
            if urgent or (unsynced_since is not None and time.monotonic() - unsynced_since >= BATCH_S):
                self._sync()
                unsynced_since = None
            elif unsynced_since is None and self._written_seq > self.durable_seq:
                unsynced_since = time.monotonic()
            for waiter in self._batch_waiters:
                waiter.set()
            if stop:
                os.close(self._fd)
                return

    def _write_batch(self, items: list) -> tuple[bool, bool]:
        buf: list[bytes] = []
        size = 0
        seg = self.segments[-1]
        urgent = stop = False
        saves = [item for kind, _s, item, _u in items if kind == _PERSIST]
        if saves:
            saves[-1]()   # the newest state, on disk before any record of this batch
        for kind, seq, item, urg in items:
            if kind == _PERSIST:
                continue
            if kind == _FLUSH:
                urgent = True
                continue
            if kind == _STOP:
                stop = urgent = True
                continue
            rec = self._record_for(kind, item)
            urgent = urgent or urg
            data = frame(self._seal(seq, rec))
            if seg.size + size + len(data) > self._segment_bytes and seg.size + size > 0:
                self._write(buf)
                seg.size += size
                buf, size = [], 0
                seg = self._roll(seq)
            buf.append(data)
            size += len(data)
            seg.last_seq = seq
            self._written_seq = seq
            if kind == _ROTATE:
                # The rotation record, sealed with the old key, is on disk before the new key
                # replaces it: a crash leaves the key at most one epoch past the journal's tail,
                # and that tail announces it (docs/keys.md, "Rotation order").
                self._write(buf)
                seg.size += size
                buf, size = [], 0
                self._sync()
                self._rotate()
        self._write(buf)
        seg.size += size
        if stop:   # records queued from here on would never be written
            return urgent, stop
        self._enforce_budget()
        self._since_checkpoint += sum(1 for it in items if it[0] == _RECORD)
        if self._since_checkpoint >= self._checkpoint_every:
            self._since_checkpoint = 0
            self._enqueue_internal(_CHECKPOINT, None, False)
        day = self._clock().wall_ms // DAY_MS
        if day != self._epoch_day:
            self._epoch_day = day
            self._enqueue_internal(_ROTATE, R.ROTATE_DAY, False)
        return urgent, stop

    def _enqueue_internal(self, kind: int, item: object, urgent: bool) -> None:
        try:
            self._enqueue(kind, item, urgent)
        except JournalError:   # closing: the final flush is already queued
            pass

    def _record_for(self, kind: int, item: object) -> dict[int, object]:
        if kind == _RECORD:
            rec = item  # type: ignore[assignment]
        elif kind == _ROTATE:
            rec = R.make(R.KEY_ROTATION, INFO, self._clock(), {
                R.ROTATION_OLD_KID: self._key.kid, R.ROTATION_NEW_KID: next_epoch(self._key).kid,
                R.ROTATION_REASON: item})
        else:
            rec = R.make(R.CHECKPOINT, INFO, self._clock(), {
                R.CHECKPOINT_SINCE_BOOT: self._since_boot,
                R.CHECKPOINT_FIRST_SEQ: self.segments[0].first_seq,
                R.CHECKPOINT_BYTES: sum(s.size for s in self.segments)})
        return rec  # type: ignore[return-value]

    def _seal(self, seq: int, rec: dict[int, object]) -> bytes:
        rec[R.SEQ] = seq
        rec[R.BOOT] = self.boot
        rec[R.GATEWAY] = self.gateway
        rec[R.PREV] = self._prev_tag
        message, tag = self._sealer.seal(self._encoder.encode(rec), seq)
        self._prev_tag = tag
        self._since_boot += 1
        if rec[R.TYPE] == R.CHECKPOINT:
            self._checkpoint_tag = (seq, tag)
        return message

    def _rotate(self) -> None:
        """One epoch on: persist the new key (replacing the old file), forget the old one."""
        new = next_epoch(self._key)
        write_key(self._key_path, new)
        self._key = new
        self._sealer = cose.Sealer(new.alg, new.kid, new.k)

    def _write(self, buf: list[bytes]) -> None:
        if buf:
            os.write(self._fd, b"".join(buf))

    def _sync(self) -> None:
        if self._written_seq <= self.durable_seq:
            return
        os.fdatasync(self._fd)
        self._set_durable(self._written_seq)

    def _set_durable(self, seq: int) -> None:
        with self._durable:
            self.durable_seq = seq
            if self._checkpoint_tag is not None and self._checkpoint_tag[0] <= seq:
                self.last_checkpoint = self._checkpoint_tag
            self._durable.notify_all()
        for listener in self.durable_listeners:
            listener(seq)

    def _roll(self, first_seq: int) -> Segment:
        """Close the full segment (durably) and start the next one."""
        os.fdatasync(self._fd)
        os.close(self._fd)
        self._set_durable(self._written_seq)
        self._open_segment(first_seq, reuse_tail=False)
        return self.segments[-1]

    def _enforce_budget(self) -> None:
        """Drop sent segments, oldest first, while over budget; never one that
        holds a record above the cursor (docs/journal.md, "Disk budget")."""
        if self._budget is None:
            return
        total = sum(s.size for s in self.segments)
        for seg in list(self.segments[:-1]):
            if total <= self._budget or seg.last_seq > self.cursor:
                break
            total -= self._drop(seg)
        over = total > self._budget
        if over and not self._full:
            self._full = True
            self._enqueue_internal(_RECORD, R.health(self._clock(), R.HEALTH_JOURNAL_FULL,
                "journal {} bytes over its budget of {} with records not yet sent upstream: none is "
                "deleted; info records are refused until the uplink catches up (check the broker link)".format(
                    total - self._budget, self._budget), CRITICAL), True)
        elif not over and self._full:
            self._full = False
            self._enqueue_internal(_RECORD, R.health(self._clock(), R.HEALTH_JOURNAL_FULL,
                "journal back under its budget: {} info records were refused while it was full".format(
                    self.refused_while_full), WARNING), True)
            with self._lock:
                self.refused_while_full = 0
        self._over_budget = over

    def _drop(self, seg: Segment) -> int:
        seg.path.unlink()
        fsync_dir(self.directory)
        self.segments.remove(seg)
        self._enqueue_internal(_RECORD, R.make(R.RETENTION, INFO, self._clock(), {
            R.RETENTION_FIRST: seg.first_seq, R.RETENTION_LAST: seg.last_seq}), False)
        return seg.size
