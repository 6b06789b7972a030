"""Portable-core figures: step() cost, an hour's replay, MicroPython time and heap."""

from __future__ import annotations

import random
import time

from controller.core import ticks
from controller.core.catalog import Catalog
from controller.core.step import CoreConfig, CoreState, step
from controller.core.trace import header_line, replay_lines, scan_line
from controller.devtools import mpy
from controller.devtools.bench import Figure
from controller.devtools.sampletraces import CABINET

HOUR_SCANS = 36000


def hour_trace(seed: int = 7) -> list[str]:
    """One hour at 10 Hz of a cabinet with sensor noise and a few commands."""
    rng = random.Random(seed)
    catalog = Catalog(CABINET)
    config = CoreConfig({}, (catalog.index["io.door_open"],))
    lines = [header_line(catalog, config, ["io.door_open"])]
    t = ticks.MASK - 60000  # cross the tick wrap on purpose
    door = 0
    for scan in range(HOUR_SCANS):
        changes = {"io.vib_rms_mg": rng.randrange(0, 40)}
        if scan == 0:
            changes.update({"io.online": 1, "bms1.online": 1, "bms1.modules": 8})
        if scan % 600 == 0:
            changes["bms1.temp_max_dc"] = 200 + rng.randrange(0, 50)
        cmds = []
        if scan == 10:
            cmds = [("arm", 0)]
        elif rng.random() < 0.0005:
            door ^= 1
            changes["io.door_open"] = door
        elif rng.random() < 0.0003:
            cmds = [(rng.choice(["disarm", "arm", "ack", "maint_start", "maint_stop", "silence"]), 0)]
        lines.append(scan_line(t, changes, cmds))
        t = ticks.add(t, 100)
    return lines


def _step_cost() -> float:
    catalog = Catalog(CABINET)
    state = CoreState(catalog, CoreConfig({}, (catalog.index["io.door_open"],)))
    image = catalog.new_image()
    inputs = (image, [])
    n = 200000
    t0 = time.perf_counter()
    for i in range(n):
        step(state, inputs, i * 100)
    return (time.perf_counter() - t0) / n * 1e6


def _micropython(lines: list[str]) -> tuple[float, int]:
    text = "\n".join(lines) + "\n"
    outs = mpy.run([
        "import gc, time\nfrom controller.core.trace import replay_lines\n",
        "gc.collect()\nBASE = gc.mem_alloc()\n",
        "t0 = time.ticks_ms()\nR = replay_lines(open('/app/hour.trace'), keep_timeline=False)\n"
        "print(time.ticks_diff(time.ticks_ms(), t0))\nSTATE = R.state\nR = None\n",
        "gc.collect()\nprint(gc.mem_alloc() - BASE)\n",
    ], {"hour.trace": text})
    return float(outs[2].strip()), int(outs[3].strip())


def run() -> list[Figure]:
    lines = hour_trace()
    t0 = time.perf_counter()
    replay_lines(lines, keep_timeline=False)
    replay_s = time.perf_counter() - t0
    figures = [
        Figure("step() with no rules, per call", _step_cost(), "us", "<= 20"),
        Figure("1 h at 10 Hz (36,000 scans) replay, CPython", replay_s, "s", "<= 1",
               "includes parsing the trace"),
    ]
    if mpy.available():
        ms, heap = _micropython(lines)
        figures.append(Figure("1 h replay under MicroPython (wasm)", ms / 1000, "s"))
        figures.append(Figure("MicroPython live heap of the core's state", heap / 1024, "KB", "<= 32"))
    else:
        figures.append(Figure("MicroPython figures", 0, "-", note="skipped: run `make setup`"))
    return figures
