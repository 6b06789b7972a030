"""Attacks on a gateway's journal, as a thief who holds the gateway would make them.

The attacker holds nothing, the current epoch key (what a stolen gateway holds),
or the root record key (what a gateway held before flash.sh kept it off).  Each
attack yields a journal that a naive verifier accepts: every frame's CRC and
every record's MAC under the key its kid names check out.  ``cabguard verify``
must catch it, with the head end's checkpoints (anchors) where the design says
only they can, or the attack is one docs/keys.md names as outside what the
design detects (the test checks that the doc says so).
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import cbor2
import pytest

from controller.core import events as ev
from controller.journal import records as R
from controller.journal.segments import HEAD, Bad, frame, iter_frames, list_segments, segment_name
from controller.journal.verify import tail_line, verify_dir
from drivers import cose
from drivers.keys import CoseKey, EpochKeys, epoch_kid, epoch_number
from tests.journaling import event_record, open_journal, provision

REPO = Path(__file__).resolve().parent.parent
ALARM_MARK = 777        # the event data of the door-forced alarm the thief wants gone


class Genuine(NamedTuple):
    folder: Path              # tmp folder: record.key, epoch.key, journal/
    root: CoseKey
    anchors: list[tuple[int, bytes]]   # the head end's checkpoints, as heartbeats carried them


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Genuine:
    """Three epochs, several segments, an alarm in each epoch, a checkpoint after each."""
    tmp = tmp_path_factory.mktemp("genuine")
    root, _ = provision(tmp)
    anchors = []
    with open_journal(tmp, root, segment_bytes=1500) as j:
        for epoch in range(3):
            for i in range(8):
                j.append(event_record(100 * epoch + i))
            j.append(event_record(ALARM_MARK + epoch, ev.ALARM))
            j.checkpoint()
            assert j.flush()
            anchors.append(j.last_checkpoint)
            if epoch < 2:
                j.rotate_key()
        for i in range(5):
            j.append(event_record(900 + i))
    assert verify_dir(tmp / "journal", root, anchors).ok
    assert len(list_segments(tmp / "journal")) >= 4
    return Genuine(tmp, root, anchors)


# ---- the attacker's tools ------------------------------------------------------------------

def read(folder: Path) -> list[list[bytes]]:
    """Each segment's records (COSE bytes), in order."""
    return [[item[1] for item in iter_frames(path.read_bytes()) if not isinstance(item, Bad)]
            for _n, path in list_segments(folder)]


def opened(record: bytes, root: CoseKey) -> dict:
    """A record's map: COSE_Mac0 payloads are plain CBOR, readable without any key
    (the root is only used for the encrypted case, which these journals are not)."""
    msg = cose.decode(record)
    return cbor2.loads(msg.verify(EpochKeys(root).key_for(msg.kid).k))


def write(folder: Path, segments: list[list[bytes]]) -> None:
    """Replace the journal's segments with these, framed with good CRCs."""
    for _n, path in list_segments(folder):
        path.unlink()
    for n, recs in enumerate(segments):
        (folder / segment_name(n)).write_bytes(b"".join(frame(r) for r in recs))


def reseal(records: list[bytes], start: int, key: CoseKey, root: CoseKey,
           change: Callable[[dict], None] = lambda rec: None) -> list[bytes]:
    """Records from index ``start`` on, changed and re-sealed with ``key`` (each
    chained to the one before, the first to the genuine record before it)."""
    prev = cose.decode(records[start - 1]).tag
    sealer = cose.Sealer(key.alg, key.kid, key.k)
    out = records[:start]
    for record in records[start:]:
        rec = opened(record, root)
        change(rec)
        rec[R.PREV] = prev
        message, prev = sealer.seal(cose.encode(rec), rec[R.SEQ])
        out.append(message)
    return out


def flat(segments: list[list[bytes]]) -> list[bytes]:
    return [r for seg in segments for r in seg]


def split(records: list[bytes], size: int = 12) -> list[list[bytes]]:
    return [records[i:i + size] for i in range(0, len(records), size)]


def current_key(g: Genuine) -> CoseKey:
    """What a stolen gateway holds: its epoch key now (epoch 2 here)."""
    return EpochKeys(g.root).epoch(2)


def index_of(records: list[bytes], root: CoseKey, test: Callable[[dict], bool]) -> int:
    return next(i for i, r in enumerate(records) if test(opened(r, root)))


def is_alarm(epoch: int) -> Callable[[dict], bool]:
    return lambda rec: rec.get(R.DATA, {}).get(R.EVENT_A) == ALARM_MARK + epoch


