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
import io
import json
import sys
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import cbor2

from controller.errors import CabguardError
from controller.journal import records as R
from controller.journal.segments import Bad, could_be_torn, iter_frames, list_segments, read_segment
from drivers import cose
from drivers.errors import CoseError
from drivers.safefile import InputFileError, open_text, parse_json
from drivers.keys import CoseKey, EpochKeys, epoch_kid, epoch_number, load_key

ZERO_TAG = bytes(cose.TAG_LEN)
# Records from different threads (scan loop, console, uplink, the journal's
# own) take their time stamps before they queue up, so neighbours may be a
# little out of time order; a regression larger than this is a problem.
TIME_SLACK_MS = 2000
# A time service may step the wall clock back: the gateway sees the step
# within a second (drivers/clock.py) and journals it (health code 13).  A
# trusted wall time that goes back less than this before that record, in
# monotonic time, is the step's, not a problem.
STEP_SEEN_MS = 1000 + TIME_SLACK_MS
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
        self.gateway: str | None = None                 # the gateway of the first record
        self.tags: dict[int, bytes] = {}                # the tag of each record an anchor names
        self.anchors = 0                                # head-end checkpoints checked
        self.anchored_seq: int | None = None            # the newest of them the journal holds
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
                "anchors": self.anchors, "anchored_seq": self.anchored_seq,
                "problems": self.problems, "warnings": self.warnings}


