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
                                   "events and a digest (docs/trace.md); or re-run an "
                                   "incident's evidence window from a journal.")
    p.add_argument("trace", metavar="TRACE", help="trace file (JSON Lines), or a journal folder with --incident")
    p.add_argument("--incident", type=int, metavar="SEQ",
                   help="TRACE is a journal: replay the evidence of this incident (its seq or its alarm's)")
    p.add_argument("--key", metavar="KEY", help="with --incident: the record key file")
    p.add_argument("--trace-out", metavar="FILE", help="with --incident: also write the rebuilt trace")
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


def _keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make a gateway's COSE_Key files",
                       description="Key files (COSE_Key, mode 0600); see docs/keys.md.")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser("gen", help="write record, command and installer keys for a gateway",
                              description="Write record.key (provisioning record key), command.key "
                                          "and installer.key for one gateway, mode 0600.")
    gen.add_argument("--gateway", required=True, metavar="ID", help="the gateway's id (names the kids)")
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    gen.add_argument("--alg", choices=["aes-mac", "sm4-mac", "a128gcm", "sm4-gcm"], default="aes-mac",
                     help="record algorithm: MAC only (default aes-mac) or encrypted (a128gcm, sm4-gcm)")
    gen.add_argument("--force", action="store_true", help="replace existing key files")
    gen.set_defaults(handler="controller.keygen:main")


def _verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a journal: MACs, chain, sequence, time, truncation",
                       description="Check every record of a journal folder with the provisioning "
                                   "record key; exit 1 on any sign of tampering (docs/journal.md).")
    p.add_argument("journal", metavar="JOURNAL_DIR", help="the journal folder (NNNNNNNN.seg files)")
    p.add_argument("--key", required=True, help="the record key file from `cabguard keys gen`")
    p.add_argument("--checkpoint", metavar="SEQ[:TAG]",
                   help="the last checkpoint the head-end saw in a heartbeat (detects truncation)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.set_defaults(handler="controller.verify:main")


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_demo, _replay, _bench, _keys, _verify]


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
