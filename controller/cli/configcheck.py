"""``cabguard config check SITE.toml``: every problem at once, or OK.

The config itself, what it names (profiles, signals, coils, entry zones),
and the files ``cabguard run`` will read: keys, rule table, model.  With
``--installing`` (flash.sh on the flashing machine) the files are the
installer's: ``--keys DIR``, ``--model FILE`` and the rule sources
``--rules``, compiled for this site, in place of the table.
"""

from __future__ import annotations

import argparse

from controller.gateway.config import ConfigError, load
from controller.gateway.schema import Problem
from controller.gateway.site import Site, assemble
from controller.gateway.sitefiles import Sources, file_problems


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
    if problems:
        raise ConfigError(args.config, problems)
    assert site is not None
    print("{}: OK — gateway {}, {} bus(es), {} device(s), {} signals, {} schedule(s)".format(
        args.config, config.gateway_id, len(site.pollers), len(config.doc["device"]),
        site.catalog.size, len(site.schedules.names())))
    return 0
