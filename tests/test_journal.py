import json
import os
import subprocess
import sys
import zlib

import cbor2
import pytest
from pycose.keys import SymmetricKey
from pycose.messages import Enc0Message, Mac0Message

from controller.core import events as ev
from controller.errors import JournalError
from controller.journal import records as R
from controller.journal.verify import verify_dir
from drivers.cose import (ALG_A128GCM, ALG_AES_MAC_128_128, ALG_SM4_GCM, ALG_SM4_MAC_128_128, Gcm,
                          decode)
from drivers.keys import EpochKeys, load_key
from pathlib import Path

from controller.journal.segments import frame as segments_frame, list_segments
from drivers import cose
from tests.journaling import (append_sent, event_record, frame_span, frames, open_journal, payload, payloads,
                              provision, write_records)


ROOT = Path(__file__).resolve().parent.parent


def cabguard(*args):
    return subprocess.run([sys.executable, "-m", "controller.cli.main", *args], capture_output=True, text=True)


@pytest.mark.parametrize("alg", [ALG_AES_MAC_128_128, ALG_SM4_MAC_128_128, ALG_A128GCM, ALG_SM4_GCM])
def test_journal_round_trip_verifies_for_every_algorithm(tmp_path, alg):
    prov, _ = provision(tmp_path, alg)
    write_records(tmp_path, prov, 50)
    write_records(tmp_path, None, 5)  # second boot: next epoch, recovered record
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok, report.problems
    assert report.kids == ["gw-7/record/0", "gw-7/record/1"]
    types = [r[R.TYPE] for r in payloads(tmp_path, prov)]
    assert types[0] == R.GENESIS and R.KEY_ROTATION in types and R.RECOVERED in types
    seqs = [r[R.SEQ] for r in payloads(tmp_path, prov)]
    assert seqs == list(range(len(seqs)))


def test_gateway_keeps_only_the_current_epoch_key(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 1)
    write_records(tmp_path, None, 1)
    current = load_key(tmp_path / "epoch.key")
    assert current.kid == b"gw-7/record/1"
    epochs = EpochKeys(prov)
    assert current.k == epochs.epoch(1).k and current.k not in (epochs.epoch(0).k, prov.k)


def test_pycose_verifies_aes_mac_journal_records(tmp_path):
    prov, _ = provision(tmp_path, ALG_AES_MAC_128_128)
    write_records(tmp_path, prov, 3)
    for _path, _off, record in frames(tmp_path):
        msg = Mac0Message.decode(record)
        msg.key = SymmetricKey(k=EpochKeys(prov).key_for(decode(record).kid).k)
        assert msg.verify_tag()
        assert cbor2.loads(msg.payload)[R.GATEWAY] == "gw-7"


def test_pycose_decrypts_a128gcm_journal_records(tmp_path):
    prov, _ = provision(tmp_path, ALG_A128GCM)
    write_records(tmp_path, prov, 3)
    epoch0 = EpochKeys(prov).epoch(0)
    for _path, _off, record in frames(tmp_path):
        msg = Enc0Message.decode(record)
        msg.key = SymmetricKey(k=epoch0.k)
        assert cbor2.loads(msg.decrypt())[R.GATEWAY] == "gw-7"


