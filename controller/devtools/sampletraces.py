"""Sample traces shared by the tests and the benchmarks.

``night_trace`` is a scripted night at one cabinet (arming, a technician's
visit, a forced door) as an ordinary trace; ``hour_trace`` (in
controller/devtools/bench/core.py) is an hour of sensor noise.  Both are data for
``step()``, with no devices behind them.
"""

from __future__ import annotations

from controller.core import ticks
from controller.core.catalog import SYSTEM_SIGNALS, Catalog, device_signals
from controller.core.step import CoreConfig
from controller.core.trace import header_line, scan_line
from drivers.modbus.profiles import BATTERY_SIGNALS, IO_SIGNALS


def _contract(signals: tuple, names: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """Some signals of a device class, as the signal contract defines them (drivers/modbus/profiles.py)."""
    by_name = {s[0]: s for s in signals}
    return [by_name[n] for n in names]


CABINET = (
    device_signals("io", _contract(IO_SIGNALS, ("door_open", "door_bolt", "tamper", "vib_rms_mg", "tilt_mdeg")))
    + device_signals("bms1", _contract(BATTERY_SIGNALS, ("pack_mv", "current_ma", "temp_max_dc", "modules", "serial")))
    + list(SYSTEM_SIGNALS)
)

START = "21:58:00"
# (time, signal changes, commands, what a person would say happened)
NIGHT = (
    ("21:58:00", {"io.online": 1, "bms1.online": 1, "io.door_bolt": 1, "bms1.modules": 8,
                  "bms1.pack_mv": 409600, "bms1.temp_max_dc": 215}, [], "gateway up"),
    ("22:00:00", {}, [("arm", 0)], "night shift leaves, cabinet armed"),
    ("23:40:00", {"io.door_bolt": 0}, [], "technician unlocks the door"),
    ("23:40:05", {"io.door_open": 1}, [], "door opens: entry delay runs"),
    ("23:40:17", {}, [("maint_start", 20 * 60000)], "technician logs in: maintenance for 20 min"),
    ("23:52:00", {"io.door_open": 0, "io.door_bolt": 1}, [], "door closed and bolted"),
    ("23:53:00", {}, [("maint_stop", 0)], "technician ends the visit: re-arming"),
    ("02:10:00", {"io.door_open": 1, "io.vib_rms_mg": 850}, [], "door forced at 02:10"),
    ("02:10:40", {"bms1.modules": 7}, [], "a module comes out"),
    ("02:25:00", {}, [("ack", 0)], "response team acknowledges"),
)


def _seconds(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s


def night_trace(step_ms: int = 1000) -> list[str]:
    """The scripted night as trace lines, one scan per ``step_ms``."""
    catalog = Catalog(CABINET)
    config = CoreConfig({"exit_delay_ms": 30000, "entry_delay_ms": 30000})
    config.entry_zones = (catalog.index["io.door_open"],)
    lines = [header_line(catalog, config, ["io.door_open"])]
    start = _seconds(START)
    script = {}
    for hms, changes, commands, _note in NIGHT:
        offset = (_seconds(hms) - start) % 86400
        script[offset * 1000] = (changes, commands)
    end = max(script) + 10 * 60000
    for ms in range(0, end + 1, step_ms):
        changes, commands = script.get(ms, ({}, []))
        lines.append(scan_line(ticks.wrap(ms), changes, commands))
    return lines
