"""The shared set of traces that every platform must replay identically."""

from __future__ import annotations

import random

from controller.core import ticks
from controller.core.catalog import Catalog
from controller.core.events import COMMAND_NAMES
from controller.core.step import CoreConfig
from controller.core.trace import header_line, scan_line
from controller.devtools.bench.core import hour_trace
from controller.devtools.sampletraces import CABINET, night_trace


# Escalation plans with delays, so a replay crosses steps, upgrades and acks.
PLANS = {"alarm.armed": [["strobe", 0], ["lights", 0], ["uplink", 0], ["siren", 700], ["camera", 900], ["lock", 2500]],
         "alarm.disarmed": [["camera", 0], ["siren", 300]],
         "critical.armed": [["siren", 0], ["lock", 400], ["lights", 100]]}


def random_trace(seed: int, scans: int = 4000, plans: dict | None = None) -> list[str]:
    """Random inputs and commands (every command, odd timings, a tick wrap)."""
    rng = random.Random(seed)
    catalog = Catalog(CABINET)
    values: dict = {"exit_delay_ms": 2000, "entry_delay_ms": 1500, "maint_default_ms": 5000,
                    "maint_max_ms": 20000, "siren_max_ms": 3000}
    if plans:
        values["escalation"] = plans
    config = CoreConfig(values, (catalog.index["io.door_open"],))
    lines = [header_line(catalog, config, ["io.door_open"])]
    t = ticks.MASK - rng.randrange(0, 50000)
    names = sorted(COMMAND_NAMES.values())
    for _ in range(scans):
        changes = {}
        if rng.random() < 0.05:
            name = rng.choice(catalog.names)
            changes[name] = rng.randrange(0, 2) if rng.random() < 0.7 else rng.randrange(-5000, 5000)
        cmds = []
        if rng.random() < 0.02:
            cmds.append((rng.choice(names), rng.choice([0, 0, 700, 30000])))
        lines.append(scan_line(t, changes, cmds))
        t = ticks.add(t, rng.choice([50, 100, 100, 100, 250]))
    return lines


def shared_traces() -> dict[str, list[str]]:
    traces = {"night": night_trace(), "hour": hour_trace()[:6001]}
    for seed in (1, 2, 3):
        traces["random{}".format(seed)] = random_trace(seed)
    traces["escalation"] = random_trace(4, plans=PLANS)
    return traces