class Checker:
    """Walks records in journal order and keeps the chain state."""

    def __init__(self, keys: EpochKeys, report: Report, watch: frozenset[int] = frozenset()):
        self.keys = keys
        self.report = report
        self.watch = watch      # the seqs anchors name: keep their tags
        self.macs: dict[bytes, cose.CbcMac] = {}
        self.open_kid = b""                       # the kid of the last record whose MAC checked out ...
        self.open_key: CoseKey | None = None      # ... its key
        self.open_mac: cose.CbcMac | None = None  # ... and its MAC context (None: an AEAD key)
        self.prev_kid = b""
        self.prev_seq: int | None = None
        self.prev_tag = b""
        self.prev_kid_epoch = -1
        self.announced: bytes | None = None   # the kid the record before announced (a key_rotation record)
        self.prev_boot = -1
        self.prev_mono = -1
        self.prev_wall = -1
        self.wall_back: list[tuple[int, str, tuple[str, int], int]] = []   # (mono, message, where, seq) until explained
        self.broken = False    # the record before was unreadable: do not blame the next link
        # One long-lived decoder reading a payload at a time: cbor2.loads makes a decoder per call, and
        # one that reads item by item; that was most of what opening a record cost.
        self._loads = cbor2.CBORDecoder(io.BytesIO(), read_size=4096).decode_from_bytes

    def _open(self, msg: cose.Message, where: tuple[str, int]) -> dict | None:
        rep = self.report
        kid = msg.kid
        if kid == self.open_kid:        # the common case: the record before opened under this kid
            key, mac = self.open_key, self.open_mac
        else:
            key = self.keys.key_for(kid)
            if key is None:
                rep.foreign_kids.add(cose.kid_text(kid))
                rep.problem("unknown_kid", "record signed with kid {}, which the key {} does not derive".format(
                    cose.kid_text(kid), self.keys.provisioning.kid_text), *where, seq=msg.seq or -1)
                return None
            mac = self.macs.get(kid)
            if mac is None and key.alg in cose.MAC_ALGS:
                mac = self.macs[kid] = cose.CbcMac(key.alg, key.k)
        try:
            if mac is None and not msg.encrypted:
                cose.CbcMac(key.alg, key.k)     # CoseError: an AEAD key seals no COSE_Mac0
            payload = msg.verify(key.k, mac=mac)
        except CoseError as e:
            rep.problem("mac", str(e), *where, seq=msg.seq if msg.seq is not None else -1)
            return None
        if kid != self.open_kid:
            self.keys.confirm(kid)
            self.open_kid, self.open_key, self.open_mac = kid, key, mac
        try:
            rec = self._loads(payload)
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
        follows = self.prev_seq is not None and seq == self.prev_seq + 1 and not self.broken
        self._sequence(seq, rec, where)
        self._key(msg.kid, rec, where, seq, follows)
        self._time(rec, where, seq)
        if rec.get(R.TYPE) == R.RETENTION:
            data_ = rec.get(R.DATA, {})
            rep.retained.append((data_.get(R.RETENTION_FIRST, -1), data_.get(R.RETENTION_LAST, -1)))
        if seq in self.watch:
            rep.tags[seq] = msg.tag
        if rep.first_seq is None:
            rep.first_seq = seq
            rep.gateway = rec.get(R.GATEWAY) if isinstance(rec.get(R.GATEWAY), str) else None
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

    def _key(self, kid: bytes, rec: dict, where: tuple[str, int], seq: int, follows: bool) -> None:
        """Kids change only one epoch on, right after a key_rotation record sealed with
        the old key that announces the new kid: a holder of only a later epoch's key
        cannot forge that record (docs/keys.md, "Rotation order")."""
        announced, self.announced = self.announced, None
        if rec.get(R.TYPE) == R.KEY_ROTATION:
            self._rotation(kid, rec, where, seq)
        if kid == self.prev_kid:
            if announced is not None and follows:
                self.report.problem("key", "record {} is still sealed with kid {} after the rotation to {}".format(
                    seq, cose.kid_text(kid), cose.kid_text(announced)), *where, seq=seq)
            return
        epoch = epoch_number(kid)
        self.prev_kid = kid
        text = cose.kid_text(kid)
        if text not in self.report.kids:
            self.report.kids.append(text)
        if epoch < self.prev_kid_epoch:
            self.report.problem("key", "kid {} goes back to an older epoch".format(text), *where, seq=seq)
        elif epoch > self.prev_kid_epoch + 1 and self.prev_kid_epoch >= 0:
            # A rotation moves one epoch: a jump is someone holding a later epoch's key
            # (derived forward only) re-sealing the journal from an earlier point on.
            self.report.problem("key", "kid jumps from epoch {} to {}: a rotation moves one epoch at a "
                                "time".format(self.prev_kid_epoch, epoch), *where, seq=seq)
        elif self.prev_kid_epoch >= 0 and follows and announced != kid:
            self.report.problem("key", "kid changes to {} without a key_rotation record sealed with the "
                                "previous epoch's key announcing it".format(text), *where, seq=seq)
        self.prev_kid_epoch = max(epoch, self.prev_kid_epoch)

    def _rotation(self, kid: bytes, rec: dict, where: tuple[str, int], seq: int) -> None:
        """A key_rotation record announces the next epoch of the key that seals it."""
        data = rec.get(R.DATA) if isinstance(rec.get(R.DATA), dict) else {}
        new, epoch = data.get(R.ROTATION_NEW_KID), epoch_number(kid)
        if data.get(R.ROTATION_OLD_KID) != kid or epoch < 0 or new != epoch_kid(kid.rpartition(b"/")[0], epoch + 1):
            self.report.problem("key", "key_rotation record {} sealed with kid {} does not announce the next "
                                "epoch of its own key".format(seq, cose.kid_text(kid)), *where, seq=seq)
        else:
            self.announced = new

    def _time(self, rec: dict, where: tuple[str, int], seq: int) -> None:
        get = rec.get
        boot, mono, wall = get(R.BOOT, -1), get(R.MONO_MS, -1), get(R.WALL_MS, -1)
        same_boot = boot == self.prev_boot
        if same_boot:
            if mono < self.prev_mono - TIME_SLACK_MS:
                self.report.problem("time", "monotonic time goes back from {} to {} ms".format(
                    self.prev_mono, mono), *where, seq=seq)
        else:
            if boot < self.prev_boot:
                self.report.problem("time", "boot number goes back from {} to {}".format(self.prev_boot, boot),
                                    *where, seq=seq)
            self.wall_steps_unexplained()
        trusted = get(R.TIME_QUALITY) == R.TIME_TRUSTED
        if trusted:
            if same_boot and wall < self.prev_wall - TIME_SLACK_MS:
                self.wall_back.append((mono, "trusted wall time goes back from {} to {} ms".format(
                    self.prev_wall, wall), where, seq))
            if wall > self.prev_wall:
                self.prev_wall = wall
        if get(R.TYPE) == R.HEALTH:
            data = get(R.DATA)
            if isinstance(data, dict) and data.get(R.HEALTH_CODE) == R.HEALTH_CLOCK_STEP:
                # The gateway's own word that its clock was stepped: the regressions just before are the step's.
                self.wall_back = [w for w in self.wall_back if w[0] < mono - STEP_SEEN_MS]
                self.prev_wall = wall if trusted else -1
        if not same_boot:       # both clocks are checked within a boot (docs/journal.md)
            self.prev_boot = boot
            self.prev_mono = -1
            self.prev_wall = -1
        if mono > self.prev_mono:
            self.prev_mono = mono

    def wall_steps_unexplained(self) -> None:
        """Wall time that went back with no clock-step record after it: problems."""
        for _mono, message, where, seq in self.wall_back:
            self.report.problem("time", message, *where, seq=seq)
        self.wall_back = []


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
    for a, b in report.retained:
        # Retention drops whole segments, oldest first: what it dropped lies before every record kept.
        if report.first_seq is not None and b >= report.first_seq:
            report.problem("retention", "a retention record says records {}..{} were dropped, but older records "
                           "(from {}) are kept: retention drops the oldest segments first".format(
                               a, b, report.first_seq), seq=a)
    if report.first_seq not in (None, 0) and not retained(0, report.first_seq - 1):
        report.problem("start", "the journal starts at record {}: records 0..{} are missing".format(
            report.first_seq, report.first_seq - 1), seq=report.first_seq)


