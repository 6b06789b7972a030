"""``cabguard rules check|compile|explain``: the host side of the rule language.

The compiler (rules/compiler.py) is pure; this module finds its inputs (the
signal catalog, the installer key), writes the signed table and explains a
table against a trace.  docs/rules.md documents the commands and the
``--catalog`` file.
"""

from __future__ import annotations

import argparse
import sys

from controller.core.catalog import SYSTEM_SIGNALS, Catalog, device_signals, schedule_signals
from controller.core.errors import CoreError
from controller.core.evaluator import Evaluator, rules_source
from controller.core.table import SEVERITY_NAMES, Table
from controller.gateway.tables import read_payload, sign, write_table
from controller.cli.replay import load as load_trace
from drivers.atomicfile import write_output
from drivers.keys import load_key, require_role
from drivers.safefile import InputFileError, parse_json, read_text
from drivers.modbus.profiles import CLASSES
from rules.compiler import Compiled, SiteCatalog, compile_files
from rules.errors import CatalogFileError
from rules.language import default_sources
from rules.payload import build_table, decode_payload

# Signals of each device class (docs/signals.md): what every profile of the class maps.
CLASS_SIGNALS = {cls: list(CLASSES[cls][0]) for cls in CLASSES}
DEMO_DEVICES = {"io": "io", "bms1": "battery", "bms2": "battery", "relay": "relay"}
DEMO_SCHEDULES = ("night", "shift_change", "maintenance")


def demo_catalog() -> tuple[list[tuple[str, str, int]], dict[str, str]]:
    """The built-in demo cabinet: io, bms1, bms2 (battery), relay, sys.*, sched.*."""
    specs: list[tuple[str, str, int]] = []
    for dev in sorted(DEMO_DEVICES):
        specs += device_signals(dev, CLASS_SIGNALS[DEMO_DEVICES[dev]])
    specs += list(SYSTEM_SIGNALS) + schedule_signals(DEMO_SCHEDULES)
    return specs, dict(DEMO_DEVICES)


