"""``cabguard bench``: performance figures, printed, never asserted.

Each area is a module here with ``run() -> list[Figure]``.  ``make bench``
runs them all; ``--only AREA`` picks some.  A figure carries its target so
the printout says at a glance whether the goal is met.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import NamedTuple

AREAS = ("core", "rules", "journal", "modbus", "runtime", "console", "uplink", "headend", "eval", "flash", "senses")


class Figure(NamedTuple):
    name: str
    value: float
    unit: str
    target: str = ""      # e.g. "<= 20"; empty when the issue asks only to report
    note: str = ""

    def met(self) -> bool | None:
        if not self.target:
            return None
        op, _, bound = self.target.partition(" ")
        limit = float(bound)
        return self.value <= limit if op == "<=" else self.value >= limit


def _line(f: Figure) -> str:
    verdict = {None: "", True: "  ok", False: "  MISSED"}[f.met()]
    target = "  (target {} {})".format(f.target, f.unit) if f.target else ""
    note = "  [{}]".format(f.note) if f.note else ""
    return "  {:<44} {:>12.3f} {:<8}{}{}{}".format(f.name, f.value, f.unit, target, verdict, note)


def main(args: argparse.Namespace) -> int:
    areas = args.only or list(AREAS)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        from controller.errors import UsageError
        raise UsageError("unknown bench area {} (known: {})".format(", ".join(unknown), ", ".join(AREAS)))
    results: dict[str, list[Figure]] = {}
    for area in areas:
        if not args.json:
            print("{}:".format(area), flush=True)
        figures = importlib.import_module("controller.devtools.bench." + area).run()
        results[area] = figures
        if not args.json:
            for f in figures:
                print(_line(f), flush=True)
    if args.json:
        json.dump({area: [f._asdict() | {"met": f.met()} for f in figs]
                   for area, figs in results.items()}, sys.stdout, indent=1)
        print()
    return 0
