"""``cabguard config check SITE.toml``: every problem at once, or OK; each bus's wire budget.

The config itself, what it names (profiles, signals, coils, entry zones),
and the files ``cabguard run`` will read: keys, rule table, model.  With
``--installing`` (flash.sh on the flashing machine) the files are the
installer's: ``--keys DIR``, ``--model FILE`` and the rule sources
``--rules``, compiled for this site, in place of the table.
"""

from __future__ import annotations

import argparse
import sys

from controller.gateway.config import ConfigError, SiteConfig, load, missing_extras
from controller.gateway.schema import Problem
from controller.gateway.site import Site, assemble
from controller.gateway.sitefiles import Sources, file_problems
from drivers.modbus.budget import device_load, read_limit_s, verdict
from drivers.modbus.profiles import load_profile


def wire_budgets(config: SiteConfig) -> list[tuple[str, str]]:
    """(ok | warning | error, line) per bus: its devices' polls against its baud."""
    out = []
    for bus in config.doc["bus"]:
        on_bus = [d for d in config.doc["device"] if d["bus"] == bus["name"]]
        limit = read_limit_s(bus["timeout_ceiling_ms"] / 1000, [d["poll_ms"] / 1000 for d in on_bus])
        devices = [device_load(d["name"], load_profile(d["profile"]), d["poll_ms"], bus["baud"], limit,
                               d["turnaround_ms"]) for d in on_bus]
        out.append(verdict(bus["name"], bus["baud"], devices))
    return out


def main(args: argparse.Namespace) -> int:
    config = load(args.config)      # ConfigError lists every problem of the file itself
    problems: list[Problem] = []
    site: Site | None = None
    try:
        site = assemble(config, with_model=False)   # ... and of what it names; the model is a file below
    except ConfigError as e:
        problems += e.problems
    sources = Sources(args.installing, args.keys or "", args.model or "", tuple(args.rules or ()))
    problems += file_problems(config, site.catalog if site else None, site.device_classes if site else {}, sources)
    missing = None if args.installing else missing_extras(config)   # on the gateway: are they installed?
    if missing is not None:
        problems += missing.problems
    if problems:
        raise ConfigError(args.config, problems)
    assert site is not None
    budgets = wire_budgets(config)
    for level, line in budgets:
        print(line if level == "ok" else "{}: {}".format(level, line), file=sys.stderr if level == "error" else sys.stdout)
    if any(level == "error" for level, _line in budgets):
        print("{}: refused: a bus is over its wire budget (docs/config.md, wire budget)".format(args.config),
              file=sys.stderr)
        return 1
    print("{}: OK — gateway {}, {} bus(es), {} device(s), {} signals, {} schedule(s)".format(
        args.config, config.gateway_id, len(site.pollers), len(config.doc["device"]),
        site.catalog.size, len(site.schedules.names())))
    return 0
