"""``cabguard journal``: list, filter, show and export a journal's records; list its incidents.

Works on the gateway's journal folder or on a copy: only the record key is
needed (docs/journal.md "Reading a journal").
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Iterator

from controller.core.events import SEVERITY_NAMES
from controller.errors import CabguardError, UsageError
from controller.journal.browse import Entry, Filter, entries, incidents, parse_time
from drivers.keys import load_key

CSV_FIELDS = ("seq", "boot", "time", "clock_trusted", "type", "severity", "rule", "devices", "text")


def _entries(args: argparse.Namespace) -> Iterator[Entry]:
    return entries(args.journal, load_key(args.key))


def _filter(args: argparse.Namespace) -> Filter:
    try:
        since = parse_time(args.since, "--since") if args.since else None
        until = parse_time(args.until, "--until") if args.until else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    return Filter(since, until, SEVERITY_NAMES.index(args.severity) if args.severity else 0,
                  tuple(args.type or ()), tuple(args.rule or ()), tuple(args.device or ()))


def _line(e: Entry) -> str:
    return "{:>7}  {}  {:<8}  {:<10}  {}".format(e.seq, e.time, e.severity, e.type, e.text)


def list_cmd(args: argparse.Namespace) -> int:
    keep = _filter(args)
    chosen = (e for e in _entries(args) if keep.keeps(e))
    if args.format == "jsonl":
        for e in chosen:
            print(json.dumps(e.as_json()))
    elif args.format == "csv":
        out = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        out.writeheader()
        for e in chosen:
            row = e.as_json()
            row["devices"] = " ".join(e.devices)
            out.writerow(row)
    else:
        for e in chosen:
            print(_line(e))
    return 0


def show(args: argparse.Namespace) -> int:
    for e in _entries(args):
        if e.seq == args.seq:
            if args.json:
                print(json.dumps({**e.as_json(), "record": _plain(e.record)}))
            else:
                print(_line(e))
                print(json.dumps(_plain(e.record), indent=1))
            return 0
    raise CabguardError("{}: no verified record with seq {} (`cabguard journal list` shows them; "
                        "`cabguard verify` says why a record does not verify)".format(args.journal, args.seq))


def _plain(value):
    """A record as JSON can hold it: byte strings as hex, integer keys as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def incidents_cmd(args: argparse.Namespace) -> int:
    found = incidents(_entries(args))
    if args.json:
        print(json.dumps([{"seq": i.seq, "time": i.time, "severity": i.severity,
                           "trigger": i.trigger.as_json() if i.trigger else None,
                           "evidence_seq": i.evidence_seq, "window_ms": i.window_ms, "scans": i.scans,
                           "video_bookmarks": i.bookmarks}
                          for i in found]))
        return 0
    for i in found:
        print("incident {}  {}  {}  evidence seq {}: {:.1f} s, {} scans  (replay --incident {})".format(
            i.seq, i.time, i.severity, i.evidence_seq, i.window_ms / 1000, i.scans, i.seq))
        if i.trigger is not None:
            print("    {}".format(_line(i.trigger)))
        for b in i.bookmarks:
            print("    video: camera {} {:.0f} s clip (bookmark seq {}{})".format(
                b["camera"], (b["end_ms"] - b["start_ms"]) / 1000, b["seq"], ", protect asked" if b["protect"] else ""))
    if not found:
        print("no incidents")
    return 0
