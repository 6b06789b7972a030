"""``cabguard selftest --config SITE.toml``: what flash.sh --verify runs on the gateway.

Checks, in order, and reports each as one ``ok``/``FAIL`` line: the config
(and the site it assembles), the key files (present, mode 0600, the record
epoch key in the state folder and no root record key on the gateway), the rule
table (MAC under the installer key, compiled for this site's catalog), and
a bus scan that every configured device answers at its address.  With
``--siren-test`` it sounds the siren for a second.  Run it before the
service starts (or with it stopped): the scan needs the serial ports.
"""

from __future__ import annotations

import argparse
import stat
import time
from pathlib import Path

from controller.gateway.config import ConfigError, load
from controller.gateway.settings import bus_options
from controller.gateway.site import Site, assemble
from controller.gateway.sitefiles import KEY_FILES, epoch_key_path
from controller.gateway.tables import load_table
from drivers.errors import DriverError
from drivers.gpio import PinOutput, make_factory
from drivers.keys import load_key, require_epoch, require_role
from drivers.modbus.poller import open_master
from drivers.modbus.profiles import load_profile
from drivers.modbus.scan import probe
from rules.errors import TableRefused

SIREN_TEST_S = 1.0
PROBE_FLOOR_MS = 300


ROLES = {dotted: role for dotted, role, _file in KEY_FILES}


def check_keys(doc: dict) -> list[str]:
    problems = []
    root = Path(doc["keys"]["record"])
    if root.exists():
        problems.append("keys.record {}: the root record key is on the gateway: whoever takes the gateway can "
                        "rewrite its whole journal with it; keep it at the head end and remove it here "
                        "(flash.sh installs only the epoch key, docs/keys.md)".format(root))
    epoch = epoch_key_path(doc)
    if not epoch.exists() and not root.exists():
        problems.append("record epoch key {}: missing (flash.sh installs epoch 0 there)".format(epoch))
    for label, path in (("record epoch key", str(epoch)), ("keys.headend", doc["keys"]["headend"]),
                        ("rules.key", (doc.get("rules") or {}).get("key", ""))):
        if not path:
            continue
        p = Path(path)
        if not p.exists():
            if label != "record epoch key":
                problems.append("{} {}: missing".format(label, path))
            continue
        if stat.S_IMODE(p.stat().st_mode) & 0o077:
            problems.append("{} {}: readable by others (chmod 600)".format(label, path))
            continue
        try:        # another gateway's key would seal a journal its head end rejects
            key = load_key(p)
            if label == "record epoch key":
                require_epoch(key, label, doc["gateway"]["id"])
            else:
                require_role(key, ROLES[label], label, doc["gateway"]["id"])
        except DriverError as e:
            problems.append(str(e))
    return problems


def check_table(site: Site) -> str:
    rules = site.config.doc.get("rules")
    if not rules:
        return "no [rules] table configured"
    key = load_key(rules["key"])
    _data, evaluator = load_table(rules["table"], key, site.catalog)
    return "{} rules, signed with {}".format(len(evaluator.table.ids), key.kid_text)


def scan_buses(doc: dict) -> list[tuple[str, bool]]:
    """(line, answered) per configured device, probing only its own address."""
    results = []
    for bus in doc["bus"]:
        devices = [d for d in doc["device"] if d["bus"] == bus["name"]]
        try:
            master = open_master(bus["port"], bus_options(bus))
        except DriverError as e:
            results += [("{} on {}: {}".format(d["name"], bus["port"], e), False) for d in devices]
            continue
        # Not a poll: a slow or startled device gets a generous wait and the bus's retries.
        timeout = max(bus["timeout_ceiling_ms"], PROBE_FLOOR_MS) / 1000
        try:
            for d in devices:
                for _attempt in range(1 + bus["retries"]):
                    found = probe(master, d["address"], timeout)
                    if found:
                        break
                where = "{}@{} on {}".format(d["name"], d["address"], bus["port"])
                results.append((where + (" answers" if found else " does not answer"), found is not None))
        finally:
            master.close()
    return results


def siren_test(doc: dict) -> str:
    """The siren on for SIREN_TEST_S, then off: a GPIO pin or a relay coil."""
    spec = (doc.get("outputs") or {}).get("siren")
    if not spec:
        return "no [outputs.siren] configured"
    if spec["gpio"] >= 0:
        pin = PinOutput(spec["gpio"], spec["active_high"], make_factory((doc.get("gpio") or {}).get(
            "pin_factory", "default")))
        pin.set(1)
        time.sleep(SIREN_TEST_S)
        pin.set(0)
        pin.close()
        return "GPIO {} pulsed for {} s".format(spec["gpio"], SIREN_TEST_S)
    device = next(d for d in doc["device"] if d["name"] == spec["device"])
    bus = next(b for b in doc["bus"] if b["name"] == device["bus"])
    coil = load_profile(device["profile"]).bind().coil(spec["coil"])
    master = open_master(bus["port"], bus_options(bus))
    timeout = bus["timeout_ceiling_ms"] / 1000
    try:
        master.write_coil(device["address"], coil, True, timeout)
        time.sleep(SIREN_TEST_S)
        master.write_coil(device["address"], coil, False, timeout)
    finally:
        master.close()
    return "{}.{} pulsed for {} s".format(spec["device"], spec["coil"], SIREN_TEST_S)


def run_checks(config_path: str, siren: bool) -> list[tuple[str, bool]]:
    try:
        site = assemble(load(config_path))
    except ConfigError as e:
        return [("config: {}".format(e), False)]
    doc = site.config.doc
    results = [("config {}: gateway {}".format(config_path, site.config.gateway_id), True)]
    key_problems = check_keys(doc)
    results += [("keys: " + p, False) for p in key_problems] or [
        ("keys: present, mode 0600; the root record key is off the gateway", True)]
    try:
        results.append(("rule table: " + check_table(site), True))
    except (TableRefused, DriverError) as e:
        results.append(("rule table: {}".format(e), False))
    results += scan_buses(doc)
    if siren:
        try:
            results.append(("siren test: " + siren_test(doc), True))
        except DriverError as e:
            results.append(("siren test: {}".format(e), False))
    return results


def main(args: argparse.Namespace) -> int:
    results = run_checks(args.config, args.siren_test)
    for line, ok in results:
        print("{}  {}".format("ok  " if ok else "FAIL", line))
    failed = sum(1 for _l, ok in results if not ok)
    print("selftest: {}".format("passed" if not failed else "{} check(s) failed".format(failed)))
    return 1 if failed else 0