Anchor = tuple[int, "bytes | None"]    # (seq, tag) of a checkpoint the head end saw; tag None: seq only


class Anchoring(NamedTuple):
    """What the anchors say about a journal: problems as (kind, message, seq), and the
    newest anchored seq the journal holds with the anchor's tag (None: no anchor)."""
    problems: list[tuple[str, str, int]]
    anchored_seq: int | None


def check_anchors(tags: dict[int, bytes], first_seq: int | None, last_seq: int | None,
                  anchors: Iterable[Anchor]) -> Anchoring:
    """Check a journal against checkpoints kept outside the gateway (pure).

    ``tags``: the tag of each record of the journal an anchor names (seq -> tag);
    ``first_seq``/``last_seq``: the journal's span (None: no record).  An anchor
    past the journal's end is a truncation; one whose record is missing or
    carries another tag is a rewritten journal.  Anchors before ``first_seq``
    name records retention dropped and are not checked (verify checks the start).
    """
    problems: list[tuple[str, str, int]] = []
    anchored: int | None = None
    last = -1 if last_seq is None else last_seq
    for seq, tag in sorted(set(anchors), key=lambda a: (a[0], a[1] or b"")):
        if seq > last:
            problems.append(("truncated", "a head-end checkpoint names record {} but the journal ends at "
                             "{}: its tail was cut".format(seq, last), seq))
        elif first_seq is not None and seq < first_seq:
            continue
        elif seq not in tags:
            problems.append(("checkpoint", "record {}, which a head-end checkpoint names, is not in the "
                             "journal".format(seq), seq))
        elif tag is not None and tags[seq] != tag:
            problems.append(("checkpoint", "record {} has tag {}, but the head end's checkpoint says {}: "
                             "the journal was rewritten from there or before".format(
                                 seq, tags[seq].hex()[:16], tag.hex()[:16]), seq))
        elif tag is not None:
            anchored = seq
    return Anchoring(problems, anchored)


def _truncation(report: Report, directory: Path, anchors: Sequence[Anchor]) -> None:
    last = report.last_seq if report.last_seq is not None else -1
    try:
        acked = json.loads((directory / "cursor").read_bytes())["acked"]
    except (OSError, ValueError, KeyError, TypeError):
        acked = -1
    if isinstance(acked, int) and acked > last:
        report.problem("truncated", "records up to {} were acknowledged upstream but the journal "
                       "ends at {}".format(acked, last), seq=acked)
    found = check_anchors(report.tags, report.first_seq, report.last_seq, anchors)
    for kind, message, seq in found.problems:
        report.problem(kind, message, seq=seq)
    report.anchors = len(anchors)
    report.anchored_seq = found.anchored_seq


