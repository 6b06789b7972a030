"""SIM.toml: which simulated buses and devices to serve (docs/simulator.md).

Errors name the file and the dotted path of the key (``bus[0].device[1].address``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from drivers.modbus.profiles import load_profile
from simulator.bus import DEFAULT_BAUD, SimBus, Simulator
from simulator.errors import SimConfigError
from simulator.slave import DEFAULT_TURNAROUND_MS, SimDevice

_BUS_KEYS = {"name", "baud", "parity", "stopbits", "wire", "device"}
_DEVICE_KEYS = {"name", "profile", "address", "values", "fault", "seed", "turnaround_ms", "no_answer"}
_FAULT_KEYS = {"kind", "rate", "delay_ms", "code"}


def load_config(path: str | Path, wire: bool | None = None) -> Simulator:
    """The simulator of SIM.toml at ``path``; ``wire`` (``cabguard sim --wire``) overrides
    every bus's ``wire``."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise SimConfigError("cannot read simulator config {}: {}".format(path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise SimConfigError("{}: not valid TOML: {}".format(path, e)) from None
    buses = doc.get("bus")
    if not isinstance(buses, list) or not buses:
        raise SimConfigError("{}: no [[bus]] tables: a config serves at least one bus".format(path))
    extra = set(doc) - {"bus"}
    if extra:
        raise SimConfigError("{}: unknown top-level key(s) {} (only [[bus]])".format(path, ", ".join(sorted(extra))))
    return Simulator([_bus(path, i, b, wire) for i, b in enumerate(buses)])


def _check_keys(path: Path, where: str, table: Any, known: set[str]) -> None:
    if not isinstance(table, dict):
        raise SimConfigError("{}: {} must be a table".format(path, where))
    for key in table:
        if key not in known:
            raise SimConfigError("{}: {}.{}: unknown key (known: {})".format(
                path, where, key, ", ".join(sorted(known))))


def _bus(path: Path, i: int, bus: Any, wire: bool | None) -> SimBus:
    where = "bus[{}]".format(i)
    _check_keys(path, where, bus, _BUS_KEYS)
    name = bus.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise SimConfigError("{}: {}.name: want a name usable as a file name".format(path, where))
    baud = bus.get("baud", DEFAULT_BAUD)
    if not isinstance(baud, int) or baud < 1200:
        raise SimConfigError("{}: {}.baud: {!r} is not a baud rate".format(path, where, baud))
    if not isinstance(bus.get("wire", True), bool):
        raise SimConfigError("{}: {}.wire: want true (a real wire's timing) or false (fast mode)".format(path, where))
    devices = bus.get("device", [])
    if not isinstance(devices, list) or not devices:
        raise SimConfigError("{}: {}: no [[bus.device]] tables".format(path, where))
    sims = [_device(path, "{}.device[{}]".format(where, j), d) for j, d in enumerate(devices)]
    try:
        return SimBus(name, sims, baud, bus.get("wire", True) if wire is None else wire,
                      parity=bus.get("parity", "N"), stopbits=bus.get("stopbits", 1))
    except SimConfigError as e:
        raise SimConfigError("{}: {}: {}".format(path, where, e)) from None


def _device(path: Path, where: str, dev: Any) -> SimDevice:
    _check_keys(path, where, dev, _DEVICE_KEYS)
    name, profile, address = dev.get("name"), dev.get("profile"), dev.get("address")
    if not isinstance(name, str) or not isinstance(profile, str) or not isinstance(address, int):
        raise SimConfigError("{}: {}: needs name, profile and address".format(path, where))
    ref = profile if "/" not in profile and not profile.endswith(".toml") else path.parent / profile
    try:
        sim = SimDevice(name, load_profile(ref), address, dev.get("values", {}), int(dev.get("seed", 0)),
                        _turnaround(dev.get("turnaround_ms", DEFAULT_TURNAROUND_MS)),
                        float(dev.get("no_answer", 0.0)))
        fault = dev.get("fault")
        if fault is not None:
            _check_keys(path, where + ".fault", fault, _FAULT_KEYS)
            sim.set_fault(fault.get("kind"), float(fault.get("rate", 1.0)),
                          float(fault.get("delay_ms", 0.0)), int(fault.get("code", 4)))
    except (SimConfigError, DriverError, TypeError, ValueError) as e:
        raise SimConfigError("{}: {}: {}".format(path, where, e)) from None
    return sim


def _turnaround(value: Any) -> float | tuple[float, float]:
    """``turnaround_ms``: a number, or [low, high]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return float(value[0]), float(value[1])
    raise SimConfigError("turnaround_ms: {!r}: want milliseconds (12) or a range [low, high] ([5, 40])".format(value))