def test_sm4_gcm_matches_rfc8998_vector():
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    iv = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    pt = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
                       "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA")
    out = Gcm(ALG_SM4_GCM, key).seal(iv, pt, aad)
    assert out[:-16].hex().upper() == (
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D")
    assert out[-16:].hex().upper() == "83DE3541E4C2B58177E065A9BF7B62EC"
    assert Gcm(ALG_SM4_GCM, key).open(iv, out, aad) == pt


def _rewrite(path, data):
    path.write_bytes(bytes(data))


def test_bit_flip_with_fixed_crc_is_a_mac_mismatch(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 20)
    path, off, record = frames(tmp_path)[10]
    rec = bytearray(record)
    rec[-30] ^= 0x04
    data = bytearray(path.read_bytes())
    data[off + 4:off + 8] = zlib.crc32(bytes(rec)).to_bytes(4, "big")
    data[off + 8:off + 8 + len(rec)] = rec
    _rewrite(path, data)
    report = verify_dir(tmp_path / "journal", prov)
    assert [p["kind"] for p in report.problems] == ["mac"]
    assert report.problems[0]["offset"] == off and "MAC mismatch for kid gw-7/record/0" in report.problems[0]["message"]


def test_corrupt_middle_frame_is_reported_with_segment_and_offset(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 20)
    path, off, _record = frames(tmp_path)[7]
    data = bytearray(path.read_bytes())
    data[off + 20] ^= 0xFF           # CRC no longer matches
    _rewrite(path, data)
    report = verify_dir(tmp_path / "journal", prov)
    assert not report.ok
    frame_problem = report.problems[0]
    assert frame_problem["kind"] == "frame" and frame_problem["segment"] == path.name
    assert frame_problem["offset"] == off
    assert report.last_seq == 19 + 1  # went on past it (genesis + 20 records)


def test_deleted_record_is_a_gap(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 20)
    path, off, record = frames(tmp_path)[5]
    data = path.read_bytes()
    _rewrite(path, data[:off] + data[off + frame_span(record):])
    report = verify_dir(tmp_path / "journal", prov)
    assert [p["kind"] for p in report.problems] == ["gap"]
    assert "records 5..5 are missing" in report.problems[0]["message"]


def test_reordered_records_are_detected(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 20)
    fs = frames(tmp_path)
    (path, off_a, a), (_p, off_b, b) = fs[4], fs[5]
    data = path.read_bytes()
    fa, fb = data[off_a:off_a + frame_span(a)], data[off_b:off_b + frame_span(b)]
    _rewrite(path, data[:off_a] + fb + fa + data[off_b + frame_span(b):])
    report = verify_dir(tmp_path / "journal", prov)
    assert {p["kind"] for p in report.problems} >= {"order"}


def test_truncation_is_detected_against_cursor_and_heartbeat(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov) as j:
        for i in range(20):
            j.append(event_record(i))
        cp = j.checkpoint()
        j.flush()
        seq, tag = j.last_checkpoint
        assert seq == cp
        j.set_cursor(cp)
    assert verify_dir(tmp_path / "journal", prov, [(seq, tag)]).ok
    path, off, _record = frames(tmp_path)[-3]
    path.write_bytes(path.read_bytes()[:off])       # cut whole frames: no torn tail left
    report = verify_dir(tmp_path / "journal", prov, [(seq, tag)])
    assert [p["kind"] for p in report.problems] == ["truncated", "truncated"]
    os.remove(tmp_path / "journal" / "cursor")
    assert [p["kind"] for p in verify_dir(tmp_path / "journal", prov, [(seq, None)]).problems] == ["truncated"]


def test_a_checkpoint_on_any_record_is_checked_against_its_tag(tmp_path):
    """``--checkpoint SEQ:TAG`` on a record that is not a checkpoint record compared
    the given tag with itself, so a forged journal passed."""
    from drivers import cose
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 12)
    record = frames(tmp_path)[6][2]
    seq, tag = cose.decode(record).seq, cose.decode(record).tag
    assert verify_dir(tmp_path / "journal", prov, [(seq, tag)]).ok
    forged = verify_dir(tmp_path / "journal", prov, [(seq, bytes(len(tag)))])
    assert [p["kind"] for p in forged.problems] == ["checkpoint"]


def test_wrong_key_reads_mac_mismatch_for_kid(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 3)
    cabguard("keys", "gen", "--gateway", "gw-7", "--out", str(tmp_path / "other"))
    r = cabguard("verify", str(tmp_path / "journal"), "--key", str(tmp_path / "other" / "record.key"))
    # Another key of the same kid (a re-flashed gateway's): one verdict, not a TAMPERING? line per record.
    assert r.returncode == 1 and "does not belong to this journal" in r.stderr and "TAMPERING" not in r.stdout
    assert "Traceback" not in r.stderr
    cabguard("keys", "gen", "--gateway", "gw-8", "--out", str(tmp_path / "gw8"))
    r = cabguard("verify", str(tmp_path / "journal"), "--key", str(tmp_path / "gw8" / "record.key"))
    assert r.returncode == 1 and "the key gw-8/record does not belong to this journal" in r.stderr
    assert "signed with kid gw-7/record/0" in r.stderr


def test_verify_of_a_folder_without_a_journal_says_so(tmp_path):
    prov, key_path = provision(tmp_path)
    (tmp_path / "empty").mkdir()
    r = cabguard("verify", str(tmp_path / "empty"), "--key", str(key_path))
    assert r.returncode == 1 and "no journal in" in r.stderr and "OK" not in r.stdout


