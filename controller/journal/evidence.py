"""Evidence windows: the signal image around an incident, and its replay.

The runtime feeds ``EvidenceRing.scan()`` after every ``step()``; the ring
keeps the last ``before_ms`` of scans as deltas (changed signals and the
commands of each scan) over a base image and the core's state at the base.
``incident(seq, severity, now)`` starts a window; ``after_ms`` later the
window comes back from ``scan()``, ready for ``records.evidence``.  The
journal then holds everything ``cabguard replay JOURNAL_DIR --incident SEQ``
needs: the catalog record of the boot and the window, rebuilt as a trace
(docs/trace.md) with a ``start`` header and re-run through ``step()``.
"""

from __future__ import annotations

import argparse
from collections import deque
from itertools import compress, count
from operator import ne
from pathlib import Path
from typing import Iterator, Sequence

from controller.core import ticks
from controller.core.catalog import Catalog
from controller.core.events import COMMAND_NAMES
from controller.core.step import CoreConfig, CoreState
from controller.core.trace import header_line, scan_line
from controller.errors import CabguardError
from controller.journal import records as R
from controller.journal.segments import Bad, iter_frames, list_segments, read_segment
from drivers import cose
from drivers.errors import CoseError
from drivers.atomicfile import write_output
from drivers.safefile import loads_cbor
from drivers.keys import CoseKey, EpochKeys, load_key
from rules.payload import decode_payload, json_data


MARKS = 10      # snapshots of the core's state per ``before_ms`` (EvidenceRing.scan)


class Window:
    """One finished evidence window."""

    def __init__(self, trigger_seq: int, severity: int, base_image: list[int], start: dict,
                 scans: list[tuple[int, list[int], list[list[int]]]]):
        self.trigger_seq = trigger_seq
        self.severity = severity
        self.base_image = base_image
        self.start = start
        self.scans = scans      # (tick, [index, value, ...], [[command, arg], ...])


class _Open:
    __slots__ = ("seq", "severity", "deadline", "base_image", "start", "scans")

    def __init__(self, seq: int, severity: int, deadline: int, base_image: list[int], start: dict,
                 scans: list):
        self.seq, self.severity, self.deadline = seq, severity, deadline
        self.base_image, self.start, self.scans = base_image, start, scans


