"""From a checked site config to the parts of a running gateway.

``assemble`` loads each device's profile, groups devices into one poller
per bus, builds the signal catalog (device signals and twins, the
gateway's own signals, one ``sched.*`` per schedule, the anomaly model's
``anom.*``), the core's settings and the anomaly model (``[model] path``).  Everything here is built once at start; nothing runs yet.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from controller.core.anomaly import ModelTables
from controller.core.catalog import ANOMALY_SIGNALS, SYSTEM_SIGNALS, Catalog, device_signals, schedule_signals
from controller.core.errors import UnknownSignal
from controller.core.step import DEFAULT_ENTRY_ZONES, CoreConfig
from controller.gateway.config import ConfigError, SiteConfig, core_values
from controller.gateway.schedules import Schedules
from controller.gateway.schema import Problem
from drivers.errors import DriverError
from drivers.modbus.poller import BusOptions, BusPoller, PolledDevice
from drivers.modbus.profiles import load_profile
from rules.errors import ModelFileError
from rules.modelfile import read_model


@dataclass(frozen=True)
class GatewaySettings:
    """What the running gateway reads from its config, typed (docs/config.md)."""
    gateway_id: str
    site_name: str
    state_dir: Path
    scan_period_ms: int
    clock_assume_trusted: bool
    pin_factory: str
    outputs: dict
    journal_dir: str
    journal_budget_bytes: int
    record_key: Path
    model_path: str
    config_path: str


def gateway_settings(config: SiteConfig) -> GatewaySettings:
    doc = config.doc
    gateway = doc["gateway"]
    return GatewaySettings(
        gateway_id=gateway["id"], site_name=gateway["site"], state_dir=Path(gateway["state_dir"]),
        scan_period_ms=gateway["scan_period_ms"],
        clock_assume_trusted=(doc.get("clock") or {}).get("assume_trusted", False),
        pin_factory=(doc.get("gpio") or {}).get("pin_factory", "default"),
        outputs=doc.get("outputs") or {},
        journal_dir=doc["journal"]["dir"], journal_budget_bytes=doc["journal"]["budget_mb"] << 20,
        record_key=Path(doc["keys"]["record"]), model_path=(doc.get("model") or {}).get("path", ""),
        config_path=str(config.path))


@dataclass
class Site:
    config: SiteConfig
    pollers: list[BusPoller]
    pollers_by_device: dict[str, BusPoller]
    catalog: Catalog
    core_config: CoreConfig
    entry_zones: list[str]
    schedules: Schedules
    device_classes: dict[str, str]
    settings: GatewaySettings
    model: ModelTables | None = None


def _pollers(config: SiteConfig, problems: list[Problem]) -> list[BusPoller]:
    doc = config.doc
    pollers = []
    for bus in doc["bus"]:
        devices = [(i, d) for i, d in enumerate(doc["device"]) if d["bus"] == bus["name"]]
        if not devices:
            continue
        options = BusOptions(baud=bus["baud"], parity=bus["parity"], stopbits=bus["stopbits"],
                             timeout_floor_ms=bus["timeout_floor_ms"],
                             timeout_ceiling_ms=bus["timeout_ceiling_ms"], retries=bus["retries"])
        try:
            pollers.append(BusPoller(bus["port"], [PolledDevice(d["name"], d["profile"], d["address"], d["poll_ms"])
                                                   for _, d in devices], options))
        except DriverError as e:
            first = devices[0][0]
            problems.append(Problem("device[{}].profile".format(first), str(e)))
    return pollers


def core_config(doc: dict, catalog: Catalog, problems: list[Problem]) -> tuple[CoreConfig, list[str]]:
    core = doc.get("core") or {}
    zones = core.get("entry_zones", DEFAULT_ENTRY_ZONES)
    indices = []
    for i, name in enumerate(zones):
        try:
            indices.append(catalog.zone(name))
        except UnknownSignal:
            close = difflib.get_close_matches(name.lstrip("!"), catalog.names, 3)
            problems.append(Problem("core.entry_zones[{}]".format(i), "no signal {!r} on this site{}".format(
                name, " (did you mean {}?)".format(", ".join(close)) if close else "")))
    return CoreConfig(core_values(core), indices), zones


def assemble(config: SiteConfig) -> Site:
    """The site's parts; ConfigError lists every problem found while building them."""
    doc = config.doc
    problems: list[Problem] = []
    pollers = _pollers(config, problems)
    schedules = Schedules(doc.get("schedules") or {}, doc["gateway"]["timezone"])
    specs = []
    for p in pollers:
        for instance, signals in p.device_specs():
            specs += device_signals(instance, signals)
    specs += list(SYSTEM_SIGNALS) + schedule_signals(schedules.names()) + list(ANOMALY_SIGNALS)
    catalog = Catalog(specs)
    core, zones = core_config(doc, catalog, problems)
    model = None
    if doc.get("model"):
        try:
            model = read_model(doc["model"]["path"])
        except ModelFileError as e:
            problems.append(Problem("model.path", str(e)))
    if problems:
        raise ConfigError(config.path, problems)
    by_device = {}
    for p in pollers:
        for name in {n.split(".")[0] for n in p.names}:
            by_device[name] = p
    classes = {d["name"]: load_profile(d["profile"]).device_class for d in doc["device"]}
    return Site(config, pollers, by_device, catalog, core, zones, schedules, classes, gateway_settings(config), model)
