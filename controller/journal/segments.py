"""Segment files: frames of ``[4-byte BE length][4-byte BE CRC-32][record]``.

Shared by the journal (writing, recovery, reading from a cursor) and by
``cabguard verify``.  A segment is ``NNNNNNNN.seg`` (its number, eight
digits) in the journal folder; the record of a frame is a tagged COSE_Mac0
or COSE_Encrypt0 (drivers.cose).
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

from drivers.safefile import open_binary, read_bytes

HEAD = struct.Struct(">II")
HEAD_LEN = HEAD.size
MAX_RECORD = 1 << 20     # a record larger than this is a damaged length field
SUFFIX = ".seg"
# No segment the journal writes is larger (16 MB and one record, by default):
# a larger file in the folder is not a segment of ours, and is not read whole.
SEGMENT_LIMIT = 64 << 20


def frame(record: bytes) -> bytes:
    return HEAD.pack(len(record), zlib.crc32(record)) + record


def segment_name(number: int) -> str:
    return "{:08d}{}".format(number, SUFFIX)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(number, path)`` of every segment, oldest first."""
    found = []
    for p in directory.iterdir():
        stem = p.name[:-len(SUFFIX)]
        if p.name.endswith(SUFFIX) and len(stem) == 8 and stem.isdigit():
            found.append((int(stem), p))
    return sorted(found)


def read_segment(path: Path) -> bytes:
    """A whole segment file: a regular file of at most SEGMENT_LIMIT bytes
    (OSError, or drivers.safefile.InputFileError naming the file)."""
    return read_bytes(path, "journal segment", SEGMENT_LIMIT)


class Bad(NamedTuple):
    """A stretch of a segment that is not a good frame."""
    offset: int
    length: int
    reason: str


def _frame_at(data: bytes, pos: int) -> tuple[int, bytes, str]:
    """``(end, record, "")`` for a good frame at ``pos``, else ``(0, b"", reason)``."""
    if len(data) - pos < HEAD_LEN:
        return 0, b"", "incomplete frame header ({} bytes)".format(len(data) - pos)
    length, crc = HEAD.unpack_from(data, pos)
    if length == 0 or length > MAX_RECORD:
        return 0, b"", "impossible frame length {}".format(length)
    end = pos + HEAD_LEN + length
    if end > len(data):
        return 0, b"", "frame of {} bytes runs past the end of the file".format(length)
    record = data[pos + HEAD_LEN:end]
    if zlib.crc32(record) != crc:
        return 0, b"", "CRC mismatch"
    return end, record, ""


# Where a frame header could start: a length of 1 to MAX_RECORD (big-endian),
# found by the regex engine rather than a Python loop over every byte.
_PLAUSIBLE = re.compile(rb"(?=\x00(?:[\x01-\x0f][\s\S]{2}|\x10\x00\x00|\x00[\x01-\xff][\s\S]|\x00\x00[\x01-\xff]))")
# A resync spends at most this much work per byte of the data (a candidate
# costs CANDIDATE_COST, plus the bytes its CRC covers), and at least two
# largest records' worth.  Real damage is found within a frame or two; a
# crafted segment with a plausible header at every offset would otherwise
# cost a CRC of up to 1 MB per byte (verify once took 90 s on 2 MB).
RESYNC_WORK = 8
CANDIDATE_COST = 64
GAVE_UP = -1


def resync_budget(data: bytes) -> list[int]:
    """The work one pass over ``data`` may spend resyncing (a mutable cell)."""
    return [RESYNC_WORK * len(data) + 2 * MAX_RECORD]


def _resync(data: bytes, pos: int, budget: list[int]) -> int:
    """The next offset after ``pos`` where a good frame starts, len(data) if
    none does, or GAVE_UP once ``budget`` is spent (not knowing is not "none")."""
    for m in _PLAUSIBLE.finditer(data, pos + 1, len(data) - HEAD_LEN):
        p = m.start()
        length = HEAD.unpack_from(data, p)[0]
        budget[0] -= CANDIDATE_COST + (length if p + HEAD_LEN + length <= len(data) else 0)
        if budget[0] < 0:
            return GAVE_UP
        if _frame_at(data, p)[0]:
            return p
    return len(data)