def verify_dir(directory: str | Path, provisioning: CoseKey, anchors: Sequence[Anchor] = ()) -> Report:
    """Verify a journal folder; ``anchors`` are this gateway's checkpoints as the head
    end stored them (``check_anchors``; docs/journal.md, "Anchored tails")."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CabguardError("journal folder {} does not exist".format(directory))
    report = Report()
    checker = Checker(EpochKeys(provisioning), report, frozenset(seq for seq, _tag in anchors))
    segments = list_segments(directory)
    if not segments:
        raise CabguardError("no journal in {}: it holds no segment files (NNNNNNNN.seg); give the journal "
                            "folder ([journal] dir of the site config)".format(directory))
    report.segments = len(segments)
    for i, (_number, path) in enumerate(segments):
        name = path.name
        try:
            data = read_segment(path)
        except OSError as e:
            report.problem("io", "cannot read: {}".format(e.strerror), name)
            continue
        except InputFileError as e:
            report.problem("io", str(e), name)
            continue
        for item in iter_frames(data):
            if isinstance(item, Bad):
                last_segment = i == len(segments) - 1
                if last_segment and could_be_torn(data, item):
                    report.warnings.append({"kind": "torn_tail", "segment": name, "offset": item.offset,
                                            "message": "{} bytes of an unfinished write at the end "
                                                       "(a crash; cut at the next start)".format(item.length)})
                else:
                    due = -1 if checker.prev_seq is None else checker.prev_seq + 1
                    report.problem("frame", "{} ({} bytes skipped{})".format(
                        item.reason, item.length, ", where record {} was due".format(due) if due >= 0 else ""),
                        name, item.offset, seq=due)
                    checker.broken = True
                continue
            checker.record(item[1], (name, item[0]))
    checker.wall_steps_unexplained()
    _wrong_key(report, provisioning)
    _explained(report)
    _truncation(report, directory, anchors)
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


def _parse_checkpoint(text: str) -> Anchor:
    seq, _, tag = text.partition(":")
    try:
        return int(seq), bytes.fromhex(tag) if tag else None
    except ValueError:
        raise CabguardError("--checkpoint {!r}: want SEQ or SEQ:TAGHEX (from the heartbeat)".format(text)) from None


def read_checkpoints(path: str | Path, gateway: str | None) -> list[Anchor]:
    """The anchors of ``gateway`` in a checkpoints file: JSON lines
    ``{"gateway": ID, "seq": N, "tag": HEX}`` as heartbeats carry them
    (docs/journal.md); lines of other gateways are passed over."""
    anchors = []
    where = ""
    try:
        with open_text(path, "checkpoints file") as f:
            for n, line in enumerate(f, 1):
                where = "{}:{}".format(path, n)
                if line.strip():
                    anchor = _checkpoint_line(parse_json(line.strip(), where, "checkpoint line"), gateway)
                    if anchor is not None:
                        anchors.append(anchor)
    except OSError as e:
        raise CabguardError("cannot read checkpoints file {}: {}".format(path, e.strerror)) from None
    except InputFileError as e:
        raise CabguardError(str(e)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CabguardError("{}: not a checkpoint line ({}); want {{\"gateway\": ID, \"seq\": N, "
                            "\"tag\": HEX}} (docs/journal.md)".format(where or path, e)) from None
    return anchors


def _checkpoint_line(doc: dict, gateway: str | None) -> Anchor | None:
    seq, tag, gw = doc["seq"], bytes.fromhex(doc["tag"]), doc["gateway"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 1 << 63 or not isinstance(gw, str):
        raise ValueError("seq must be a whole number >= 0, gateway a string")
    return (seq, tag) if gw == gateway else None


def print_text(report: Report, out=sys.stdout) -> None:
    for p in report.problems[:TEXT_PROBLEMS]:
        where = ["{} @{}".format(p["segment"], p["offset"])] if p["segment"] else []
        where += ["seq {}".format(p["seq"])] if p["seq"] >= 0 else []
        print("TAMPERING? {}{}".format(", ".join(where) + ": " if where else "", p["message"]), file=out)
    if len(report.problems) > TEXT_PROBLEMS:
        print("... and {} more problems (--json lists them all)".format(
            len(report.problems) - TEXT_PROBLEMS), file=out)
    for w in report.warnings:
        print("warning: {} @{}: {}".format(w["segment"], w["offset"], w["message"]), file=out)
    span = "records {}..{}".format(report.first_seq, report.last_seq) if report.records else "no records"
    print("{} records in {} segments ({}), kids: {}".format(
        report.records, report.segments, span, ", ".join(report.kids) or "-"), file=out)
    print(tail_line(report), file=out)
    print("OK: every MAC, the chain and the sequence check out" if report.ok
          else "FAILED: {} problem(s)".format(len(report.problems)), file=out)


def tail_line(report: Report) -> str:
    """How far the tail is anchored: a cut at a frame boundary leaves a valid journal, so
    only a checkpoint kept outside the gateway can show one, up to that checkpoint."""
    last = report.last_seq if report.last_seq is not None else -1
    if report.anchored_seq is None:
        how = ("none of {} head-end checkpoints anchors it".format(report.anchors) if report.anchors
               else "no head-end checkpoint anchors it (--checkpoints FILE)")
    else:
        how = "a head-end checkpoint anchors seq {}".format(report.anchored_seq)
    return "tail: {}; cannot rule out truncation past seq {}".format(how, last)


def _headend_anchors(db: str, gateway: str) -> list[Anchor]:
    """The checkpoints the head end anchored for this gateway (``--headend DB``)."""
    from controller.headend.store import open_store     # only with --headend: the CLI composes the two
    store = open_store(db, migrate_now=False)
    try:
        anchors = store.anchors(gateway)
    finally:
        store.close()
    if not anchors:
        raise CabguardError("the head-end database {} holds no checkpoint of gateway {!r} (give --gateway as "
                            "`cabguard headend status` lists it)".format(db, gateway))
    return anchors


def _anchors(args: argparse.Namespace, provisioning: CoseKey) -> list[Anchor]:
    anchors = [_parse_checkpoint(text) for text in args.checkpoint or ()]
    gateway = args.gateway or provisioning.kid_text.partition("/")[0]
    if args.checkpoints:
        anchors += read_checkpoints(args.checkpoints, gateway)
    if args.headend:
        anchors += _headend_anchors(args.headend, gateway)
    return anchors


def main(args: argparse.Namespace) -> int:
    key = load_key(args.key)
    report = verify_dir(args.journal, key, _anchors(args, key))
    if args.json:
        json.dump(report.as_json(), sys.stdout)
        print()
    else:
        print_text(report)
    return 0 if report.ok else 1
