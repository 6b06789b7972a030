"""What a scenario is (docs/scenarios.md): cabinets, background port life,
scripted actions and ground-truth incident windows on one timeline, all
times in milliseconds from the scenario's start; the kinds of processes and
actions with their parameters; the duration and clock grammar.

simulator/scenariofile.py reads and checks a scenario file into these.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from rules.duration import parse_ms
from simulator.senses import SENSE_ACTION_PARAMS, SENSE_PROCESS_PARAMS

SCAN_MS = 100
MAX_DURATION_MS = 62 * 86400 * 1000

INCIDENT_KINDS = ("theft", "tamper", "safety")


# Parameters of every process kind, with defaults (durations are strings).
PROCESS_PARAMS: dict[str, dict[str, Any]] = {
    "crane": {"hours": ["06:00", "22:00"], "gap": "4m", "cycle": "90s", "rms_mg": 45,
              "peak_mg": 160, "sway_period": "12s"},
    "truck": {"hours": ["00:00", "24:00"], "per_hour": 6.0, "pass": "8s", "rms_mg": 35, "peak_mg": 380},
    "wind": {"rms_mg": 3, "gust_mg": 10, "gust_every": "40s", "tilt_mdeg": 30, "period": "6s"},
    "storm": {"per_day": 0.3, "at": [], "length": "3h", "rms_mg": 55, "peak_mg": 520,
              "tilt_mdeg": 280, "period": "5s"},
    "rain": {"per_day": 1.0, "at": [], "length": "2h", "rms_mg": 6, "peak_mg": 25, "cool_c": 2.0},
    "shift": {"times": ["06:00", "14:00", "22:00"], "visit_prob": 0.5, "visit": "10m",
              "auth": "maint", "auth_delay": ["5s", "20s"], "schedule": "shift_change",
              "window": "30m", "per_cabinet": False},
    "maintenance": {"days": ["tue"], "at": "10:00", "length": "2h", "schedule": "maintenance",
                    "swap_module": True, "rms_mg": 80, "peak_mg": 350},
    "bms": {"charge_at": "01:00", "charge": "4h", "charge_a": 40.0, "discharge_at": "17:00",
            "discharge": "4h", "discharge_a": 40.0, "noise_a": 0.3, "ramp": "60s"},
}

# Parameters of every action kind, with defaults; "cabinet" and "at" are common.
ACTION_PARAMS: dict[str, dict[str, Any]] = {
    "door_open": {"unbolt": True},
    "door_close": {"bolt": True},
    "door_forced": {"peak_mg": 1800, "rms_mg": 420},
    "vibration": {"duration": "5s", "rms_mg": 300, "peak_mg": 1200},
    "tilt": {"deg": 5.0, "ramp": "3s", "duration": "60s"},
    "lift": {"accel_mg": 250, "deg": 8.0, "duration": "10s", "set_down": True},
    "tow": {"accel_mg": 40, "deg": 1.5, "rms_mg": 60, "peak_mg": 300},
    "module_remove": {"battery": "bms1", "count": 1, "dummy": False},
    "module_insert": {"battery": "bms1", "count": 1, "serial": 0, "dummy": False},
    "cable_cut": {"device": "bms1", "duration": ""},
    "power_cut": {"duration": "", "backup": ""},
    "gateway_restart": {"down": "30s"},
    "thermal_ramp": {"battery": "bms1", "rise_c": 30.0, "duration": "10m", "hold": "", "cool": "30m"},
    # Hazards of the packs themselves beside the thermal_ramp (docs/scenarios.md, "Incidents", safety).
    "cell_imbalance": {"battery": "bms1", "spread_mv": 200, "duration": "2h", "hold": "", "back": "1h"},
    "hot_cell": {"battery": "bms1", "rise_c": 15.0, "amps": 40.0, "tau": "20m", "duration": ""},
    "sensor_fault": {"signal": "io.vib_rms_mg", "fault": "stuck", "value": 0, "duration": "", "device": ""},
    "theft_slow": {"battery": "bms1", "modules": 2, "duration": "20m", "rms_mg": 12, "peak_mg": 45},
    "command": {"name": "arm", "arg": ""},
    "panel_open": {"duration": "", "rms_mg": 250, "peak_mg": 1000},
    # The site's and the weather's doing, nobody's act at the cabinet.
    "booked_window": {"schedule": "maintenance", "length": "2h"},
    "weather_front": {"delta_c": -10.0, "ramp": "3h", "hold": "", "back": "6h"},
    # Honest faults: nobody's act, never an incident (docs/scenarios.md, "Honest faults").
    "loose_connector": {"device": "io", "duration": "10m", "drop": "1s", "every": "1m"},
    "crc_burst": {"device": "bus", "duration": "1s"},
    "bms_reboot": {"battery": "bms1", "down": "10s"},
    "glitch": {"signal": "io.temp_dc", "value": 0},
    "sensor_drift": {"signal": "io.temp_dc", "value": 0, "duration": "6h"},
    "sensor_offset": {"signal": "io.temp_dc", "value": 0, "duration": ""},
    "sensor_failure": {"signal": "io.vib_rms_mg", "fault": "stuck", "duration": "", "device": ""},
    "grid_outage": {"duration": "1h", "backup": ""},
    # The response team takes the cabinet over: what it raises then is theirs to see.
    "responder": {"duration": ""},
}
HONEST_FAULTS = ("loose_connector", "crc_burst", "bms_reboot", "glitch", "sensor_drift", "sensor_offset",
                 "sensor_failure", "grid_outage")

# Cameras and GNSS: their own part of the format (simulator/senses.py).
PROCESS_PARAMS.update(SENSE_PROCESS_PARAMS)
ACTION_PARAMS.update(SENSE_ACTION_PARAMS)

CABINET_PARAMS: dict[str, Any] = {
    "batteries": 2, "modules": 8, "module_mv": 51200, "capacity_ah": 100.0, "soc_pct": 60,
    "temp_c": 20.0, "supply_mv": 24000, "serial": 100000, "armed": True, "mains_sense": True,
}

SENSOR_FAULTS = ("stuck", "zero", "spike", "offline")
SENSOR_FAILURES = ("stuck", "zero", "offline")     # a sensor dying on its own: no spike
# Durations where "" means "for ever" (to the scenario's end) and is kept as -1, unlike "0s"
# (every "hold", and these whose default is not "").
FOR_EVER = -1
FOR_EVER_KEYS = (("camera_event", "duration"), ("grid_outage", "duration"), ("power_cut", "backup"),
                 ("grid_outage", "backup"))
# Numbers that may be negative (a tilt either way, a cooling ramp, a raw signal value).
SIGNED_PARAMS = ("deg", "rise_c", "value", "delta_c")
# Durations that are a period or a mean gap: 0 would divide by zero.
POSITIVE_DURATIONS = ("gap", "sway_period", "gust_every", "period", "drop", "every", "cool", "back", "tau")
MAINTENANCE_MIN_MS = 5 * 60000 + 1       # the visit is the window less 5 minutes
COMMANDS = ("arm", "disarm", "maint_start", "maint_stop", "ack", "silence", "lock", "unlock")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

SCHEDULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass
class Cabinet:
    id: str
    batteries: int
    modules: int
    module_mv: int
    capacity_ah: float
    soc_pct: int
    temp_c: float
    supply_mv: int
    serial: int
    armed: bool
    mains_sense: bool = True      # the gateway reads the site's mains upstream of the cabinet's feed


@dataclass
class Item:
    """A process or an action: its kind, cabinets, time and parameters."""
    kind: str
    cabinets: tuple[str, ...]
    at_ms: int
    params: dict[str, Any]
    seed: int
    line: int


@dataclass
class Incident:
    kind: str
    cabinet: str
    start_ms: int
    end_ms: int
    note: str
    line: int


@dataclass
class Schedule:
    name: str
    start_min: int      # minutes after local midnight
    end_min: int
    days: tuple[int, ...]


@dataclass
class Scenario:
    path: str
    name: str
    description: str
    start: dt.datetime          # aware
    duration_ms: int
    seed: int
    scan_ms: int
    core: dict[str, int]
    ack_after_ms: int           # 0: the responder never acknowledges
    rearm: bool
    grace_ms: int
    cabinets: list[Cabinet]
    schedules: list[Schedule]
    processes: list[Item]
    actions: list[Item]
    incidents: list[Incident] = field(default_factory=list)

    def cabinet_days(self) -> float:
        return len(self.cabinets) * self.duration_ms / 86400000.0

    def local_minute(self, ms: int) -> tuple[int, int]:
        """(weekday 0 = Monday, minute of the day) in the scenario's timezone."""
        t = self.start + dt.timedelta(milliseconds=ms)
        return t.weekday(), t.hour * 60 + t.minute

    def week_ms(self, ms: int) -> int:
        """Milliseconds since local Monday 00:00 at ``ms`` into the scenario."""
        t = self.start + dt.timedelta(milliseconds=ms)
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return t.weekday() * 86400000 + int((t - midnight).total_seconds() * 1000)