def iter_frames(data: bytes) -> Iterator[tuple[int, bytes] | Bad]:
    """Good frames as ``(offset, record)``; damage as ``Bad``, then go on.
    (``Bad`` is a tuple too: tell them apart with ``isinstance(item, Bad)``.)

    A frame whose length is plausible but whose CRC fails is skipped by its
    length; otherwise the scan looks for the next good frame byte by byte.
    """
    pos = 0
    n = len(data)
    budget = resync_budget(data)
    while pos < n:
        end, record, reason = _frame_at(data, pos)
        if end:
            yield pos, record
            pos = end
            continue
        if reason == "CRC mismatch":
            length = HEAD.unpack_from(data, pos)[0]
            nxt = pos + HEAD_LEN + length
            if _frame_at(data, nxt)[0] or nxt == n:
                yield Bad(pos, nxt - pos, reason)
                pos = nxt
                continue
        nxt = _resync(data, pos, budget)
        if nxt == GAVE_UP:
            yield Bad(pos, n - pos, reason + "; no frame found after it within the scan budget")
            return
        yield Bad(pos, nxt - pos, reason)
        pos = nxt


# stream_frames reads a segment STREAM_CHUNK at a time, a window that holds
# hundreds of the usual records; a longer frame, or damage that needs more
# of the file to tell where the next frame starts, grows the window up to
# STREAM_WINDOW: twice the largest frame, so that a stretch of damage that
# starts in a window's first half is decided inside the window.
STREAM_CHUNK = 64 << 10
STREAM_WINDOW = 2 * (HEAD_LEN + MAX_RECORD)


def stream_frames(path: Path, start: int = 0) -> Iterator[tuple[int, bytes] | Bad]:
    """``iter_frames`` over a segment file without holding it whole: memory
    stays near STREAM_CHUNK however long the segment (the uplink drains a
    week's backlog through this), and STREAM_WINDOW at most.  A frame still
    being written at the end of the file ends the stream, as ``iter_frames``
    reports it.  ``start``, the offset of a frame read before, skips what
    comes ahead of it."""
    with open_binary(path, "journal segment") as f:
        base, size = start, STREAM_CHUNK
        while True:
            f.seek(base)
            data = f.read(size)
            if not data:
                return
            last = len(data) < size                    # the window holds the file's end
            half = len(data) - HEAD_LEN - MAX_RECORD   # damage starting before this is decided here
            nxt = len(data)
            for item in iter_frames(data):
                if not isinstance(item, Bad):          # a good frame is whole wherever it starts
                    yield base + item[0], item[1]
                elif last or item.offset < half:
                    yield item._replace(offset=base + item.offset)
                else:                                  # perhaps a frame the window cuts: read on from it
                    nxt = item.offset
                    break
            if last:
                return
            # Nothing taken: the window starts with a frame longer than itself, or damage.
            size = STREAM_CHUNK if nxt else min(2 * size, STREAM_WINDOW)
            base += nxt


def _incomplete_at(data: bytes, pos: int) -> bool:
    """An unfinished frame at ``pos``: a short header, or a plausible length that runs
    past the end of the data.  A crash's write leaves only such a prefix of a frame."""
    if len(data) - pos < HEAD_LEN:
        return True
    length = HEAD.unpack_from(data, pos)[0]
    return 0 < length <= MAX_RECORD and pos + HEAD_LEN + length > len(data)


def could_be_torn(data: bytes, bad: Bad) -> bool:
    """Whether damage can be a crash's unfinished write: an incomplete final frame
    (a short header, a frame running past the end of the file) or a zero-filled
    end.  A complete frame with a bad CRC cannot: it was written whole, and
    something changed it since."""
    if bad.offset + bad.length != len(data):
        return False
    return data.count(0, bad.offset) == bad.length or _incomplete_at(data, bad.offset)


class Tail(NamedTuple):
    """What a start-up scan of the last segment found."""
    good_end: int            # offset after the last good frame
    last_record: bytes       # the last good record (b"" if none)
    frames: int
    torn: bool               # the damage runs to the end of the file: cut it
    damage: Bad | None       # the first damage, if any


def scan_tail(data: bytes) -> Tail:
    """Walk frames until the first damage; decide whether it is a torn tail.

    A crash can only leave an incomplete final frame or a zero-filled end
    (``could_be_torn``).  Anything else, a complete frame with a bad CRC
    included, is corruption, which is kept for ``verify`` to report.
    """
    pos, last, count = 0, b"", 0
    while pos < len(data):
        end, record, reason = _frame_at(data, pos)
        if not end:
            bad = Bad(pos, len(data) - pos, reason)
            torn = could_be_torn(data, bad)
            return Tail(pos, last, count, torn, bad)
        last = record
        count += 1
        pos = end
    return Tail(pos, last, count, False, None)