class EvidenceRing:
    """The last ``before_ms`` of scans, and the windows still collecting."""

    def __init__(self, state: CoreState, before_ms: int = 10_000, after_ms: int = 10_000):
        self._state = state
        self.before_ms = before_ms
        self.after_ms = after_ms
        self.mark_ms = max(1, before_ms // MARKS)   # the core's state is snapshotted this often
        self._image = [0] * state.catalog.size      # the image after the last scan
        self._base = [0] * state.catalog.size       # the image before the oldest kept scan
        self._base_start = state.snapshot()
        self._scans: deque = deque()                # (tick, changes, commands)
        self._marks: deque = deque()                # (scans taken so far, tick, snapshot after that scan)
        self._taken = 0                             # scans recorded so far
        self._dropped = 0                           # scans folded into the base so far
        self._open: list[_Open] = []
        self.last_tick = -1                         # the tick of the last scan recorded (-1: none yet)

    def scan(self, now: int, image: Sequence[int], commands: Sequence[tuple[int, int]]) -> list[Window]:
        """Record one scan (call it after ``step()``); returns windows that are complete.

        The core's state is snapshotted at a mark, ``MARKS`` times per
        ``before_ms``, not after every scan (that was most of an idle scan's
        work): the base moves from mark to mark, so a window holds from
        ``before_ms`` to ``before_ms + mark_ms`` of scans before its incident."""
        changes: list[int] = []
        prev = self._image
        if image != prev:       # a quiet scan changes nothing: compared, and the changes found, at C speed
            for i in compress(count(), map(ne, image, prev)):
                v = image[i]
                changes += (i, v)
                prev[i] = v
        entry = (now, changes, [[c, a] for c, a in commands] if commands else [])
        self.last_tick = now
        self._scans.append(entry)
        self._taken += 1
        marks = self._marks
        if not marks or ticks.diff(now, marks[-1][1]) >= self.mark_ms:
            marks.append((self._taken, now, self._state.snapshot()))
        while ticks.diff(now, marks[0][1]) > self.before_ms:
            upto, _t, snap = marks.popleft()
            while self._dropped < upto:
                old_changes = self._scans.popleft()[1]
                self._dropped += 1
                for k in range(0, len(old_changes), 2):
                    self._base[old_changes[k]] = old_changes[k + 1]
            self._base_start = snap
            if not marks:
                break
        if not self._open:
            return []
        done = []
        for w in list(self._open):
            w.scans.append(entry)
            if ticks.diff(now, w.deadline) >= 0:
                self._open.remove(w)
                done.append(Window(w.seq, w.severity, w.base_image, w.start, w.scans))
        return done

    def incident(self, seq: int, severity: int, now: int) -> None:
        """Start a window for the record ``seq`` (an alarm): the kept scans, and more to come."""
        self._open.append(_Open(seq, severity, ticks.add(now, self.after_ms), list(self._base),
                                dict(self._base_start), list(self._scans)))


def evidence_record(ctx: R.Context, window: Window) -> dict[int, object]:
    """The record of a finished window (CDDL evidence-data): ticks as deltas."""
    deltas = []
    prev_t = window.scans[0][0] if window.scans else 0
    for t, changes, commands in window.scans:
        deltas.append([ticks.diff(t, prev_t), changes, commands])
        prev_t = t
    return R.make(R.EVIDENCE, window.severity, ctx, {
        R.EVIDENCE_INCIDENT: window.trigger_seq, R.EVIDENCE_T0: window.scans[0][0] if window.scans else 0,
        R.EVIDENCE_FIRST: window.base_image, R.EVIDENCE_DELTAS: deltas, R.EVIDENCE_START: window.start})


def incident_record(ctx: R.Context, window: Window, evidence_seq: int) -> dict[int, object]:
    return R.make(R.INCIDENT, window.severity, ctx, {R.INCIDENT_TRIGGER: window.trigger_seq,
                                                     R.INCIDENT_EVIDENCE: evidence_seq})


# ---- reading it back ------------------------------------------------------

def verified_records(directory: Path, keys: EpochKeys) -> Iterator[dict]:
    """Every record whose MAC checks out, in journal order (others are skipped:
    ``cabguard verify`` is the place that reports them)."""
    for _n, path in list_segments(directory):
        for item in iter_frames(read_segment(path)):
            if isinstance(item, Bad):
                continue
            try:
                msg = cose.decode(item[1])
                key = keys.key_for(msg.kid)
                if key is None:
                    continue
                rec = loads_cbor(msg.verify(key.k))
            except (CoseError, ValueError):
                continue
            keys.confirm(msg.kid)
            if isinstance(rec, dict):
                yield rec


def incident_trace(directory: str | Path, provisioning: CoseKey, seq: int) -> list[str]:
    """The trace lines of the evidence for incident ``seq`` (the incident
    record's seq or its trigger's), with the catalog of the boot it was in."""
    catalog_rec = None
    windows: dict[int, tuple[dict, dict]] = {}   # trigger seq -> (evidence, catalog of its boot)
    triggers: dict[int, int] = {}                # incident record seq -> trigger seq
    for rec in verified_records(Path(directory), EpochKeys(provisioning)):
        data = rec.get(R.DATA, {})
        if rec.get(R.TYPE) == R.CATALOG:
            catalog_rec = data
        elif rec.get(R.TYPE) == R.EVIDENCE and catalog_rec is not None:
            windows[data.get(R.EVIDENCE_INCIDENT, -1)] = (data, catalog_rec)
        elif rec.get(R.TYPE) == R.INCIDENT:
            triggers[rec.get(R.SEQ, -1)] = data.get(R.INCIDENT_TRIGGER, -1)
    found = windows.get(triggers.get(seq, seq))
    if found is None:
        known = ", ".join("{} (alarm {})".format(i, t) for i, t in sorted(triggers.items()) if t in windows)
        raise CabguardError("{}: no evidence window for incident {}; {} (`cabguard journal incidents` "
                            "lists them)".format(directory, seq, "this journal's incidents: " + known
                                                 if known else "this journal has no incidents"))
    evidence, catalog = found
    return _trace_lines(catalog, evidence)


def _trace_lines(catalog_rec: dict, evidence: dict) -> list[str]:
    catalog = Catalog([tuple(s) for s in catalog_rec[R.CATALOG_SPECS]])
    zones = list(catalog_rec[R.CATALOG_ZONES])
    config = CoreConfig(catalog_rec[R.CATALOG_CORE], [catalog.zone(z) for z in zones])
    extra = {"start": evidence[R.EVIDENCE_START]}
    table = catalog_rec.get(R.CATALOG_TABLE)
    if table is not None:   # replay with the rules that ran
        extra["rules"] = json_data(decode_payload(table, "the journal's catalog record"))
    model = catalog_rec.get(R.CATALOG_MODEL)
    if model is not None:   # ... behind the model that ran (its adapted state is in "start")
        extra["model"] = model
    lines = [header_line(catalog, config, zones, extra)]
    base = evidence[R.EVIDENCE_FIRST]
    t = evidence[R.EVIDENCE_T0]
    first = True
    for dt, changes, commands in evidence[R.EVIDENCE_DELTAS]:
        t = ticks.add(t, dt)
        sets = {}
        if first:   # the image starts all zeros: set the base, then the first scan's changes
            sets = {catalog.names[i]: v for i, v in enumerate(base) if v}
            first = False
        for k in range(0, len(changes), 2):
            sets[catalog.names[changes[k]]] = changes[k + 1]
        lines.append(scan_line(t, sets, [(COMMAND_NAMES[c], a) for c, a in commands]))
    return lines


def replay_incident(args: argparse.Namespace) -> list[str]:
    """The command line's way in: ``cabguard replay JOURNAL_DIR --incident SEQ --key KEY``."""
    if args.key is None:
        raise CabguardError("--incident needs --key (the record key that verifies the journal)")
    lines = incident_trace(args.trace, load_key(args.key), args.incident)
    if args.trace_out:
        write_output(args.trace_out, ("\n".join(lines) + "\n").encode(), "trace", 0o644)
    return lines
