"""stream_frames: the uplink's bounded-memory read of a segment equals the whole-file read."""

import os
import zlib

from controller.journal import segments
from controller.journal.segments import HEAD, MAX_RECORD, STREAM_CHUNK, STREAM_WINDOW, frame, iter_frames, stream_frames


def _segment(path, sizes, damage_at=None, torn=False):
    """Frames of the given record sizes; one CRC-damaged frame, a torn last frame if asked."""
    out = bytearray()
    for n, size in enumerate(sizes):
        record = bytes([n % 251]) * size
        f = bytearray(frame(record))
        if n == damage_at:
            f[-1] ^= 0xFF
        out += f
    if torn:
        out += HEAD.pack(100, zlib.crc32(b"x" * 100)) + b"x" * 40
    path.write_bytes(bytes(out))
    return path


def test_a_segment_several_windows_long_streams_as_it_reads_whole(tmp_path):
    # Records of up to the largest size straddle every window boundary.
    sizes = [1000 + (n * 7919) % 60000 for n in range(110)] + [MAX_RECORD, 5, MAX_RECORD // 3]
    path = _segment(tmp_path / "00000001.seg", sizes, damage_at=37, torn=True)
    assert os.path.getsize(path) > 3 * STREAM_WINDOW // 2
    assert list(stream_frames(path)) == list(iter_frames(path.read_bytes()))


def test_the_usual_records_stream_a_chunk_at_a_time(tmp_path, monkeypatch):
    """The uplink's memory while it drains: windows of STREAM_CHUNK over small records,
    one larger window only for the frame that needs it (issue 15)."""
    reads = []
    real_open = segments.open_binary

    def counting_open(*args, **kw):
        f = real_open(*args, **kw)
        real_read = f.read
        f.read = lambda n: reads.append(n) or real_read(n)
        return f

    monkeypatch.setattr(segments, "open_binary", counting_open)
    sizes = [200 + n % 300 for n in range(2000)] + [3 * STREAM_CHUNK] + [250] * 500
    path = _segment(tmp_path / "00000001.seg", sizes)
    assert list(stream_frames(path)) == list(iter_frames(path.read_bytes()))
    # 650 kB of records: ten chunks or so, and the large frame's window grown twice to hold it
    assert len(reads) > 10 and sorted(n for n in reads if n != STREAM_CHUNK) == [2 * STREAM_CHUNK, 4 * STREAM_CHUNK]


def test_a_short_segment_streams_in_one_window(tmp_path):
    path = _segment(tmp_path / "00000001.seg", [10, 20, 30], damage_at=1)
    assert list(stream_frames(path)) == list(iter_frames(path.read_bytes()))


def test_an_empty_segment_streams_nothing(tmp_path):
    path = tmp_path / "00000001.seg"
    path.write_bytes(b"")
    assert list(stream_frames(path)) == []


def test_readers_pass_over_a_damaged_frame(tmp_path):
    """A CRC-damaged frame mid-journal is skipped by every reader: a ``Bad`` is a
    tuple too, and was once taken for a record."""
    from controller.journal.evidence import verified_records
    from controller.journal.index import read_durable
    from drivers.keys import EpochKeys
    from tests.journaling import frame_span, frames, provision, write_records

    prov, _ = provision(tmp_path)
    seqs = write_records(tmp_path, prov, 12)
    path, offset, record = frames(tmp_path)[5]
    data = bytearray(path.read_bytes())
    data[offset + frame_span(record) - 1] ^= 0xFF        # the record's last byte: CRC mismatch
    path.write_bytes(bytes(data))

    read = [s for s, _r in read_durable([(0, path)], 0, lambda: seqs[-1])]
    assert len(read) == len(frames(tmp_path)) and seqs[-1] in read
    assert len(list(verified_records(tmp_path / "journal", EpochKeys(prov)))) == len(read)


def test_a_crafted_segment_cannot_make_the_resync_scan_quadratic(monkeypatch):
    """Every even offset of the crafted segment reads as a plausible ~1 MB frame:
    a byte-by-byte resync CRC'd a megabyte at each (verify took 90 s on 2 MB).
    The scan's work is bounded by the segment's length; it says it gave up."""
    from controller.journal import segments
    from tests.hostile import CRAFTED_SEGMENT

    crc_bytes = [0]
    real_crc32 = zlib.crc32

    class CountingZlib:
        @staticmethod
        def crc32(data, *rest):
            crc_bytes[0] += len(data)
            return real_crc32(data, *rest)

    monkeypatch.setattr(segments, "zlib", CountingZlib)
    for data in (CRAFTED_SEGMENT, b"\x00" * 64 + frame(b"good") + CRAFTED_SEGMENT):
        crc_bytes[0] = 0
        items = list(iter_frames(data))
        assert crc_bytes[0] <= segments.RESYNC_WORK * len(data) + 2 * MAX_RECORD
        assert "scan budget" in items[-1].reason and items[-1].offset + items[-1].length == len(data)
    assert (64, b"good") in items                      # a good frame before the junk is still found
    tail = segments.scan_tail(CRAFTED_SEGMENT)
    assert not tail.torn                               # not knowing is not a torn tail: nothing is cut


def test_a_read_from_a_later_seq_starts_where_the_last_read_was(tmp_path, monkeypatch):
    """read_durable with marks yields what it yields without them, from any seq
    (ahead, behind, in another segment, with a segment dropped), and a read of
    the next record starts at the frame the last read ended on: idle, the uplink
    reads each new record alone, and once re-read the whole segment for it."""
    from controller.journal import index
    from controller.journal.segments import list_segments
    from tests.journaling import provision, write_records

    prov, _ = provision(tmp_path)
    seqs = write_records(tmp_path, prov, 300, segment_bytes=16 << 10)
    segments = [(index.first_seq_of(p), p) for _n, p in list_segments(tmp_path / "journal")]
    assert len(segments) >= 3
    starts: list[int] = []
    stream = index.stream_frames
    monkeypatch.setattr(index, "stream_frames", lambda path, start=0: (starts.append(start), stream(path, start))[1])

    def read(seq, marks=None, durable=seqs[-1]):
        return list(index.read_durable(segments, seq, lambda: durable, marks))

    marks: index.ReadMarks = {}
    assert read(0, marks, durable=seqs[200]) == read(0, durable=seqs[200])
    starts.clear()
    assert read(seqs[201], marks) == read(seqs[201])
    assert starts[0] > 0                       # at the mark, not the segment's start
    for seq in (seqs[-1], seqs[5], seqs[150], seqs[-1], seqs[0], seqs[299]):
        assert read(seq, marks) == read(seq), seq
    _first, oldest = segments.pop(0)            # retention drops the oldest segment
    oldest.unlink()
    assert read(seqs[-1], marks) == read(seqs[-1]) and len(marks) <= len(segments)
