"""Which records a journal folder holds: each segment's sequence range.

At start-up ``recover`` rebuilds the index from the segment files (the
journal's theory of operation, controller/journal/journal.py): only the
last segment is scanned; a torn tail is cut, other damage quarantined (left
in place, writing going on in a new segment), and the sequence and chain
resume from the last good record.  ``read_durable`` reads records from a
sequence number on, for the journal and for the uplink's process, which
has only the folder.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from controller.errors import JournalError
from controller.journal import records as R
from controller.journal.segments import Bad, iter_frames, list_segments, read_segment, scan_tail, stream_frames
from drivers import cose
from drivers.atomicfile import fsync_dir
from drivers.errors import DriverError


class Segment:
    """One segment file as the journal tracks it."""

    __slots__ = ("number", "path", "first_seq", "last_seq", "size")

    def __init__(self, number: int, path: Path, first_seq: int, last_seq: int, size: int):
        self.number = number
        self.path = path
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.size = size


def _seq_of(record: bytes, where: str) -> int:
    try:
        msg = cose.decode(record)
    except DriverError as e:
        raise JournalError("{}: {}".format(where, e)) from None
    if msg.seq is None:
        raise JournalError("{}: record has no sequence header".format(where))
    return msg.seq


def first_seq_of(path: Path) -> int:
    """The sequence number of a segment's first record."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    for item in iter_frames(head):
        if not isinstance(item, Bad):
            return _seq_of(item[1], str(path))
    raise JournalError("{}: no readable frame at its start; run `cabguard verify`".format(path))


ReadMarks = dict[Path, tuple[int, int]]   # segment -> (seq, offset) of the last frame read in it


def read_durable(segments: list[tuple[int, Path]], seq: int, durable_seq: Callable[[], int],
                 marks: ReadMarks | None = None) -> Iterator[tuple[int, bytes]]:
    """Records with sequence number >= ``seq`` and <= ``durable_seq()``, in order,
    from ``segments`` (``(first seq, path)``, oldest first); damaged frames are
    skipped, and a segment dropped by retention meanwhile is passed over.

    ``marks``, kept by the caller from read to read, remembers the last frame
    read in each segment; a read from that frame's seq on starts there, not at
    the segment's start.  Idle, the uplink reads each new record on its own:
    from the start, that cost about 0.4 s of CPU per record in a 16 MB segment."""
    firsts = [first for first, _path in segments]
    start = max(0, bisect_right(firsts, seq) - 1)
    if marks is not None and len(marks) > len(segments):   # forget segments retention dropped
        kept = {path for _first, path in segments}
        for path in [p for p in marks if p not in kept]:
            del marks[path]
    for _first, path in segments[start:]:
        mark = marks.get(path) if marks is not None else None
        try:
            for item in stream_frames(path, mark[1] if mark is not None and mark[0] <= seq else 0):
                if isinstance(item, Bad):
                    continue
                s = _seq_of(item[1], str(path))
                if s > durable_seq():
                    return
                if marks is not None:
                    marks[path] = (s, item[0])
                if s >= seq:
                    yield s, item[1]
        except FileNotFoundError:
            continue


class Recovered(NamedTuple):
    """What ``recover`` found in a journal folder that holds records."""
    segments: list[Segment]
    tail: cose.Message           # the last good record: the chain goes on from its tag
    last_seq: int
    found: dict[int, object]     # the "recovered" record's data
    quarantined: bool            # damage left in place: the next record starts a new segment


def recover(directory: Path) -> Recovered | None:
    """Index the segments, cut a torn tail, resume seq and chain; None for an empty journal."""
    listed = list_segments(directory)
    while listed:
        number, path = listed[-1]
        data = read_segment(path)
        tail = scan_tail(data)
        if tail.frames == 0 and (tail.damage is None or tail.torn):
            path.unlink()   # nothing good in it: a segment created just before a crash
            fsync_dir(directory)
            listed.pop()
            continue
        break
    if not listed:
        return None
    segments: list[Segment] = []
    first: int | None = None
    if tail.damage is not None and not tail.torn:
        # Corruption (a complete frame with a bad CRC included) is quarantined: kept in
        # place for verify, never cut; the chain resumes after the last good frame.
        goods = [item for item in iter_frames(data) if not isinstance(item, Bad)]
        first = _seq_of(goods[0][1], str(path)) if goods else None
        last_record = goods[-1][1] if goods else _last_good(listed[:-1])
        if last_record is None:   # or the resync gave up on a crafted segment (segments.py RESYNC_WORK)
            raise JournalError("{}: damaged from offset {} with no readable frame within the scan "
                               "budget; move it out of the journal folder and run `cabguard verify` on "
                               "it".format(path, tail.good_end))
        tail = tail._replace(last_record=last_record)
    for older_number, older in listed[:-1]:
        first = first_seq_of(older)
        segments.append(Segment(older_number, older, first, first, older.stat().st_size))
    for i in range(len(segments) - 1):
        segments[i].last_seq = segments[i + 1].first_seq - 1
    last_seq = _seq_of(tail.last_record, "{}: last good frame".format(path))
    last = cose.decode(tail.last_record)
    found: dict[int, object] = {R.RECOVERED_SEGMENT: number, R.RECOVERED_LAST_SEQ: last_seq}
    if tail.damage is not None:
        found[R.RECOVERED_OFFSET] = tail.good_end
        found[R.RECOVERED_CUT] = len(data) - tail.good_end if tail.torn else 0
        if tail.torn:
            with open(path, "r+b") as f:
                f.truncate(tail.good_end)
                os.fsync(f.fileno())
        else:
            found[R.RECOVERED_CORRUPT] = True
    if first is None:
        first = first_seq_of(path) if tail.frames else last_seq + 1
    size = tail.good_end if tail.torn else len(data)
    segments.append(Segment(number, path, first, last_seq, size))
    if segments[:-1]:
        segments[-2].last_seq = first - 1
    return Recovered(segments, last, last_seq, found,
                     tail.damage is not None and not tail.torn)


def _last_good(listed: list[tuple[int, Path]]) -> bytes | None:
    """The newest good record of these segments (a later one held none)."""
    for _number, path in reversed(listed):
        goods = [item for item in iter_frames(read_segment(path)) if not isinstance(item, Bad)]
        if goods:
            return goods[-1][1]
    return None