def naive_ok(folder: Path, root: CoseKey) -> bool:
    """A naive verifier: every frame's CRC and every record's MAC under the key its kid names."""
    keys = EpochKeys(root)
    for _n, path in list_segments(folder):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            length, crc = HEAD.unpack_from(data, pos)
            record = data[pos + HEAD.size:pos + HEAD.size + length]
            if zlib.crc32(record) != crc:
                return False
            msg = cose.decode(record)
            key = keys.key_for(msg.kid)
            if key is None:
                return False
            try:
                msg.verify(key.k)
            except Exception:
                return False
            keys.confirm(msg.kid)
            pos += HEAD.size + length
    return True


# ---- the attacks ------------------------------------------------------------------------------

def reseal_alarm_with_root(g: Genuine, folder: Path) -> None:
    """Root key: the epoch-0 door-forced alarm becomes telemetry, everything after re-sealed."""
    records = flat(read(folder))
    at = index_of(records, g.root, is_alarm(0))
    keys = EpochKeys(g.root)
    out = records[:at]
    for i in range(at, len(records)):
        kid = cose.decode(records[i]).kid
        change = (lambda rec: rec.update({R.TYPE: R.TELEMETRY, R.SEVERITY: ev.INFO})) if i == at else (lambda rec: None)
        out = reseal(out + [records[i]], i, keys.key_for(kid), g.root, change)
    write(folder, split(out))


def reseal_old_record_with_current_key(g: Genuine, folder: Path) -> None:
    """Current key: the epoch-0 alarm and all after it re-sealed with the key the thief holds."""
    records = flat(read(folder))
    at = index_of(records, g.root, is_alarm(0))
    write(folder, split(reseal(records, at, current_key(g), g.root,
                               lambda rec: rec.update({R.TYPE: R.TELEMETRY, R.SEVERITY: ev.INFO}))))


def forge_rotation_into_current_epoch(g: Genuine, folder: Path) -> None:
    """Current key (epoch 2): cut the end of epoch 1 (its alarm), forge the rotation
    1 -> 2 there, sealed with epoch 2's key, and re-seal the rest (the outside finding)."""
    records = flat(read(folder))
    at = index_of(records, g.root, is_alarm(1))
    rotation = index_of(records, g.root, lambda rec: rec[R.TYPE] == R.KEY_ROTATION
                        and rec[R.DATA][R.ROTATION_NEW_KID] == epoch_kid(g.root.kid, 2))
    kept = records[:at] + records[rotation:]              # the genuine rotation record's fields, renumbered

    def renumber(rec: dict) -> None:
        rec[R.SEQ] -= rotation - at

    write(folder, split(reseal(kept, at, current_key(g), g.root, renumber)))


def jump_to_current_epoch(g: Genuine, folder: Path) -> None:
    """Current key: a rotation straight from epoch 0 to 2 before the first alarm, all after re-sealed."""
    records = flat(read(folder))
    at = index_of(records, g.root, is_alarm(0))

    def to_rotation(rec: dict) -> None:
        if rec[R.SEQ] == opened(records[at], g.root)[R.SEQ]:
            rec.update({R.TYPE: R.KEY_ROTATION, R.SEVERITY: ev.INFO, R.DATA: {
                R.ROTATION_OLD_KID: epoch_kid(g.root.kid, 0), R.ROTATION_NEW_KID: epoch_kid(g.root.kid, 2),
                R.ROTATION_REASON: R.ROTATE_COMMAND}})
    write(folder, split(reseal(records, at, current_key(g), g.root, to_rotation)))


def splice_a_clones_segment(g: Genuine, folder: Path) -> None:
    """Nothing (or a clone's copy): segment 1 replaced by the same-numbered records of
    another journal under the same root key (a cloned gateway's, without the alarm)."""
    clone = folder.parent / "clone"
    clone.mkdir()
    with open_journal(clone, g.root, segment_bytes=1500) as j:
        for i in range(60):
            j.append(event_record(500 + i))
    theirs, ours = read(clone / "journal"), read(folder)
    seqs = {cose.decode(r).seq for r in ours[1]}
    ours[1] = [r for r in flat(theirs) if cose.decode(r).seq in seqs]
    write(folder, ours)


def reorder_segments(g: Genuine, folder: Path) -> None:
    """Nothing: segments 1 and 2 swap names."""
    segs = read(folder)
    segs[1], segs[2] = segs[2], segs[1]
    write(folder, segs)


def replay_an_old_segment(g: Genuine, folder: Path) -> None:
    """Nothing: an old segment (before the alarm) copied in again as the newest."""
    segs = read(folder)
    write(folder, segs + [segs[0]])


def truncate_at_a_frame_boundary(g: Genuine, folder: Path) -> None:
    """Nothing: the last 10 records cut, exactly at a frame boundary."""
    records = flat(read(folder))
    write(folder, split(records[:-10]))