def test_an_epoch_jump_is_tampering(tmp_path):
    """A holder of a later epoch key (derived forward only) re-seals the journal
    from an early point on with a rotation straight to its epoch."""
    import cbor2
    from drivers.cose import Sealer
    from drivers.keys import EpochKeys, epoch_kid
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 6)
    epochs = EpochKeys(prov)
    kept = frames(tmp_path)[:3]
    path = kept[0][0]
    data = path.read_bytes()[:kept[-1][1] + frame_span(kept[-1][2])]
    prev = cose.decode(kept[-1][2]).tag
    seq = cose.decode(kept[-1][2]).seq + 1
    last_rec = payload(tmp_path, prov, kept[-1][2])
    stolen = epochs.epoch(4)                                  # the thief's key: the current epoch only
    sealer = Sealer(stolen.alg, epoch_kid(prov.kid, 4), stolen.k)
    for kind in (R.KEY_ROTATION, 39, 39):
        rec = dict(last_rec)
        rec.update({R.SEQ: seq, R.TYPE: kind, R.PREV: prev, R.SEVERITY: 0})
        if kind == R.KEY_ROTATION:
            rec[R.DATA] = {R.ROTATION_OLD_KID: last_rec.get(R.DATA, {}).get(R.ROTATION_NEW_KID, b""),
                           R.ROTATION_NEW_KID: epoch_kid(prov.kid, 4), R.ROTATION_REASON: R.ROTATE_COMMAND}
        message, prev = sealer.seal(cbor2.dumps(rec), seq)
        data += segments_frame(message)
        seq += 1
    path.write_bytes(data)
    for extra in list_segments(tmp_path / "journal")[1:]:
        extra[1].unlink()
    (tmp_path / "journal" / "cursor").unlink(missing_ok=True)
    report = verify_dir(tmp_path / "journal", prov)
    assert any(p["kind"] == "key" and "jumps from epoch" in p["message"] for p in report.problems), report.problems


def test_verify_json_has_stable_keys_and_exit_zero(tmp_path):
    prov, key_path = provision(tmp_path)
    write_records(tmp_path, prov, 3)
    r = cabguard("verify", str(tmp_path / "journal"), "--key", str(key_path), "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert set(doc) == {"ok", "records", "segments", "first_seq", "last_seq", "last_tag", "kids",
                        "anchors", "anchored_seq", "problems", "warnings"}
    assert doc["ok"] and doc["records"] == 4 and doc["anchors"] == 0 and doc["anchored_seq"] is None


def test_keys_gen_writes_three_0600_cose_keys(tmp_path):
    r = cabguard("keys", "gen", "--gateway", "site4-cab2", "--out", str(tmp_path), "--alg", "sm4-gcm")
    assert r.returncode == 0
    kids = {}
    for name in ("record", "command", "installer"):
        path = tmp_path / "{}.key".format(name)
        assert os.stat(path).st_mode & 0o777 == 0o600
        kids[name] = load_key(path)
    assert kids["record"].kid == b"site4-cab2/record" and kids["record"].alg == ALG_SM4_GCM
    assert kids["command"].alg == ALG_SM4_MAC_128_128
    again = cabguard("keys", "gen", "--gateway", "site4-cab2", "--out", str(tmp_path))
    assert again.returncode == 1 and "--force" in again.stderr


def test_reopen_without_key_file_refuses_to_continue(tmp_path):
    prov, _ = provision(tmp_path)
    write_records(tmp_path, prov, 2)
    os.remove(tmp_path / "epoch.key")
    with pytest.raises(JournalError, match="record key .* is gone"):
        open_journal(tmp_path, prov)


def test_cursor_reading_and_sent(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov, segment_bytes=2000) as j:
        for i in range(40):
            j.append(event_record(i))
        j.flush()
        assert len(j.segments) >= 3
        got = [s for s, _rec in j.read_from(17)]
        assert got == list(range(17, j.durable_seq + 1))
        j.set_cursor(20)
        assert j.is_sent(20) and not j.is_sent(21)
        with pytest.raises(JournalError, match="cannot move back"):
            j.set_cursor(3)
    assert json.loads((tmp_path / "journal" / "cursor").read_text()) == {"acked": 20}


def test_alarm_is_durable_without_a_flush(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov) as j:
        seq = j.append(event_record(1, ev.ALARM))
        assert j.wait_durable(seq, timeout=5)


