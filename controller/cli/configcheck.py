"""``cabguard config check SITE.toml``: every problem at once, or OK; each bus's wire budget."""

from __future__ import annotations

import argparse
import sys

from controller.gateway.config import SiteConfig, load
from controller.gateway.site import assemble
from drivers.modbus.budget import device_load, verdict
from drivers.modbus.profiles import load_profile


def wire_budgets(config: SiteConfig) -> list[tuple[str, str]]:
    """(ok | warning | error, line) per bus: its devices' polls against its baud."""
    out = []
    for bus in config.doc["bus"]:
        devices = [device_load(d["name"], load_profile(d["profile"]), d["poll_ms"], bus["baud"],
                               bus["timeout_ceiling_ms"] / 1000)
                   for d in config.doc["device"] if d["bus"] == bus["name"]]
        out.append(verdict(bus["name"], bus["baud"], devices))
    return out


def main(args: argparse.Namespace) -> int:
    config = load(args.config)      # ConfigError lists every problem of the file itself
    site = assemble(config)         # ... and of what it names (profiles, signals)
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
