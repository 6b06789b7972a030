"""``cabguard verify``: check a journal folder with the provisioning key.

Every frame's CRC, every record's MAC (or GCM tag) under the epoch key its
kid names, the chain of previous tags, the sequence (gaps, repeats,
reordering), time regressions within a boot, key rotations, and the end of
the journal against the acknowledged cursor and an optional heartbeat
checkpoint (truncation).  Damage is reported with its segment and offset
and the check goes on past it.  Any problem is a sign of tampering (exit
1); warnings (a torn tail from a crash) are not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cbor2

from controller.errors import CabguardError
from controller.journal import records as R
from controller.journal.segments import Bad, could_be_torn, iter_frames, list_segments, read_segment
from drivers import cose
from drivers.errors import CoseError
from drivers.safefile import InputFileError
from drivers.keys import CoseKey, EpochKeys, epoch_number, load_key

ZERO_TAG = bytes(cose.TAG_LEN)
# Records from different threads (scan loop, console, uplink, the journal's
# own) take their time stamps before they queue up, so neighbours may be a
# little out of time order; a regression larger than this is a problem.
TIME_SLACK_MS = 2000
TEXT_PROBLEMS = 50


class Report:
    """What verification found; ``as_json`` has stable keys."""

    def __init__(self) -> None:
        self.records = 0
        self.segments = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.last_tag = b""
        self.kids: list[str] = []
        self.problems: list[dict] = []
        self.warnings: list[dict] = []
        self.retained: list[tuple[int, int]] = []
        self.gaps: list[tuple[int, int, dict]] = []     # (first, last missing, its problem)
        self.checkpoints: dict[int, bytes] = {}
        self.watched_tag: bytes | None = None           # the tag of the record --checkpoint names
        self.foreign_kids: set[str] = set()             # kids the given key does not derive

    def problem(self, kind: str, message: str, segment: str = "", offset: int = -1, seq: int = -1) -> None:
        self.problems.append({"kind": kind, "segment": segment, "offset": offset, "seq": seq,
                              "message": message})

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        return {"ok": self.ok, "records": self.records, "segments": self.segments,
                "first_seq": self.first_seq, "last_seq": self.last_seq,
                "last_tag": self.last_tag.hex(), "kids": self.kids,
                "problems": self.problems, "warnings": self.warnings}


class Checker:
    """Walks records in journal order and keeps the chain state."""

    def __init__(self, keys: EpochKeys, report: Report, watch_seq: int = -1):
        self.keys = keys
        self.report = report
        self.watch_seq = watch_seq
        self.macs: dict[bytes, cose.CbcMac] = {}
        self.prev_kid = b""
        self.prev_key: CoseKey | None = None
        self.prev_seq: int | None = None
        self.prev_tag = b""
        self.prev_kid_epoch = -1
        self.prev_boot = -1
        self.prev_mono = -1
        self.prev_wall = -1
        self.broken = False    # the record before was unreadable: do not blame the next link

    def _open(self, msg: cose.Message, where: tuple[str, int]) -> dict | None:
        rep = self.report
        key = self.keys.key_for(msg.kid) if msg.kid != self.prev_kid else self.prev_key
        if key is None:
            rep.foreign_kids.add(cose.kid_text(msg.kid))
            rep.problem("unknown_kid", "record signed with kid {}, which the key {} does not derive".format(
                cose.kid_text(msg.kid), self.keys.provisioning.kid_text), *where, seq=msg.seq or -1)
            return None
        try:
            mac = None
            if not msg.encrypted:
                mac = self.macs.get(msg.kid)
                if mac is None:
                    mac = self.macs[msg.kid] = cose.CbcMac(key.alg, key.k)
            payload = msg.verify(key.k, mac=mac)
            self.prev_key = key
            self.keys.confirm(msg.kid)
        except CoseError as e:
            rep.problem("mac", str(e), *where, seq=msg.seq if msg.seq is not None else -1)
            return None
        try:
            rec = cbor2.loads(payload)
        except Exception as e:
            rep.problem("payload", "record payload is not CBOR: {}".format(e), *where)
            return None
        if not isinstance(rec, dict) or not isinstance(rec.get(R.SEQ), int):
            rep.problem("payload", "record payload is not a record map with a sequence number", *where)
            return None
        return rec

    def record(self, data: bytes, where: tuple[str, int]) -> None:
        rep = self.report
        try:
            msg = cose.decode(data)
        except CoseError as e:
            rep.problem("format", str(e), *where)
            self.broken = True
            return
        rec = self._open(msg, where)
        if rec is None:
            self.broken = True
            return
        seq = rec[R.SEQ]
        rep.records += 1
        if msg.seq != seq:
            rep.problem("header", "sequence header {} differs from the record's {}".format(msg.seq, seq),
                        *where, seq=seq)
        self._sequence(seq, rec, where)
        self._key(msg.kid, rec, where, seq)
        self._time(rec, where, seq)
        if rec.get(R.TYPE) == R.RETENTION:
            data_ = rec.get(R.DATA, {})
            rep.retained.append((data_.get(R.RETENTION_FIRST, -1), data_.get(R.RETENTION_LAST, -1)))
        if rec.get(R.TYPE) == R.CHECKPOINT:
            rep.checkpoints[seq] = msg.tag
        if seq == self.watch_seq:
            rep.watched_tag = msg.tag
        if rep.first_seq is None:
            rep.first_seq = seq
        rep.last_seq = seq
        rep.last_tag = msg.tag
        self.prev_seq, self.prev_tag, self.broken = seq, msg.tag, False

    def _sequence(self, seq: int, rec: dict, where: tuple[str, int]) -> None:
        rep = self.report
        prev = rec.get(R.PREV)
        if self.prev_seq is None:
            if seq == 0 and (rec.get(R.TYPE) != R.GENESIS or prev != ZERO_TAG):
                rep.problem("genesis", "record 0 is not a genesis record", *where, seq=seq)
            return
        if seq <= self.prev_seq:
            rep.problem("order", "record {} comes after record {}: repeated or reordered".format(
                seq, self.prev_seq), *where, seq=seq)
        elif seq != self.prev_seq + 1:
            if not self.broken:
                rep.problem("gap", "records {}..{} are missing".format(self.prev_seq + 1, seq - 1),
                            *where, seq=seq)
                rep.gaps.append((self.prev_seq + 1, seq - 1, rep.problems[-1]))
        elif prev != self.prev_tag and not self.broken:
            rep.problem("chain", "record {} does not carry the tag of record {}".format(seq, self.prev_seq),
                        *where, seq=seq)

    def _key(self, kid: bytes, rec: dict, where: tuple[str, int], seq: int) -> None:
        if kid == self.prev_kid:
            return
        self.prev_kid = kid
        epoch = epoch_number(kid)
        text = cose.kid_text(kid)
        if text not in self.report.kids:
            self.report.kids.append(text)
        if epoch < self.prev_kid_epoch:
            self.report.problem("key", "kid {} goes back to an older epoch".format(text), *where, seq=seq)
        elif epoch > self.prev_kid_epoch >= 0 and rec.get(R.TYPE) != R.KEY_ROTATION:
            self.report.problem("key", "kid changes to {} without a key rotation record".format(text),
                                *where, seq=seq)
        elif epoch > self.prev_kid_epoch + 1 and self.prev_kid_epoch >= 0:
            # A rotation moves one epoch: a jump is someone holding a later epoch's key
            # (derived forward only) re-sealing the journal from an earlier point on.
            self.report.problem("key", "kid jumps from epoch {} to {}: a rotation moves one epoch at a "
                                "time".format(self.prev_kid_epoch, epoch), *where, seq=seq)
        self.prev_kid_epoch = max(epoch, self.prev_kid_epoch)

    def _time(self, rec: dict, where: tuple[str, int], seq: int) -> None:
        boot, mono, wall = rec.get(R.BOOT, -1), rec.get(R.MONO_MS, -1), rec.get(R.WALL_MS, -1)
        if boot < self.prev_boot:
            self.report.problem("time", "boot number goes back from {} to {}".format(self.prev_boot, boot),
                                *where, seq=seq)
        elif boot == self.prev_boot and mono < self.prev_mono - TIME_SLACK_MS:
            self.report.problem("time", "monotonic time goes back from {} to {} ms".format(
                self.prev_mono, mono), *where, seq=seq)
        if rec.get(R.TIME_QUALITY) == R.TIME_TRUSTED:
            if boot == self.prev_boot and wall < self.prev_wall - TIME_SLACK_MS:
                self.report.problem("time", "trusted wall time goes back from {} to {} ms".format(
                    self.prev_wall, wall), *where, seq=seq)
            self.prev_wall = max(wall, self.prev_wall)
        if boot != self.prev_boot:       # both clocks are checked within a boot (docs/journal.md)
            self.prev_mono = -1
            self.prev_wall = -1
        self.prev_boot = boot
        self.prev_mono = max(self.prev_mono, mono)


def _explained(report: Report) -> None:
    """Gaps (and a missing start) covered by retention records are not tampering."""
    def retained(first: int, last: int) -> bool:
        """Do the (possibly adjacent) retention ranges cover first..last?"""
        covered = first - 1
        for a, b in sorted(report.retained):
            if a <= covered + 1:
                covered = max(covered, b)
        return covered >= last

    explained = [id(p) for first, last, p in report.gaps if retained(first, last)]
    report.problems = [p for p in report.problems if id(p) not in explained]
    if report.first_seq not in (None, 0) and not retained(0, report.first_seq - 1):
        report.problem("start", "the journal starts at record {}: records 0..{} are missing".format(
            report.first_seq, report.first_seq - 1), seq=report.first_seq)


def _truncation(report: Report, directory: Path, checkpoint: tuple[int, bytes | None] | None) -> None:
    last = report.last_seq if report.last_seq is not None else -1
    try:
        acked = json.loads((directory / "cursor").read_bytes())["acked"]
    except (OSError, ValueError, KeyError, TypeError):
        acked = -1
    if isinstance(acked, int) and acked > last:
        report.problem("truncated", "records up to {} were acknowledged upstream but the journal "
                       "ends at {}".format(acked, last), seq=acked)
    if checkpoint is not None:
        seq, tag = checkpoint
        if seq > last:
            report.problem("truncated", "the heartbeat checkpoint names record {} but the journal "
                           "ends at {}".format(seq, last), seq=seq)
        elif tag is not None and report.watched_tag is None:
            report.problem("checkpoint", "record {} named by the checkpoint is not in the journal".format(seq),
                           seq=seq)
        elif tag is not None and report.watched_tag != tag:
            report.problem("checkpoint", "record {} does not have the tag the heartbeat reported".format(seq),
                           seq=seq)


def verify_dir(directory: str | Path, provisioning: CoseKey,
               checkpoint: tuple[int, bytes | None] | None = None) -> Report:
    directory = Path(directory)
    if not directory.is_dir():
        raise CabguardError("journal folder {} does not exist".format(directory))
    report = Report()
    checker = Checker(EpochKeys(provisioning), report, checkpoint[0] if checkpoint else -1)
    segments = list_segments(directory)
    if not segments:
        raise CabguardError("no journal in {}: it holds no segment files (NNNNNNNN.seg); give the journal "
                            "folder ([journal] dir of the site config)".format(directory))
    report.segments = len(segments)
    for i, (_number, path) in enumerate(segments):
        try:
            data = read_segment(path)
        except OSError as e:
            report.problem("io", "cannot read: {}".format(e.strerror), path.name)
            continue
        except InputFileError as e:
            report.problem("io", str(e), path.name)
            continue
        for item in iter_frames(data):
            if isinstance(item, Bad):
                last_segment = i == len(segments) - 1
                if last_segment and could_be_torn(data, item):
                    report.warnings.append({"kind": "torn_tail", "segment": path.name, "offset": item.offset,
                                            "message": "{} bytes of an unfinished write at the end "
                                                       "(a crash; cut at the next start)".format(item.length)})
                else:
                    report.problem("frame", "{} ({} bytes skipped)".format(item.reason, item.length),
                                   path.name, item.offset)
                    checker.broken = True
                continue
            checker.record(item[1], (path.name, item[0]))
    _wrong_key(report, provisioning)
    _explained(report)
    _truncation(report, directory, checkpoint)
    return report


def _wrong_key(report: Report, provisioning: CoseKey) -> None:
    """Not one record opened under this key: say so once, not once per record."""
    if report.records or not report.problems:
        return
    found = sorted(report.foreign_kids)
    if found or all(p["kind"] == "mac" for p in report.problems):
        raise CabguardError("the key {} does not belong to this journal: {} (give this gateway's record key, "
                            "keys/record.key from flashing)".format(
                                provisioning.kid_text, "its records are signed with kid " + ", ".join(found[:3])
                                if found else "no record's MAC checks out under it"))


def _parse_checkpoint(text: str | None) -> tuple[int, bytes | None] | None:
    if text is None:
        return None
    seq, _, tag = text.partition(":")
    try:
        return int(seq), bytes.fromhex(tag) if tag else None
    except ValueError:
        raise CabguardError("--checkpoint {!r}: want SEQ or SEQ:TAGHEX (from the heartbeat)".format(text)) from None


def print_text(report: Report, out=sys.stdout) -> None:
    for p in report.problems[:TEXT_PROBLEMS]:
        where = "{} @{}: ".format(p["segment"], p["offset"]) if p["segment"] else ""
        print("TAMPERING? {}{}".format(where, p["message"]), file=out)
    if len(report.problems) > TEXT_PROBLEMS:
        print("... and {} more problems (--json lists them all)".format(
            len(report.problems) - TEXT_PROBLEMS), file=out)
    for w in report.warnings:
        print("warning: {} @{}: {}".format(w["segment"], w["offset"], w["message"]), file=out)
    span = "records {}..{}".format(report.first_seq, report.last_seq) if report.records else "no records"
    print("{} records in {} segments ({}), kids: {}".format(
        report.records, report.segments, span, ", ".join(report.kids) or "-"), file=out)
    print("OK: every MAC, the chain and the sequence check out" if report.ok
          else "FAILED: {} problem(s)".format(len(report.problems)), file=out)


def _headend_checkpoint(db: str, gateway: str) -> tuple[int, bytes]:
    """The newest checkpoint the head end anchored for this gateway (``--headend DB``).

    Adapter until verify takes a list of anchors: the newest one catches a cut
    tail and a rewritten checkpoint record; the head end itself checks every
    anchored tag against the records it holds (equivocations)."""
    from controller.headend.store import open_store     # only with --headend: the CLI composes the two
    store = open_store(db, migrate_now=False)
    try:
        anchors = store.anchors(gateway)
    finally:
        store.close()
    if not anchors:
        raise CabguardError("the head-end database {} holds no checkpoint of gateway {!r} (give --gateway as "
                            "`cabguard headend status` lists it)".format(db, gateway))
    return anchors[-1]


def main(args: argparse.Namespace) -> int:
    key = load_key(args.key)
    checkpoint = _parse_checkpoint(args.checkpoint)
    if args.headend:
        if checkpoint is not None:
            raise CabguardError("give --checkpoint or --headend, not both")
        checkpoint = _headend_checkpoint(args.headend, args.gateway or key.kid_text.rsplit("/", 1)[0])
    report = verify_dir(args.journal, key, checkpoint)
    if args.json:
        json.dump(report.as_json(), sys.stdout)
        print()
    else:
        print_text(report)
    return 0 if report.ok else 1