def test_budget_drops_sent_segments_then_keeps_unsent_alarms(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov, segment_bytes=2000, budget_bytes=6000) as j:
        append_sent(j, 30)
        for i in range(60):
            j.append(event_record(i, ev.ALARM))
        j.flush()
        health = j.health()
    assert health["over_budget"]
    recs = payloads(tmp_path, prov)
    assert any(r[R.TYPE] == R.RETENTION for r in recs)
    assert any(r[R.TYPE] == R.HEALTH and r[R.SEVERITY] == ev.CRITICAL for r in recs)
    alarms = [r[R.DATA][R.EVENT_A] for r in recs if r[R.TYPE] == ev.EV_RULE and r[R.SEVERITY] == ev.ALARM]
    assert alarms == list(range(60))                 # no unsent alarm dropped
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok, report.problems                # retention explains the missing start
    assert report.first_seq > 0


def test_every_record_kind_matches_the_cddl_schema(tmp_path):
    import pycddl

    from controller.core.catalog import Catalog
    from controller.devtools.sampletraces import CABINET
    from controller.journal.journal import default_clock

    schema = pycddl.Schema((ROOT / "docs" / "records.cddl").read_text())
    prov, _ = provision(tmp_path)
    c = default_clock()
    ctx = R.Context(c.wall_ms, True, c.mono_ms, [0, 1, -5])
    cat = Catalog(CABINET)
    seen = set()

    def validate_on_disk() -> None:
        for _path, _off, record in frames(tmp_path):
            msg = decode(record)
            raw = msg.verify(EpochKeys(prov).key_for(msg.kid).k)
            schema.validate_cbor(raw)
            seen.add(cbor2.loads(raw)[R.TYPE])

    with open_journal(tmp_path, prov, segment_bytes=3000, budget_bytes=5000) as j:
        for code in ev.EVENT_NAMES:
            j.append(R.from_event((code, 1, 2, 0), ctx))
        j.append(R.command(ctx, "console", "arm", 0, False, "wrong mode"))
        j.append(R.login(ctx, "tech1", "technician", True))
        j.append(R.telemetry(ctx))
        j.append(R.video_bookmark(ctx, "gate", c.wall_ms - 30000, c.wall_ms + 60000, 7, ev.ALARM, True))
        j.append(R.flood(ctx, "console", 7749, c.wall_ms, c.wall_ms + 3700, bytes(32)))
        j.append(R.catalog(ctx, cat.specs(), {"exit_delay_ms": 30000, "escalation": {"alarm.armed": [["lock", 1000]]}},
                           ["io.door_open"], cat.digest()))
        j.checkpoint()
        for i in range(60):
            j.append(event_record(i))
        j.flush()
        validate_on_disk()
        j.set_cursor(j.durable_seq)   # all sent: retention drops segments
        j.append(event_record(60))
        j.flush()
    write_records(tmp_path, None, 1)
    validate_on_disk()
    assert seen >= set(ev.EVENT_NAMES) | {R.GENESIS, R.RECOVERED, R.KEY_ROTATION, R.CHECKPOINT, R.COMMAND,
                                          R.LOGIN, R.TELEMETRY, R.CATALOG, R.RETENTION, R.FLOOD,
                                          R.VIDEO_BOOKMARK}


def test_retention_drops_only_sent_segments_and_the_gap_is_explained(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov, segment_bytes=2000, budget_bytes=6000) as j:
        append_sent(j, 60)
        j.append(event_record(60))        # makes room: the sent segments go
        j.flush()
        assert not j.health()["full"]
    recs = payloads(tmp_path, prov)
    assert recs[0][R.TYPE] != R.GENESIS and any(r[R.TYPE] == R.RETENTION for r in recs)
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok, report.problems
    # The same hole without the journal's own retention record is tampering.
    segments = sorted((tmp_path / "journal").glob("*.seg"))
    segments[1].unlink()
    assert "gap" in {p["kind"] for p in verify_dir(tmp_path / "journal", prov).problems}