def forged_retention(g: Genuine, segs: list[list[bytes]], gone: list[int]) -> bytes:
    """A retention record naming ``gone``, chained to the last record, sealed with the current key."""
    last = opened(segs[-1][-1], g.root)
    retention = {k: v for k, v in last.items() if k != R.SNAPSHOT}
    retention.update({R.SEQ: last[R.SEQ] + 1, R.TYPE: R.RETENTION, R.SEVERITY: ev.INFO,
                      R.PREV: cose.decode(segs[-1][-1]).tag,
                      R.DATA: {R.RETENTION_FIRST: gone[0], R.RETENTION_LAST: gone[-1]}})
    key = current_key(g)
    return cose.Sealer(key.alg, key.kid, key.k).seal(cose.encode(retention), retention[R.SEQ])[0]


def drop_a_middle_segment_with_a_forged_retention(g: Genuine, folder: Path) -> None:
    """Current key: the segment holding epoch 1's alarm deleted, a retention record naming its
    records appended under the current key, as genuine retention writes one."""
    segs = read(folder)
    at = next(i for i, seg in enumerate(segs) if any(is_alarm(1)(opened(r, g.root)) for r in seg))
    segs[-1].append(forged_retention(g, segs, [cose.decode(r).seq for r in segs[at]]))
    del segs[at]
    write(folder, segs)


def drop_the_oldest_segments_with_a_forged_retention(g: Genuine, folder: Path) -> None:
    """Current key: every segment up to the one with epoch 1's alarm deleted, with a forged
    retention record for them: exactly what genuine retention leaves (docs/keys.md)."""
    segs = read(folder)
    at = next(i for i, seg in enumerate(segs) if any(is_alarm(1)(opened(r, g.root)) for r in seg))
    segs[-1].append(forged_retention(g, segs, [cose.decode(r).seq for seg in segs[:at + 1] for r in seg]))
    write(folder, segs[at + 1:])


class Attack(NamedTuple):
    name: str
    forge: Callable[[Genuine, Path], None]
    caught: set[str] | None              # verify reports one of these problem kinds without anchors (None: passes)
    anchored: set[str] | None            # ... and with the head end's anchors (None: passes, documented)


ATTACKS = [
    Attack("root key re-seals an alarm as telemetry", reseal_alarm_with_root, None, {"checkpoint"}),
    Attack("current key re-seals an old record", reseal_old_record_with_current_key, {"key"}, {"checkpoint"}),
    Attack("current key forges the rotation into its epoch", forge_rotation_into_current_epoch, {"key"},
           {"checkpoint"}),
    Attack("current key forges a rotation jump", jump_to_current_epoch, {"key"}, {"checkpoint"}),
    Attack("a clone's segment spliced in", splice_a_clones_segment, {"chain"}, {"chain"}),
    Attack("segments reordered", reorder_segments, {"order"}, {"order"}),
    Attack("an old segment replayed", replay_an_old_segment, {"order"}, {"order"}),
    Attack("tail truncated at a frame boundary", truncate_at_a_frame_boundary, None, {"truncated"}),
    Attack("middle segment dropped, retention forged", drop_a_middle_segment_with_a_forged_retention,
           {"retention"}, {"retention", "checkpoint"}),
    Attack("oldest segments dropped, retention forged", drop_the_oldest_segments_with_a_forged_retention, None, None),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_each_forgery_passes_a_naive_verifier_and_not_cabguard_verify(genuine, attack, tmp_path):
    folder = tmp_path / "journal"
    shutil.copytree(genuine.folder / "journal", folder)
    (folder / "cursor").unlink(missing_ok=True)          # the thief edits the local anchor away too
    attack.forge(genuine, folder)
    assert naive_ok(folder, genuine.root), "the forgery must fool a naive verifier to test anything"
    for anchors, want in (([], attack.caught), (genuine.anchors, attack.anchored)):
        report = verify_dir(folder, genuine.root, anchors)
        kinds = {p["kind"] for p in report.problems}
        if want is None:
            assert report.ok, report.problems[:3]
            assert "cannot rule out truncation past seq {}".format(report.last_seq) in tail_line(report)
        else:
            assert kinds & want, (anchors != [], report.problems[:5])


def test_the_attacks_verify_cannot_catch_are_named_in_docs_keys():
    doc = (REPO / "docs/keys.md").read_text()
    assert "outside what `cabguard verify` can detect" in doc
    for phrase in ("oldest segments dropped with a retention record", "cut at a frame boundary",
                   "the root record key"):
        assert phrase in doc, phrase


def test_an_honest_journal_passes_every_check(genuine):
    report = verify_dir(genuine.folder / "journal", genuine.root, genuine.anchors)
    assert report.ok and report.anchored_seq == genuine.anchors[-1][0]
    assert [epoch_number(k.encode()) for k in report.kids] == [0, 1, 2]
    assert naive_ok(genuine.folder / "journal", genuine.root)
