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
from controller.journal.browse import Entry, Filter, entries, incidents, parse_time, plain
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
            print(e.line())
    return 0


def show(args: argparse.Namespace) -> int:
    for e in _entries(args):
        if e.seq == args.seq:
            print(json.dumps({**e.as_json(), "record": plain(e.record)}) if args.json else e.full())
            return 0
    raise CabguardError("{}: no verified record with seq {} (`cabguard journal list` shows them; "
                        "`cabguard verify` says why a record does not verify)".format(args.journal, args.seq))


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
        print(i.text())
    if not found:
        print("no incidents")
    return 0