def test_a_flood_with_the_broker_down_deletes_no_unsent_record(tmp_path):
    """Finding 3: retention dropped unsent segments, alarms among them, and verify said OK."""
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov, segment_bytes=2000, budget_bytes=6000) as j:
        for i in range(10):
            j.append(event_record(i, ev.ALARM))
        for i in range(200):                              # junk: warnings (refused commands)
            j.append(R.command(R.Context(0, False, 0), "downlink", "?", 0, False, "junk {}".format(i)))
        j.flush()
        assert j.health()["full"] and j.health()["over_budget"]
        refused = j.append(R.telemetry(R.Context(0, False, 0)))     # info: refused while full
        kept = j.append(R.command(R.Context(0, False, 0), "downlink", "?", 0, False, "still kept"))
        j.flush()
        assert refused == -1 and kept > 0 and j.refused_while_full == 1
        # The uplink catches up: retention makes room and the journal takes info again.
        j.set_cursor(j.durable_seq)   # wakes the writer: nothing else needs to be appended
        j.flush()
        assert not j.health()["full"]
        assert j.append(R.telemetry(R.Context(0, False, 0))) > 0
        j.flush()
    recs = payloads(tmp_path, prov)
    retained = [(r[R.DATA][R.RETENTION_FIRST], r[R.DATA][R.RETENTION_LAST]) for r in recs if r[R.TYPE] == R.RETENTION]
    assert retained and all(last <= kept for _first, last in retained)   # only what had been sent
    full = [r[R.DATA][R.HEALTH_DETAIL] for r in recs if r[R.TYPE] == R.HEALTH
            and r[R.DATA][R.HEALTH_CODE] == R.HEALTH_JOURNAL_FULL]
    assert len(full) == 2 and "1 info records were refused" in full[1]


def test_unsent_records_outlive_the_budget(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov, segment_bytes=2000, budget_bytes=6000) as j:
        for i in range(20):
            j.append(event_record(i, ev.ALARM))
        for i in range(80):
            j.append(event_record(100 + i, ev.WARNING))
        j.flush()
    recs = payloads(tmp_path, prov)
    assert recs[0][R.TYPE] == R.GENESIS and not any(r[R.TYPE] == R.RETENTION for r in recs)
    rules = [r[R.DATA][R.EVENT_A] for r in recs if r[R.TYPE] == ev.EV_RULE]
    assert rules == list(range(20)) + list(range(100, 180))     # not one unsent record deleted
    assert verify_dir(tmp_path / "journal", prov).ok


def test_a_failed_writer_is_reported_not_hung(tmp_path):
    prov, _ = provision(tmp_path)
    j = open_journal(tmp_path, prov)
    j.flush()
    os.close(j._fd)                    # the disk goes away under the writer
    j.append(event_record(1, ev.ALARM))
    assert not j.flush(timeout=5)
    assert isinstance(j.error, OSError)
    with pytest.raises(JournalError, match="writer stopped"):
        j.append(event_record(2))
    assert j.health()["writer_failed"]
    j.close()


def test_the_record_key_moves_on_when_the_day_changes(tmp_path):
    prov, _ = provision(tmp_path)
    day = 86_400_000
    now = {"wall": 20_000 * day + 5}

    def clock():
        return R.Context(now["wall"], True, 1000)

    with open_journal(tmp_path, prov, clock=clock) as j:
        j.append(R.make(R.TELEMETRY, ev.INFO, clock()))
        j.flush()
        now["wall"] += day
        j.append(R.make(R.TELEMETRY, ev.INFO, clock()))
        j.flush()                      # this batch notices the new day
        j.append(R.make(R.TELEMETRY, ev.INFO, clock()))
        j.flush()
    recs = payloads(tmp_path, prov)
    rotation = [r[R.DATA] for r in recs if r[R.TYPE] == R.KEY_ROTATION]
    assert rotation == [{R.ROTATION_OLD_KID: b"gw-7/record/0", R.ROTATION_NEW_KID: b"gw-7/record/1",
                         R.ROTATION_REASON: R.ROTATE_DAY}]
    assert load_key(tmp_path / "epoch.key").kid == b"gw-7/record/1"
    assert verify_dir(tmp_path / "journal", prov).ok


def test_an_installer_rotation_moves_the_key_on_and_verify_follows(tmp_path):
    prov, _ = provision(tmp_path)
    with open_journal(tmp_path, prov) as j:
        j.append(event_record(1))
        seq = j.rotate_key()
        j.append(event_record(2))
        assert j.flush()
    recs = payloads(tmp_path, prov)
    rotation = [r for r in recs if r[R.TYPE] == R.KEY_ROTATION]
    assert [r[R.SEQ] for r in rotation] == [seq]
    assert rotation[0][R.DATA] == {R.ROTATION_OLD_KID: b"gw-7/record/0", R.ROTATION_NEW_KID: b"gw-7/record/1",
                                   R.ROTATION_REASON: R.ROTATE_COMMAND}
    assert load_key(tmp_path / "epoch.key").kid == b"gw-7/record/1"
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok and report.records == len(recs)


