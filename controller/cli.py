"""The ``cabguard`` command line.

Each subcommand's handler is imported only when it runs, so ``--help`` and
quick commands do not pay for cryptography or serial imports.  Errors that
are meant for people (every package's error base) print one clear message
and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from controller import __version__

Handler = str  # "module:function"


def _replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-run a recorded input trace, print a digest",
                       description="Re-run a trace through step() and print the outputs, "
                                   "events and a digest (docs/trace.md).")
    p.add_argument("trace", help="trace file (JSON Lines)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("--table", metavar="TABLE", help="run this compiled rule table (default: the "
                                                    "table in the trace header, if any)")
    p.add_argument("--key", metavar="KEY", help="installer key that verifies --table")
    p.set_defaults(handler="controller.replay:main")


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a scripted night at a cabinet, shown as a timeline",
                       description="Replay a built-in night (arming, a technician's visit, "
                                   "a forced door) through the core and show it as a timeline.")
    p.add_argument("--out", metavar="DIR", help="also keep the night's trace in DIR")
    p.set_defaults(handler="controller.demo:main")


def _bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="performance figures (what `make bench` runs)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("--only", metavar="AREA", action="append",
                   help="run only this area (repeatable); default: all")
    p.set_defaults(handler="controller.bench:main")


def _rules(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="check, compile and explain rule files (docs/rules.md)",
                       description="The rule language: check rule files, compile them into a "
                                   "signed table, explain a table against a trace.")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    catalog_help = ("signal catalog JSON (docs/rules.md); default: the built-in demo cabinet "
                    "(io, bms1, bms2, relay, sys.*, sched.night/shift_change/maintenance)")
    c = rsub.add_parser("check", help="validate rule files, report every problem",
                        description="Validate rule files against the signal catalog; every "
                                    "problem is reported with file, line, column and rule id.")
    c.add_argument("sources", nargs="*", metavar="SRC", help="rule files (default: rules/packs/*.toml)")
    c.add_argument("--catalog", metavar="FILE", help=catalog_help)
    c.set_defaults(handler="controller.rulescmd:check")
    k = rsub.add_parser("compile", help="compile rule files into a signed table",
                        description="Compile rule files into a CBOR table MAC'd with the installer key.")
    k.add_argument("sources", nargs="*", metavar="SRC", help="rule files (default: rules/packs/*.toml)")
    k.add_argument("-o", "--output", metavar="TABLE", required=True, help="table file to write")
    k.add_argument("--key", metavar="KEY", required=True, help="installer COSE_Key file")
    k.add_argument("--catalog", metavar="FILE", help=catalog_help)
    k.set_defaults(handler="controller.rulescmd:compile_cmd")
    e = rsub.add_parser("explain", help="which rule fired when, and why",
                        description="Replay TRACE with TABLE and show, for every rule raised or "
                                    "cleared, the scan and which of its terms were true.")
    e.add_argument("table", metavar="TABLE", help="compiled table file")
    e.add_argument("trace", metavar="TRACE", help="trace file (docs/trace.md)")
    e.add_argument("--key", metavar="KEY", help="verify the table's MAC with this key")
    e.set_defaults(handler="controller.rulescmd:explain")


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_demo, _replay, _bench, _rules]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cabguard",
        description="Battery-cabinet guard: reads the cabinet's devices, decides, "
                    "raises the alarm, and keeps evidence.",
    )
    parser.add_argument("--version", action="version", version="cabguard " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every package's error base: these print a message, never a traceback."""
    from controller.core.errors import CoreError
    from controller.errors import CabguardError

    bases: list[type[BaseException]] = [CabguardError, CoreError]
    for mod, name in (("drivers.errors", "DriverError"), ("rules.errors", "RuleError"),
                      ("simulator.errors", "SimError")):
        try:
            bases.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(bases)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except _user_errors() as e:
        print("cabguard: error: {}".format(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
