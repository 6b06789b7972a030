"""The journal at start-up (controller/journal/index.py): a torn tail is cut, other
damage quarantined with an alarm, a crash in provisioning or mid-rotation finished,
and a key that does not follow the journal is an alarm."""

import pytest

from controller.core import events as ev
from controller.journal import records as R
from controller.journal.verify import verify_dir
from tests.journaling import event_record, frames, open_journal, payloads, provision, write_records


def test_torn_tail_is_cut_and_recorded_at_start_up(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 10)
    path, _off, _rec = frames(tmp_path)[-1]
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01\x00\x12\x34")     # half a frame header and no record
    warn = verify_dir(tmp_path / "journal", prov)
    assert warn.ok and warn.warnings[0]["kind"] == "torn_tail"
    with open_journal(tmp_path) as j:
        assert j.next_seq == 11 + 2           # rotation + recovered queued
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok and not report.warnings
    recovered = payloads(tmp_path, prov)[-1]
    assert recovered[R.TYPE] == R.RECOVERED and recovered[R.DATA][R.RECOVERED_CUT] == 6


@pytest.mark.parametrize("where", ["last frame", "lone frame of the last segment"])
def test_a_complete_frame_with_a_bad_crc_at_the_end_is_quarantined_not_cut(tmp_path, where):
    """A crash leaves an incomplete frame or zeros, never a whole frame with a wrong
    CRC: that one is tampering (or rot).  It is kept in place, the next start says so
    with an alarm, and verify reports it; the chain goes on in a new segment."""
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 10, segment_bytes=1 << 20 if where == "last frame" else 400)
    path, off, _rec = frames(tmp_path)[-1]
    data = bytearray(path.read_bytes())
    data[off + 20] ^= 0x01
    path.write_bytes(bytes(data))
    assert [p["kind"] for p in verify_dir(tmp_path / "journal", prov).problems] == ["frame"]
    write_records(tmp_path, None, 1)
    assert path.read_bytes() == bytes(data)                     # kept, byte for byte
    recs = payloads(tmp_path, prov)
    recovered = [r for r in recs if r[R.TYPE] == R.RECOVERED][-1]
    assert recovered[R.SEVERITY] == ev.ALARM and recovered[R.DATA][R.RECOVERED_CORRUPT]
    assert recovered[R.DATA][R.RECOVERED_CUT] == 0 and recovered[R.DATA][R.RECOVERED_OFFSET] == off
    report = verify_dir(tmp_path / "journal", prov)
    assert [(p["kind"], p["segment"], p["offset"]) for p in report.problems] == [("frame", path.name, off)]
    assert report.last_seq == recs[-1][R.SEQ]


@pytest.mark.parametrize("tail", [b"\x00\x00\x01", b"\x00\x00\x00\x40" + bytes(4) + b"abc", bytes(300)])
def test_an_incomplete_final_frame_or_zeros_is_a_crash_and_cut(tmp_path, tail):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 5)
    path = frames(tmp_path)[-1][0]
    with open(path, "ab") as f:
        f.write(tail)
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok and [w["kind"] for w in report.warnings] == ["torn_tail"]
    write_records(tmp_path, None, 1)
    recovered = [r for r in payloads(tmp_path, prov) if r[R.TYPE] == R.RECOVERED]
    assert recovered[-1][R.SEVERITY] == ev.INFO and recovered[-1][R.DATA][R.RECOVERED_CUT] == len(tail)
    assert verify_dir(tmp_path / "journal", prov).ok


def test_a_crash_during_provisioning_still_starts_with_genesis(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 0)
    for seg in (tmp_path / "journal").glob("*.seg"):
        seg.write_bytes(b"")           # the genesis never reached the disk
    write_records(tmp_path, None, 2)
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok and report.records == 3


def test_an_emptied_journal_is_tampering(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 2)
    write_records(tmp_path, None, 1)   # epoch 1 now
    for seg in (tmp_path / "journal").glob("*.seg"):
        seg.unlink()
    write_records(tmp_path, None, 1)
    assert "genesis" in {p["kind"] for p in verify_dir(tmp_path / "journal", prov).problems}


def test_a_crash_between_the_rotation_record_and_the_new_key_is_finished_at_start(tmp_path):
    """The rotation record, sealed with the old key, is durable before the new key file
    replaces the old one: killed between the two, the next start moves the key on itself
    (and that counts as this boot's rotation); killed after both, it rotates as every boot."""
    from drivers.keys import load_key
    prov, _ = provision(tmp_path)
    key_path = tmp_path / "epoch.key"
    with open_journal(tmp_path, prov) as j:
        j.append(event_record(1))
        j.flush()
        kept = key_path.read_bytes()          # epoch 0, as the file was before the rotation
        j.rotate_key()
        assert j.flush()
    key_path.write_bytes(kept)                # the crash: the record is on disk, the key never moved
    with open_journal(tmp_path) as j:
        j.append(event_record(2))
    assert load_key(key_path).kid == b"gw-7/record/1"
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok, report.problems
    assert report.kids == ["gw-7/record/0", "gw-7/record/1"]
    write_records(tmp_path, None, 1)          # a clean restart: one rotation, sealed with epoch 1
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok and report.kids[-1] == "gw-7/record/2", report.problems


def test_a_key_that_does_not_follow_the_journal_is_an_alarm_at_start(tmp_path):
    from drivers.keys import load_key, next_epoch, write_key
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 2)
    key_path = tmp_path / "epoch.key"
    write_key(key_path, next_epoch(next_epoch(load_key(key_path))))   # two epochs past the journal
    write_records(tmp_path, None, 1)
    recovered = [r for r in payloads(tmp_path, prov) if r[R.TYPE] == R.RECOVERED]
    assert recovered[-1][R.SEVERITY] == ev.ALARM
    assert recovered[-1][R.DATA][R.RECOVERED_KEY_MISMATCH] == b"gw-7/record/0"
    assert not verify_dir(tmp_path / "journal", prov).ok
