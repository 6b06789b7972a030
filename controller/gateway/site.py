"""From a checked site config to the parts of a running gateway.

``assemble`` loads each device's profile, groups devices into one poller
per bus, builds the signal catalog (device signals and twins, the
gateway's own signals, one ``sched.*`` per schedule, the anomaly model's
``anom.*``), the core's settings and the anomaly model (``[model] path``).  Everything here is built once at start; nothing runs yet.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from controller.core.anomaly import ModelTables
from controller.core.catalog import (
    ANOMALY_SIGNALS, CAMERA_CLASS, GNSS_CLASS, POSITION_SIGNALS, SYSTEM_SIGNALS, ZONE_SIGNALS, Catalog, camera_signals, device_signals,
    schedule_signals,
)
from controller.core.errors import UnknownSignal
from controller.core.step import DEFAULT_ENTRY_ZONES, CoreConfig
from controller.gateway.config import ConfigError, SiteConfig, core_values
from controller.gateway.schedules import Schedules
from controller.gateway.schema import Problem
from controller.gateway.settings import GatewaySettings, gateway_settings
from drivers.errors import DriverError
from drivers.modbus.poller import BusPoller, PolledDevice
from drivers.modbus.profiles import Profile, load_profile
from rules.errors import ModelFileError
from rules.modelfile import read_model


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


def _profiles(doc: dict, problems: list[Problem]) -> dict[str, Profile]:
    """Each device's profile by device name; a device whose profile fails is named at its own index."""
    profiles = {}
    for i, dev in enumerate(doc["device"]):
        try:
            profiles[dev["name"]] = load_profile(dev["profile"])
        except DriverError as e:
            problems.append(Problem("device[{}].profile".format(i), str(e)))
    return profiles


def _pollers(settings: GatewaySettings, profiles: dict[str, Profile], problems: list[Problem]) -> list[BusPoller]:
    pollers = []
    for bus in settings.buses:
        devices = [(i, d) for i, d in enumerate(settings.devices) if d.bus == bus.name]
        if not devices or any(d.name not in profiles for _, d in devices):
            continue        # its bad profiles are already problems
        try:
            pollers.append(BusPoller(bus.port, [PolledDevice(d.name, d.profile, d.address, d.poll_ms)
                                                for _, d in devices], bus.options))
        except DriverError as e:
            problems.append(Problem("device[{}].profile".format(devices[0][0]), str(e)))
    return pollers


def _output_problems(doc: dict, profiles: dict[str, Profile]) -> list[Problem]:
    """A coil output must name a coil of its device's profile (run would refuse it at start)."""
    problems = []
    for name, out in sorted((doc.get("outputs") or {}).items()):
        profile = profiles.get(out["device"]) if out and out["device"] else None
        if profile is not None and out["coil"] and out["coil"] not in profile.coils():
            problems.append(Problem("outputs.{}.coil".format(name), "{!r} is not a coil of {} (profile {}; coils: {})".format(
                out["coil"], out["device"], profile.name, ", ".join(profile.coils()) or "none")))
    return problems


def core_config(doc: dict, catalog: Catalog, problems: list[Problem],
                broken: frozenset[str] = frozenset()) -> tuple[CoreConfig, list[str]]:
    """The core's settings; ``broken`` devices (their profile failed) are not blamed again here."""
    core = doc.get("core") or {}
    zones = core.get("entry_zones", DEFAULT_ENTRY_ZONES)
    indices = []
    for i, name in enumerate(zones):
        signal = name.lstrip("!")
        try:
            indices.append(catalog.zone(name))
        except UnknownSignal:
            if signal.split(".")[0] in broken:
                continue
            close = difflib.get_close_matches(signal, catalog.names, 3)
            problems.append(Problem("core.entry_zones[{}]".format(i), "no signal {!r} on this site{}".format(
                signal, " (did you mean {}?)".format(", ".join(close)) if close else "")))
    return CoreConfig(core_values(core, doc.get("escalation")), indices), zones


def assemble(config: SiteConfig, with_model: bool = True) -> Site:
    """The site's parts; ConfigError lists every problem found while building them.

    ``with_model=False`` skips reading the model file: compiling rules needs
    only the catalog, on a machine where the model is not installed yet."""
    doc = config.doc
    settings = gateway_settings(config)
    problems: list[Problem] = []
    profiles = _profiles(doc, problems)
    pollers = _pollers(settings, profiles, problems)
    problems += _output_problems(doc, profiles)
    receiver = settings.gnss.device if settings.gnss is not None else ""
    if receiver in profiles and profiles[receiver].device_class != "gnss_receiver":
        problems.append(Problem("gnss.device", "device {!r} has profile {!r} of class {}: a GNSS receiver "
                                "needs a gnss_receiver profile (drivers/profiles/gnss-modbus.toml)".format(
                                    receiver, profiles[receiver].name, profiles[receiver].device_class)))
    schedules = Schedules(doc.get("schedules") or {}, doc["gateway"]["timezone"])
    specs = []
    for p in pollers:
        for instance, signals in p.device_specs():
            specs += device_signals(instance, signals)
    specs += list(SYSTEM_SIGNALS) + schedule_signals(schedules.names()) + list(ANOMALY_SIGNALS) + list(ZONE_SIGNALS)
    specs += camera_signals([c["name"] for c in doc.get("camera") or []])
    if doc.get("gnss"):
        specs += list(POSITION_SIGNALS)
    catalog = Catalog(specs)
    broken = frozenset(d["name"] for d in doc["device"] if d["name"] not in profiles)
    core, zones = core_config(doc, catalog, problems, broken)
    model = None
    if doc.get("model") and with_model:
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
    classes = {name: profile.device_class for name, profile in profiles.items()}
    classes.update({"cam." + c["name"]: CAMERA_CLASS for c in doc.get("camera") or []})
    if doc.get("gnss"):
        classes["pos"] = GNSS_CLASS
    return Site(config, pollers, by_device, catalog, core, zones, schedules, classes, settings, model)
