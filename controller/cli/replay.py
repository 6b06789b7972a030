"""``cabguard replay``: re-run a recorded trace and print what happened."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from controller.core.catalog import Catalog
from controller.core.errors import TableError, TraceError
from controller.core.modelrules import ModelRules, rules_from_header
from controller.core.outputs import OUTPUT_NAMES
from controller.core.trace import Replay, replay_lines
from controller.errors import CabguardError, UsageError
from controller.gateway.timeline import clock, describe, event_json, outputs_text
from drivers.safefile import open_text
from rules.errors import RuleError

RulesFactory = Callable[[Catalog, dict], Any]


def load(path: str, rules_factory: RulesFactory | None = None, keep_timeline: bool = True) -> Replay:
    """Replay a trace file; errors name the file and the line."""
    try:
        with open_text(path, "trace") as f:
            return replay_lines(f, rules_factory, keep_timeline)
    except OSError as e:
        raise CabguardError("cannot read trace {}: {}".format(path, e.strerror)) from None
    except UnicodeDecodeError as e:
        raise CabguardError("{}: not UTF-8 text (byte {} of a line); a trace is JSON Lines "
                            "(docs/trace.md)".format(path, e.start)) from None
    except RecursionError:     # json.loads of a line nested thousands deep
        raise CabguardError("{}: a line is nested too deep; a trace is JSON Lines (docs/trace.md)".format(
            path)) from None
    except (TraceError, TableError, RuleError) as e:
        raise CabguardError("{}: {}".format(path, e)) from None


def rules_factory(table: str | None, key_path: str | None) -> RulesFactory:
    """The rules for a replay: ``table`` verified with ``key_path``, else the
    table the trace header carries under "rules" behind the anomaly model it
    carries under "model" (docs/trace.md), if any."""
    if table:
        if not key_path:
            raise UsageError("--table needs --key KEY to verify the table")
        # Imported here: only a table file needs the cryptography.
        from controller.gateway.tables import load_table
        from drivers.keys import load_key
        key = load_key(key_path)
        return lambda catalog, _head: load_table(table, key, catalog)[1]
    return lambda catalog, head: rules_from_header(head, catalog)


def rule_ids(replay: Replay) -> tuple[str, ...]:
    rules = replay.state.rules
    if isinstance(rules, ModelRules):
        return rules.rule_names()
    return tuple(rules.table.ids) if rules is not None else ()


def print_timeline(replay: Replay, origin_s: int = 0, rule_names: tuple[str, ...] = (),
                   out=sys.stdout) -> None:
    catalog = replay.state.catalog
    assert replay.timeline is not None
    t0 = replay.timeline[0][1] if replay.timeline else 0
    prev: list[int] | None = None
    for _scan, t, outputs, events in replay.timeline:
        stamp = clock((t - t0) & ((1 << 30) - 1), origin_s)
        for ev in events:
            print("{}  {}".format(stamp, describe(ev, catalog, rule_names)), file=out)
        if outputs != prev:
            print("{}    {}".format(stamp, outputs_text(outputs)), file=out)
            prev = outputs


def summary(replay: Replay) -> dict:
    from controller.core.modes import MODE_NAMES
    assert replay.timeline is not None
    return {
        "scans": replay.scans,
        "events": replay.events,
        "digest": replay.digest(),
        "final_mode": MODE_NAMES[replay.state.mode],
        "final_outputs": dict(zip(OUTPUT_NAMES, replay.state.outputs)),
        "rules": list(rule_ids(replay)),
        "timeline": [
            {"scan": scan, "t": t, "outputs": dict(zip(OUTPUT_NAMES, outputs)),
             "events": [event_json(e) for e in events]}
            for scan, t, outputs, events in replay.timeline
        ],
    }


def _incident(args: argparse.Namespace) -> Replay:
    from controller.journal.evidence import replay_incident

    try:
        return replay_lines(replay_incident(args), rules_factory(None, None))
    except TraceError as e:
        raise CabguardError("{}: incident {}: {}".format(args.trace, args.incident, e)) from None


def main(args: argparse.Namespace) -> int:
    replay = _incident(args) if args.incident is not None else load(args.trace, rules_factory(args.table, args.key))
    if args.json:
        json.dump(summary(replay), sys.stdout)
        print()
        return 0
    print_timeline(replay, rule_names=rule_ids(replay))
    print("{} scans, {} events, final mode {}".format(
        replay.scans, replay.events, summary(replay)["final_mode"]))
    print("digest {}".format(replay.digest()))
    return 0
