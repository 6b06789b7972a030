"""The site config (TOML): loading, checking, and the last known good copy.

docs/config.md documents every key with a complete example.  ``load`` reads
and checks a file and returns a ``SiteConfig`` or raises ``ConfigError``
listing *every* problem with its dotted path.  At start the gateway
(``load_site`` in gateway/run.py) falls back from an invalid new config to
the last known good one (kept beside the journal, ``last_good_path``), so a
typo never leaves a cabinet unguarded.
"""

from __future__ import annotations

import importlib.util
import tomllib
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.core.escalation import GROUP_NAMES, STEP_NAMES
from controller.core.outputs import OUTPUT_NAMES
from controller.core.step import DEFAULT_ENTRY_ZONES, CoreConfig
from controller.errors import CabguardError
from controller.gateway.schema import (
    ArrayOfTables, Bool, Choice, Int, ListOf, MapOf, Problem, Str, Table, check,
)
from controller.gateway.webhook import listen_problem
from drivers.atomicfile import write_atomic
from drivers.modbus.budget import DEFAULT_TURNAROUND_MS
from drivers.modbus.options import PARITIES, RS485_MODES, STOPBITS
from drivers.safefile import InputFileError, parse_toml, read_text

# The [core] keys in the units a person writes: (key, the core's setting,
# ms per unit).  Their defaults are the core's own (CoreConfig.DEFAULTS).
CORE_KEYS = (
    ("exit_delay_s", "exit_delay_ms", 1000),
    ("entry_delay_s", "entry_delay_ms", 1000),
    ("maint_default_min", "maint_default_ms", 60000),
    ("maint_max_min", "maint_max_ms", 60000),
    ("siren_max_s", "siren_max_ms", 1000),
    ("siren_retriggers", "siren_retriggers", 1),
)
CORE_DEFAULTS = {key: dict(CoreConfig.DEFAULTS)[setting] // unit for key, setting, unit in CORE_KEYS}


def core_values(core: dict, escalation: dict | None = None) -> dict:
    """The core's settings (ms) from a config's [core] table, missing keys at
    the core's defaults, and the plans its [escalation] tables set."""
    values: dict = {setting: core.get(key, CORE_DEFAULTS[key]) * unit for key, setting, unit in CORE_KEYS}
    plans = {"{}.{}".format(severity, group): [[s["do"], s["after_s"] * 1000] for s in steps]
             for severity, table in sorted((escalation or {}).items()) if table
             for group, steps in sorted(table.items()) if steps is not None}
    if plans:
        values["escalation"] = plans
    return values


NAME = r"[a-z][a-z0-9_]{0,31}"
GATEWAY_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# HOST:PORT with a port of 1..65535.
BROKER = (r"[A-Za-z0-9.\-]+:(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3})")
HHMM = r"([01][0-9]|2[0-3]):[0-5][0-9]"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800)
OUTPUTS = OUTPUT_NAMES
# MQTT topics a person writes: no wildcards, no empty levels at the ends.
TOPIC = r"[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*"