def read_catalog_file(path: str) -> tuple[list[tuple[str, str, int]], dict[str, str]]:
    """A ``--catalog`` JSON file: {"signals": [[name, unit, scale]...], "device_classes": {...}}."""
    try:
        doc = parse_json(read_text(path, "catalog file"), path, "catalog file")
    except OSError as e:
        raise CatalogFileError("cannot read catalog {}: {}".format(path, e.strerror)) from None
    except InputFileError as e:
        raise CatalogFileError(str(e)) from None
    except ValueError as e:
        raise CatalogFileError("{}: not JSON ({})".format(path, e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("signals"), list) \
            or not isinstance(doc.get("device_classes", {}), dict):
        raise CatalogFileError('{}: want {{"signals": [[name, unit, scale], ...], '
                               '"device_classes": {{device: class}}}}'.format(path))
    specs = []
    for k, s in enumerate(doc["signals"]):
        if not isinstance(s, list) or len(s) != 3:
            raise CatalogFileError("{}: signals[{}] must be [name, unit, scale], got {!r}".format(path, k, s))
        specs.append((s[0], s[1], s[2]))
    classes = doc.get("device_classes", {})
    for dev, cls in sorted(classes.items()):
        if not isinstance(cls, str) or dev + ".online" not in [s[0] for s in specs]:
            raise CatalogFileError("{}: device_classes.{}: no device '{}' among the signals "
                                   "(its twin {}.online is missing)".format(path, dev, dev, dev))
    return specs, classes


def config_catalog(config_path: str) -> tuple[list[tuple[str, str, int]], dict[str, str]]:
    """The catalog and device classes of a site config, as the gateway will build them."""
    from controller.gateway.config import load
    from controller.gateway.site import assemble

    site = assemble(load(config_path), with_model=False)    # the catalog does not depend on the model file
    return site.catalog.specs(), site.device_classes


def site_catalog(catalog_path: str | None, config_path: str | None = None) -> tuple[Catalog, SiteCatalog]:
    if config_path:
        specs, classes = config_catalog(config_path)
    else:
        specs, classes = read_catalog_file(catalog_path) if catalog_path else demo_catalog()
    try:
        catalog = Catalog(specs)
    except CoreError as e:
        raise CatalogFileError("{}: {}".format(catalog_path or "built-in catalog", e)) from None
    return catalog, SiteCatalog(catalog.specs(), classes, catalog.digest())


def _compile(args: argparse.Namespace) -> tuple[Catalog, Compiled]:
    catalog, site = site_catalog(args.catalog, getattr(args, "config", None))
    return catalog, compile_files(default_sources(args.sources), site)


def _summary(compiled: Compiled) -> str:
    by_sev = [0] * len(SEVERITY_NAMES)
    for r in compiled.rules:
        by_sev[r.spec.severity] += 1
    counts = ", ".join("{} {}".format(n, SEVERITY_NAMES[i]) for i, n in enumerate(by_sev) if n)
    return "{} rules ({})".format(len(compiled.rules), counts or "none")


def print_left_out(compiled: Compiled) -> None:
    """A note, on stderr, for each rule left out for a schedule the site lacks: an
    installer who meant the site to have it sees what it costs."""
    for spec, schedule in compiled.left_out:
        print("note: {}:{}: rule '{}' is left out: it needs the schedule '{}', which this site does not "
              "define; add [schedules.{}] to the site config to run it (docs/rules.md, needs_schedule)".format(
                  spec.path, spec.header_line, spec.id, schedule, schedule), file=sys.stderr)


def _config_gateway(config_path: str) -> str:
    from controller.gateway.config import load
    return load(config_path).gateway_id


def check(args: argparse.Namespace) -> int:
    _catalog, compiled = _compile(args)
    for r in compiled.rules:
        print("  {:<32} {:<8} {}".format(r.id, SEVERITY_NAMES[r.spec.severity], r.when_text))
    print_left_out(compiled)
    print("ok: {}".format(_summary(compiled)))
    return 0


def compile_cmd(args: argparse.Namespace) -> int:
    key = load_key(args.key)
    gateway = _config_gateway(args.config) if args.config else None
    require_role(key, "installer", args.key, gateway)     # the gateway verifies tables with its installer key
    catalog, compiled = _compile(args)
    payload = compiled.encode()
    write_table(args.output, sign(payload, key))
    print_left_out(compiled)
    print("{}: {}, {} bytes, signed with key '{}'".format(
        args.output, _summary(compiled), len(payload), key.kid_text))
    if args.emit_python:
        write_output(args.emit_python, rules_source(Table(compiled.data, catalog.size)).encode(), "rules' Python", 0o644)
        print("{}: the Python the evaluator runs for it".format(args.emit_python))
    return 0


class ExplainingRules:
    """Wraps a table's evaluator; records, for every raise and clear, which of
    the rule's terms were true (a second evaluator runs each term alone)."""

    def __init__(self, data: dict, table: Table, image_size: int):
        self.main = Evaluator(table)
        explain = data.get("explain") or {"mem": 0, "rules": []}
        self.entries = explain["rules"]
        term_rules = []
        self.first_term = []
        for when_text, terms, _signals in self.entries:
            self.first_term.append(len(term_rules))
            term_rules += [[text, 0, 0, 0, code] for text, code in terms]
        self.terms = Evaluator(Table({"format": data["format"], "catalog": table.catalog,
                                      "source": table.source, "mem": explain["mem"],
                                      "guards": explain.get("guards", []), "rules": term_rules}, image_size))
        self.scans = 0
        self.records: list[tuple[int, int, tuple, list[tuple[str, int]], list[int]]] = []

    def rule_state(self):
        return self.main.rule_state()

    def restore_rule_state(self, snap):
        """The rules start where the journal's window did; the terms shown start afresh."""
        self.main.restore_rule_state(snap)

    def scan(self, image, now, mode):
        changes = self.main.scan(image, now, mode)
        self.terms.scan(image, now, mode)
        for change in changes:
            r = change[0]
            text_terms = self.entries[r][1]
            first = self.first_term[r]
            values = [(text_terms[k][0], self.terms.active[first + k]) for k in range(len(text_terms))]
            self.records.append((self.scans, now, change, values, [image[i] for i in self.entries[r][2]]))
        self.scans += 1
        return changes


def explain(args: argparse.Namespace) -> int:
    key = load_key(args.key) if args.key else None
    payload = read_payload(args.table, key)
    data = decode_payload(payload, args.table)
    holder: list[ExplainingRules] = []

    def factory(catalog: Catalog, _head: dict) -> ExplainingRules:
        holder.append(ExplainingRules(data, build_table(data, catalog, args.table), catalog.size))
        return holder[0]

    replay = load_trace(args.trace, factory, keep_timeline=False)
    ex = holder[0]
    catalog = replay.state.catalog
    ids = ex.main.table.ids
    if key is None:
        print("(MAC not checked: give --key KEY to verify the table)")
    for scan, t, change, terms, values in ex.records:
        r, sev, _act, raised = change
        print("scan {} t={} ms: {} {} ({})".format(scan, t, ids[r],
                                                    "RAISED" if raised else "cleared", SEVERITY_NAMES[sev]))
        print("    when {}".format(ex.entries[r][0]))
        for text, value in terms:
            print("    {:<5} {}".format("true" if value else "false", text))
        sig = ex.entries[r][2]
        print("    values: {}".format(" ".join("{}={}".format(catalog.names[i], v) for i, v in zip(sig, values))))
    print("{} scans, {} rule changes; digest {}".format(replay.scans, len(ex.records), replay.digest()))
    return 0
