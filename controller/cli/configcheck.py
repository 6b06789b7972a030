"""``cabguard config check SITE.toml``: every problem at once, or OK."""

from __future__ import annotations

import argparse

from controller.gateway.config import load
from controller.gateway.site import assemble


def main(args: argparse.Namespace) -> int:
    config = load(args.config)      # ConfigError lists every problem of the file itself
    site = assemble(config)         # ... and of what it names (profiles, signals)
    print("{}: OK — gateway {}, {} bus(es), {} device(s), {} signals, {} schedule(s)".format(
        args.config, config.gateway_id, len(site.pollers), len(config.doc["device"]),
        site.catalog.size, len(site.schedules.names())))
    return 0