def _timezone(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown timezone {!r}: want an IANA name such as 'Europe/Amsterdam' or 'UTC'".format(name)
    return None


def _days(spec: str) -> str | None:
    for part in spec.split(","):
        ends = part.strip().split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            return "days {!r}: want day names ({}) or ranges like 'mon-fri', comma-separated".format(
                spec, " ".join(DAYS))
    return None


PATH = Str(r".+", "a file or folder path")

SCHEMA = Table({
    "gateway": Table({
        "id": Str(GATEWAY_ID, "a gateway id: letters, digits, '.', '_' or '-', up to 64"),
        "site": Str(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "a site name: letters, digits, '.', '_' or '-'"),
        "timezone": Str(r".+", "an IANA timezone name", check=_timezone),
        "scan_period_ms": Int(20, 1000, default=100),
        "state_dir": Str(r".+", "a folder path", default="/var/lib/cabguard"),
    }),
    "core": Table({
        "exit_delay_s": Int(0, 600, default=CORE_DEFAULTS["exit_delay_s"]),
        "entry_delay_s": Int(0, 600, default=CORE_DEFAULTS["entry_delay_s"]),
        "maint_default_min": Int(1, 480, default=CORE_DEFAULTS["maint_default_min"]),
        "maint_max_min": Int(1, 480, default=CORE_DEFAULTS["maint_max_min"]),
        "siren_max_s": Int(10, 1200, default=CORE_DEFAULTS["siren_max_s"]),
        "siren_retriggers": Int(0, 20, default=CORE_DEFAULTS["siren_retriggers"]),
        "entry_zones": ListOf(Str(r"!?[a-z0-9_]+\.[a-z0-9_]+",
                                  "a signal name like 'io.door_open', or '!io.door_bolt' for one that opens by falling"),
                              default=DEFAULT_ENTRY_ZONES),
    }, optional=True),
    "escalation": MapOf(Table({
        group: ListOf(Table({
            "do": Choice(STEP_NAMES),
            "after_s": Int(0, 3600, default=0),
        }), optional=True) for group in GROUP_NAMES
    }), key_pattern="alarm|critical"),
    "bus": ArrayOfTables(Table({
        "name": Str(NAME, "a bus name: lower-case letters, digits and '_'"),
        "port": PATH,
        "baud": Choice(BAUDS, default=115200),
        "parity": Choice(PARITIES, default="N"),
        "stopbits": Choice(STOPBITS, default=1),
        "rs485": Choice(RS485_MODES, default="auto"),
        "rts_tx_high": Bool(default=True),
        "rts_delay_before_ms": Int(0, 100, default=0),
        "rts_delay_after_ms": Int(0, 100, default=0),
        "timeout_floor_ms": Int(2, 1000, default=20),
        "timeout_ceiling_ms": Int(5, 5000, default=200),
        "retries": Int(0, 5, default=1),
    }), min_items=1),
    "device": ArrayOfTables(Table({
        "name": Str(NAME, "a device name: lower-case letters, digits and '_'"),
        "bus": Str(NAME, "the name of a [[bus]]"),
        "profile": Str(r"[A-Za-z0-9_.\-/]+", "a profile name or path"),
        "address": Int(1, 247),
        "poll_ms": Int(20, 60000, default=1000),
        "turnaround_ms": Int(0, 1000, default=DEFAULT_TURNAROUND_MS),
    }), min_items=1),
    "outputs": MapOf(Table({
        "gpio": Int(0, 27, default=-1),
        "active_high": Bool(default=True),
        "device": Str(NAME, "the name of a [[device]] with coils", default=""),
        "coil": Str(r"[a-z][a-z0-9_]*", "a coil signal of the device's profile, e.g. 'k1'", default=""),
        "mqtt_topic": Str(TOPIC, "an MQTT topic on the [lan] broker, e.g. 'vms/ptz/gate/preset' (no wildcards)",
                          default=""),
        "on": Str(r".{0,256}", "the payload published for 1 (up to 256 characters)", default="1"),
        "off": Str(r".{0,256}", "the payload published for 0 (up to 256 characters)", default="0"),
    }), key_pattern="|".join(OUTPUTS)),
    "lan": Table({
        "broker": Str(BROKER, "HOST:PORT of the cabinet LAN's MQTT broker (port 1..65535)"),
        "client_id": Str(r"[A-Za-z0-9._\-]{0,64}", "an MQTT client id", default=""),
        "username": Str(r".*", "a user name", default=""),
        "password": Str(r".*", "a password", default=""),
    }, optional=True),
    "camera": ArrayOfTables(Table({
        "name": Str(NAME, "a camera name: lower-case letters, digits and '_' (cam.<name>.person ...)"),
        "topic": Str(TOPIC, "the camera's MQTT topic on the [lan] broker; its events are <topic>/<kind>",
                     default=""),
        "fresh_s": Int(5, 3600, default=60),
        "hold_s": Int(1, 600, default=10),
        "clip_before_s": Int(0, 3600, default=30),
        "clip_after_s": Int(0, 3600, default=60),
        "protect_topic": Str(TOPIC, "an MQTT topic on the [lan] broker where the NVR takes protect requests",
                             default=""),
    })),
    "opcua": Table({
        "listen": Str(r"[0-9a-fA-F.:\[\]]+:[0-9]{1,5}", "ADDRESS:PORT on loopback or the cabinet LAN"),
        "username": Str(r"[A-Za-z0-9._\-]{1,64}", "a user name: letters, digits, '.', '_' or '-'"),
        "password": Str(r".{12,256}", "a password of at least 12 characters"),
        "publish_ms": Int(100, 60000, default=1000),
    }, optional=True),
    "gnss": Table({
        "port": Str(r".+", "the receiver's serial port (NMEA 0183)", default=""),
        "device": Str(NAME, "a [[device]] name: a GNSS receiver on the bus", default=""),
        "baud": Choice((4800, 9600, 19200, 38400, 57600, 115200), default=9600),
        "fresh_s": Int(2, 60, default=5),
        "max_hdop": Int(1, 20, default=5),
        "max_speed_mps": Int(1, 60, default=15),
        "reacquire_s": Int(5, 600, default=30),
    }, optional=True),
    "webhook": Table({
        "listen": Str(r"[0-9a-fA-F.:\[\]]+:[0-9]{1,5}", "ADDRESS:PORT on loopback or the cabinet LAN"),
        "secret": Str(r".{16,256}", "a shared secret of at least 16 characters"),
    }, optional=True),
    "schedules": MapOf(Table({
        "windows": ListOf(Table({
            "days": Str(r".+", "days like 'mon-fri' or 'sat,sun'", check=_days),
            "from": Str(HHMM, "a time 'HH:MM'"),
            "to": Str(HHMM, "a time 'HH:MM'"),
        }), min_items=1),
        "when_clock_untrusted": Choice(("active", "inactive"), default="inactive"),
    })),
    "rules": Table({
        "table": PATH,
        "key": PATH,
    }, optional=True),
    "model": Table({"path": PATH}, optional=True),
    "keys": Table({
        "record": PATH,
        "headend": Str(r".+", "a file path", default=""),
    }),
    "journal": Table({
        "dir": PATH,
        "budget_mb": Int(16, 1 << 20, default=1024),
        "batch_ms": Int(10, 1000, default=500),
    }),
    "clock": Table({
        "assume_trusted": Bool(default=False),
    }, optional=True),
    "gpio": Table({
        "pin_factory": Choice(("default", "mock"), default="default"),
    }, optional=True),
    "mains": Table({
        "gpio": Int(0, 27),
        "active_high": Bool(default=True),
    }, optional=True),
    "tamper": Table({
        "gpio": Int(0, 27),
        "active_high": Bool(default=False),      # a switch to ground on a pulled-up pin
        "normally_closed": Bool(default=True),   # closed while the lid is on: a cut wire reads opened
    }, optional=True),
    "console": Table({
        "port": Str(r".+", "a serial port such as /dev/ttyAMA0, or pty:PATH to link a pty at PATH"),
        "baud": Choice(BAUDS, default=115200),
        "people": PATH,
        "idle_s": Int(30, 3600, default=300),
        "max_failures": Int(1, 20, default=5),
        "lockout_s": Int(10, 86400, default=900),
    }, optional=True),
    "uplink": Table({
        "broker": Str(BROKER, "HOST:PORT of the site's MQTT broker (port 1..65535)"),
        "protocol": Choice(("3.1.1", "5"), default="3.1.1"),
        "topic_prefix": Str(r"[A-Za-z0-9_\-/]+", "an MQTT topic prefix", default="cabguard"),
        "client_id": Str(r"[A-Za-z0-9._\-]{0,64}", "an MQTT client id", default=""),
        "username": Str(r".*", "a user name", default=""),
        "password": Str(r".*", "a password", default=""),
        "ca_file": Str(r".*", "a CA certificate file", default=""),
        "cert_file": Str(r".*", "a client certificate file", default=""),
        "key_file": Str(r".*", "a client key file", default=""),
        "heartbeat_s": Int(5, 3600, default=30),
        "window": Int(1, 1024, default=64),
    }, optional=True),
})


class ConfigError(CabguardError):
    """A site config that cannot be used; lists every problem."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = problems
        lines = ["{}: {} problem{}:".format(path, len(problems), "" if len(problems) == 1 else "s")]
        lines += ["  " + str(p) for p in problems]
        super().__init__("\n".join(lines))


@dataclass
class SiteConfig:
    """A checked config: ``doc`` is the normalised document, ``path`` its file."""

    path: str
    doc: dict[str, Any]

    @property
    def gateway_id(self) -> str:
        return self.doc["gateway"]["id"]

    def section(self, name: str) -> Any:
        return self.doc.get(name)


def _shared_pins(doc: dict) -> list[Problem]:
    """Each GPIO pin is one output's or one input's: the outputs, then [mains], then [tamper]."""
    uses = [("outputs." + name, o["gpio"]) for name, o in sorted((doc.get("outputs") or {}).items())
            if o and o["gpio"] >= 0]
    uses += [(name, doc[name]["gpio"]) for name in ("mains", "tamper") if doc.get(name)]
    problems: list[Problem] = []
    owner: dict[int, str] = {}
    for path, gpio in uses:
        if gpio in owner:
            problems.append(Problem(path + ".gpio", "GPIO{} is already the pin of {}: give {} a pin of its "
                                                    "own".format(gpio, owner[gpio], path)))
        else:
            owner[gpio] = path
    return problems


def _cross_checks(doc: dict) -> list[Problem]:
    """What one key cannot know alone: references between sections."""
    problems: list[Problem] = []
    buses = {b["name"] for b in doc.get("bus") or []}
    devices = {d["name"] for d in doc.get("device") or []}
    for i, dev in enumerate(doc.get("device") or []):
        if dev["bus"] is not None and dev["bus"] not in buses:
            problems.append(Problem("device[{}].bus".format(i), "no [[bus]] named {!r} (buses: {})".format(
                dev["bus"], ", ".join(sorted(buses)) or "none")))
    for name, out in (doc.get("outputs") or {}).items():
        path = "outputs.{}".format(name)
        if out is None:
            continue
        by_gpio, by_coil, by_mqtt = out["gpio"] >= 0, bool(out["device"]), bool(out["mqtt_topic"])
        if by_gpio + by_coil + by_mqtt != 1:
            problems.append(Problem(path, "give exactly one of gpio = PIN, device = NAME with coil = N, "
                                          "or mqtt_topic = TOPIC"))
        elif by_mqtt and not doc.get("lan"):
            problems.append(Problem(path + ".mqtt_topic", "an MQTT output needs the [lan] broker it publishes on"))
        elif by_coil and out["device"] not in devices:
            problems.append(Problem(path + ".device", "no [[device]] named {!r}".format(out["device"])))
        elif by_coil and not out["coil"]:
            problems.append(Problem(path + ".coil", "missing; want the coil number on {}".format(out["device"])))
    problems += _shared_pins(doc)
    for severity, table in sorted((doc.get("escalation") or {}).items()):
        for group, steps in sorted((table or {}).items()):
            names = [s["do"] for s in steps or [] if s]
            for twice in sorted({n for n in names if names.count(n) > 1}):
                problems.append(Problem("escalation.{}.{}".format(severity, group),
                                        "step {!r} is listed twice: give each step once, with its after_s".format(twice)))
    for i, cam in enumerate(doc.get("camera") or []):
        if cam["protect_topic"] and not doc.get("lan"):
            problems.append(Problem("camera[{}].protect_topic".format(i), "a protect topic needs the [lan] broker"))
        if cam["topic"] and not doc.get("lan"):
            problems.append(Problem("camera[{}].topic".format(i), "a camera topic needs the [lan] broker it is read from"))
        if not cam["topic"] and not doc.get("webhook"):
            problems.append(Problem("camera[{}]".format(i), "no source: give topic = ... (with [lan]) or a [webhook]"))
    gnss = doc.get("gnss")
    if gnss and bool(gnss["port"]) == bool(gnss["device"]):
        problems.append(Problem("gnss", "give exactly one of port = PATH (NMEA 0183 on a serial port) "
                                        "or device = NAME (a receiver on the Modbus bus)"))
    elif gnss and gnss["device"] and gnss["device"] not in devices:
        problems.append(Problem("gnss.device", "no [[device]] named {!r}".format(gnss["device"])))
    if doc.get("opcua") and doc["opcua"]["listen"]:
        why = listen_problem(doc["opcua"]["listen"].rpartition(":")[0].strip("[]"))
        if why:
            problems.append(Problem("opcua.listen", why.replace("the webhook", "OPC UA")))
    if doc.get("webhook") and doc["webhook"]["listen"]:
        why = listen_problem(doc["webhook"]["listen"].rpartition(":")[0].strip("[]"))
        if why:
            problems.append(Problem("webhook.listen", why))
    core = doc.get("core") or {}
    if core and core["maint_default_min"] > core["maint_max_min"]:
        problems.append(Problem("core.maint_default_min", "longer than core.maint_max_min"))
    addresses: dict[tuple, str] = {}
    for i, dev in enumerate(doc.get("device") or []):
        key = (dev["bus"], dev["address"])
        if key in addresses:
            problems.append(Problem("device[{}].address".format(i), "address {} on bus {} is already {}".format(
                dev["address"], dev["bus"], addresses[key])))
        addresses.setdefault(key, dev["name"])
    return problems


# Sections whose parts come with an extra of the package, when their key is set:
# (section, key, module, extra).  A GNSS receiver on the Modbus bus needs no NMEA parser.
EXTRAS = (("gnss", "port", "pynmea2", "gnss"), ("opcua", "listen", "asyncua", "opcua"))


def _needs(doc: dict, section: str, key: str) -> bool:
    return bool((doc.get(section) or {}).get(key))


def extras_needed(doc: dict) -> list[str]:
    """The package extras a config's sections need (flash.sh bundles them)."""
    return [extra for section, key, _module, extra in EXTRAS if _needs(doc, section, key)]


def missing_extras(config: SiteConfig) -> ConfigError | None:
    """The sections whose extra is not installed on this machine (checked where the gateway runs)."""
    problems = [Problem(section, "needs the {} extra, not installed here: pip install 'cabguard[{}]' ({})".format(
        extra, extra, module)) for section, key, module, extra in EXTRAS
        if _needs(config.doc, section, key) and importlib.util.find_spec(module) is None]
    return ConfigError(config.path, problems) if problems else None


def parse(text: str, path: str) -> SiteConfig:
    try:
        raw = parse_toml(text, path, "site config")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [Problem("", "not valid TOML: {}".format(e))]) from None
    except InputFileError as e:
        raise ConfigError(path, [Problem("", e.problem)]) from None
    doc, problems = check(SCHEMA, raw)
    if doc is not None:
        problems += _cross_checks(doc)
    if problems:
        raise ConfigError(path, problems)
    return SiteConfig(path, doc)


def load(path: str | Path) -> SiteConfig:
    try:
        text = read_text(path, "site config")
    except OSError as e:
        raise ConfigError(str(path), [Problem("", "cannot read: {}".format(e.strerror))]) from None
    except InputFileError as e:
        raise ConfigError(str(path), [Problem("", e.problem)]) from None
    return parse(text, str(path))


def last_good_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "last-good.toml"


def remember_good(config: SiteConfig) -> None:
    """Keep a copy of a config that started cleanly (atomic replace)."""
    dest = last_good_path(config.doc["gateway"]["state_dir"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, Path(config.path).read_bytes())