def gateway_downs(scn: Scenario, cabinet: str) -> list[tuple[int, int]]:
    """When the cabinet's gateway is off: (ms it stops, ms it starts again), in
    order.  Each ``gateway_restart``, and each cut of the cabinet's feed
    (``power_cut``, ``grid_outage``) that outlasts the gateway's ``backup``:
    off when the backup runs flat, on again when the supply returns (never,
    past the scenario's end, for a cut for good)."""
    never = scn.duration_ms + 1
    out = []
    for a in scn.actions:
        if cabinet not in a.cabinets:
            continue
        p = a.params
        if a.kind == "gateway_restart":
            out.append((a.at_ms, a.at_ms + p["down"]))
        elif a.kind in ("power_cut", "grid_outage") and p["backup"] != FOR_EVER:
            back = a.at_ms + p["duration"] if p["duration"] > 0 else never
            if a.at_ms + p["backup"] < back:
                out.append((a.at_ms + p["backup"], back))
    return sorted(out)


def parse_duration(value: Any) -> int | None:
    """``"1h30m"``, ``"+90s"``, ``"250ms"``, ``"2d"`` -> ms; None if malformed.
    The grammar is rules/duration.py's; an offset may lead with ``+``."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return parse_ms(text[1:] if text.startswith("+") else text)


def parse_clock(value: Any) -> int | None:
    """``"HH:MM"`` (00:00 to 24:00) -> minutes after midnight; None if malformed."""
    if not isinstance(value, str):
        return None
    m = re.match(r"^(\d\d):(\d\d)$", value)
    if not m:
        return None
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 24 or mi > 59 or (h == 24 and mi):
        return None
    return h * 60 + mi
