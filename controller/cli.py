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


def _eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="closed-loop evaluation of scenarios in virtual time",
                       description="Run scenarios (docs/scenarios.md) through step() in virtual time; "
                                   "report detection (PD), time-to-detect and nuisance alarms (NAR), "
                                   "rules alone against rules plus the anomaly model.")
    p.add_argument("scenario", nargs="+", help="scenario file(s) (TOML)")
    p.add_argument("--report", metavar="DIR", help="write a report with plots (PNG) into DIR")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("--model", metavar="MODEL", help="anomaly model (default: rules/models/port.json)")
    p.add_argument("--no-model", action="store_true", help="evaluate without the anomaly model")
    p.add_argument("--idle-ms", type=int, default=1000, metavar="MS",
                   help="longest virtual-time step between scans when nothing changes (default 1000)")
    p.set_defaults(handler="simulator.evaluate:main")


def _model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="the anomaly model: train it",
                       description="Anomaly model tools (docs/anomaly.md).")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    t = msub.add_parser("train", help="learn a baseline from scenarios or traces",
                        description="Learn the per-time-of-week baseline from the normal parts of "
                                    "scenario files (.toml) or recorded traces; labelled incidents "
                                    "are excluded. Writes integer tables as JSON.")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="scenario (.toml) or trace files")
    t.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (JSON)")
    t.add_argument("--cabinet", metavar="ID", help="learn only this cabinet of the scenarios (default: all, pooled)")
    t.set_defaults(handler="simulator.train:main")


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_demo, _replay, _bench, _eval, _model]


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