def test_a_device_coming_online_is_info_and_going_silent_a_warning():
    assert R.event_severity((ev.EV_DEVICE, 9, 1, 0)) == ev.INFO      # every start: each device's first poll
    assert R.event_severity((ev.EV_DEVICE, 9, 0, 0)) == ev.WARNING


def test_verify_checkpoints_file_anchors_the_tail_and_catches_a_cut_one(tmp_path):
    prov, key_path = provision(tmp_path)
    with open_journal(tmp_path, prov) as j:
        for i in range(12):
            j.append(event_record(i))
        j.checkpoint()
        assert j.flush()
        seq, tag = j.last_checkpoint
        for i in range(5):
            j.append(event_record(i))
    lines = [{"gateway": "gw-7", "seq": seq, "tag": tag.hex()}, {"gateway": "gw-8", "seq": 9999, "tag": "00"}]
    cps = tmp_path / "checkpoints.jsonl"
    cps.write_text("".join(json.dumps(line) + "\n" for line in lines))
    journal = str(tmp_path / "journal")
    r = cabguard("verify", journal, "--key", str(key_path))
    assert r.returncode == 0 and "tail: no head-end checkpoint anchors it" in r.stdout
    r = cabguard("verify", journal, "--key", str(key_path), "--checkpoints", str(cps))
    last = seq + 5
    assert r.returncode == 0, r.stdout
    assert "tail: a head-end checkpoint anchors seq {}; cannot rule out truncation past seq {}".format(seq, last) in r.stdout
    path, off, _rec = frames(tmp_path)[seq]           # cut at the checkpoint record's frame
    path.write_bytes(path.read_bytes()[:off])
    r = cabguard("verify", journal, "--key", str(key_path), "--checkpoints", str(cps))
    assert r.returncode == 1 and "TAMPERING? seq {}: a head-end checkpoint names record {} but the journal ends at {}: " \
        "its tail was cut".format(seq, seq, seq - 1) in r.stdout, r.stdout
    cps.write_text(json.dumps(lines[0]) + "\n{\"gateway\": \"gw-7\", \"seq\": -3, \"tag\": \"00\"}\n")
    r = cabguard("verify", journal, "--key", str(key_path), "--checkpoints", str(cps))
    assert r.returncode == 1 and "{}:2: not a checkpoint line".format(cps) in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("step_record_after_ms, ok", [
    (None, False),      # trusted wall time 30 s back, nothing says why: a problem
    (800, True),        # the gateway's clock-step record within a second: the step is explained
    (10_000, False),    # a step record long after does not explain it
])
def test_a_clock_step_back_is_explained_only_by_the_gateways_step_record(tmp_path, step_record_after_ms, ok):
    from controller.journal.journal import default_clock

    prov, _ = provision(tmp_path)
    c = default_clock()
    wall, mono = c.wall_ms, c.mono_ms
    with open_journal(tmp_path, prov) as j:
        for i in range(5):
            j.append(R.telemetry(R.Context(wall + i * 1000, True, mono + i * 1000)))
        back = wall + 5_000 - 30_000                     # NTP steps the clock 30 s back
        for i in range(12):
            at = 5_000 + i * 100
            j.append(R.telemetry(R.Context(back + i * 100, True, mono + at)))
            if step_record_after_ms is not None and i * 100 == step_record_after_ms:
                j.append(R.health(R.Context(back + i * 100, True, mono + at), R.HEALTH_CLOCK_STEP,
                                  "the wall clock was stepped back by 30.0 s", ev.WARNING))
        if step_record_after_ms is not None and step_record_after_ms >= 1200:
            j.append(R.health(R.Context(back + step_record_after_ms, True, mono + 5_000 + step_record_after_ms),
                              R.HEALTH_CLOCK_STEP, "the wall clock was stepped back by 30.0 s", ev.WARNING))
    report = verify_dir(tmp_path / "journal", prov)
    assert report.ok is ok, report.problems
    assert ok or {p["kind"] for p in report.problems} == {"time"}
