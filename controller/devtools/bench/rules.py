"""Rule figures: evaluation per scan (1,000 rules, default packs), compile
time, MicroPython evaluation time and heap.

The generators here (random rule files, traces that carry a table) are
shared with the tests (tests/test_rules_*.py, tests/test_portable.py).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from controller.cli.rulescmd import CLASS_SIGNALS, DEMO_SCHEDULES, site_catalog
from controller.core import ticks
from controller.core.catalog import SYSTEM_SIGNALS, Catalog, device_signals, schedule_signals
from controller.core.evaluator import Evaluator
from controller.core.step import CoreConfig
from controller.core.table import Table
from controller.core.trace import header_line, scan_line
from controller.devtools import mpy
from controller.devtools.bench import Figure
from rules.compiler import Compiled, SiteCatalog, compile_files
from rules.language import default_sources
from rules.payload import json_data

_BOOLS = ("io.door_open", "io.door_bolt", "io.tamper", "bms1.online", "bms2.online", "io.online",
          "sys.clock_trusted", "sys.tamper", "relay.k1")
# (signal, low, high): values a random trace moves through, thresholds inside.
_NUMBERS = (("io.vib_peak_mg", 0, 2000), ("io.tilt_mdeg", -8000, 8000), ("bms1.temp_max_dc", 150, 700),
            ("bms2.temp_max_dc", 150, 700), ("bms1.current_ma", -250000, 250000),
            ("bms1.modules", 6, 8), ("bms2.pack_mv", 380000, 420000), ("sys.disk_free_pct", 0, 100))


def _atom(rng: random.Random, depth: int) -> str:
    pick = rng.randrange(15 if depth < 2 else 9)
    name, lo, hi = rng.choice(_NUMBERS)
    k = rng.randrange(lo, hi + 1)
    if pick == 0:
        return rng.choice(_BOOLS)
    if pick in (1, 2):
        return "{} {} {}".format(name, rng.choice(["<", "<=", ">", ">=", "==", "!="]), k)
    if pick == 3:
        return "mode({})".format(", ".join('"{}"'.format(m) for m in rng.sample(
            ["armed", "disarmed", "alarm", "maintenance", "arming", "entry"], rng.randrange(1, 3))))
    if pick == 4:
        return 'schedule("{}")'.format(rng.choice(["night", "shift_change", "maintenance"]))
    if pick == 5:
        return "abs({}) > {}".format(name, abs(k))
    if pick == 6:
        return "bit(bms{}.alarm_bits, {})".format(rng.randrange(1, 3), rng.randrange(0, 31))
    if pick == 7:
        return "bms1.cell_vmax_mv - bms1.cell_vmin_mv > {}".format(rng.randrange(0, 400))
    if pick == 8:
        return "changed({})".format(name)
    inner = _expr(rng, depth + 1)
    window = '"{}{}"'.format(rng.randrange(1, 20), rng.choice(["s", "00ms"]))
    if pick == 9:
        return "held({}, {})".format(inner, window)
    if pick == 10:
        return "within({}, {})".format(inner, window)
    if pick == 11:
        return "{}({})".format(rng.choice(["rose", "fell"]), inner)
    if pick == 12:
        return "count({}, {}) >= {}".format(inner, window, rng.randrange(1, 4))
    if pick == 13:
        return "abs(moved({}, {})) > {}".format(name, inner, (hi - lo) // rng.randrange(2, 20))
    return "rate({}, {}) {} {}".format(name, window, rng.choice(["<", ">"]), (hi - lo) // rng.randrange(2, 20))


def _expr(rng: random.Random, depth: int = 0) -> str:
    parts = [_atom(rng, depth) for _ in range(rng.randrange(1, 4))]
    text = " {} ".format(rng.choice(["and", "or"])).join("({})".format(p) for p in parts)
    return "not ({})".format(text) if rng.random() < 0.15 else text


def random_rules(seed: int, count: int) -> str:
    """A TOML rule file of ``count`` random rules over the demo catalog."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        lines = ["[[rule]]", 'id = "r{}"'.format(i), "when = '{}'".format(_expr(rng)),
                 'severity = "{}"'.format(rng.choice(["info", "info", "warning", "alarm", "critical"]))]
        extra = rng.random()
        if extra < 0.2:
            lines.append('for = "{}s"'.format(rng.randrange(0, 5)))
        elif extra < 0.3:
            lines.append("latch = true")
        elif extra < 0.4:
            lines.append("clear_when = '{}'".format(_expr(rng)))
        if rng.random() < 0.2:
            lines.append('actions = ["{}"]'.format(rng.choice(["lock", "silent", "uplink", "fault"])))
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def compile_text(text: str, catalog_path: str | None = None) -> Compiled:
    """Compile rule text (written to a temporary file) against the demo catalog."""
    _catalog, site = site_catalog(catalog_path)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.toml"
        path.write_text(text)
        return compile_files([str(path)], site)


def rules_trace(compiled: Compiled | None, seed: int, scans: int) -> list[str]:
    """A random trace over the demo catalog; its header carries the table."""
    rng = random.Random(seed)
    catalog, _site = site_catalog(None)
    zone = catalog.index["io.door_open"]
    config = CoreConfig({"exit_delay_ms": 2000, "entry_delay_ms": 1500, "maint_default_ms": 5000,
                         "maint_max_ms": 20000, "siren_max_ms": 3000}, (zone,))
    extra = {"rules": json_data(compiled.data)} if compiled is not None else None
    lines = [header_line(catalog, config, ["io.door_open"], extra)]
    t = ticks.MASK - rng.randrange(0, 30000)   # cross the tick wrap
    first = {name: 1 for name in ("io.online", "bms1.online", "bms2.online", "relay.online",
                                  "sys.clock_trusted")}
    first.update({"bms1.modules": 8, "bms2.modules": 8, "bms1.serial": 4711, "bms2.serial": 815,
                  "bms1.cells_per_module": 16, "bms2.cells_per_module": 16})
    commands = ["arm", "arm", "disarm", "ack", "maint_start", "maint_stop", "silence", "unlock"]
    for scan in range(scans):
        changes = dict(first) if scan == 0 else {}
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            if rng.random() < 0.4:
                changes[rng.choice(_BOOLS)] = rng.randrange(0, 2)
            else:
                name, lo, hi = rng.choice(_NUMBERS)
                changes[name] = rng.randrange(lo, hi + 1)
        if rng.random() < 0.01:
            changes["sched." + rng.choice(["night", "shift_change", "maintenance"])] = rng.randrange(0, 2)
        if rng.random() < 0.01:
            changes["bms{}.alarm_bits".format(rng.randrange(1, 3))] = rng.randrange(0, 1 << 24)
        cmds = [(rng.choice(commands), 0)] if rng.random() < 0.01 else []
        lines.append(scan_line(t, changes, cmds))
        t = ticks.add(t, rng.choice([100, 100, 100, 250, 1000]))
    return lines


def packs() -> Compiled:
    _catalog, site = site_catalog(None)
    return compile_files(default_sources([]), site)


def big_site(batteries: int, ios: int) -> tuple[Catalog, SiteCatalog]:
    """A large site: ``batteries`` battery strings, ``ios`` sensor modules, a relay."""
    specs: list[tuple[str, str, int]] = []
    classes = {"relay": "relay"}
    for k in range(1, batteries + 1):
        classes["bms{}".format(k)] = "battery"
    for k in range(1, ios + 1):
        classes["io{}".format(k)] = "io"
    for dev in sorted(classes):
        specs += device_signals(dev, CLASS_SIGNALS[classes[dev]])
    specs += list(SYSTEM_SIGNALS) + schedule_signals(DEMO_SCHEDULES)
    catalog = Catalog(specs)
    return catalog, SiteCatalog(catalog.specs(), classes, catalog.digest())


def _images(catalog: Catalog, scans: int, seed: int) -> list[tuple[int, list[int]]]:
    """Random images: everything online, a few signals move each scan."""
    rng = random.Random(seed)
    image = catalog.new_image()
    for name in catalog.names:
        if name.endswith(".online") or name == "sys.clock_trusted":
            image[catalog.index[name]] = 1
        elif name.endswith(".modules"):
            image[catalog.index[name]] = 8
        elif name.endswith(".cells_per_module"):
            image[catalog.index[name]] = 16
        elif name.endswith("temp_max_dc"):
            image[catalog.index[name]] = 250
    out = []
    t = ticks.MASK - 10000
    for _ in range(scans):
        for _ in range(rng.choice([0, 1, 2, 3])):
            i = rng.randrange(catalog.size)
            image[i] = rng.randrange(0, 2) if catalog.units[i] == "bool" else rng.randrange(-1000, 100000)
        out.append((t, list(image)))
        t = ticks.add(t, 100)
    return out


def _per_scan(compiled: Compiled, scans: int, every_scan: bool = False,
              catalog: Catalog | None = None) -> float:
    """Mean µs per Evaluator.scan over random images (demo catalog by default)."""
    if catalog is None:
        catalog = site_catalog(None)[0]
    evaluator = Evaluator(Table(compiled.data, catalog.size), every_scan)
    images = _images(catalog, scans, 11)
    modes = [2, 2, 3, 5, 0, 4]
    t0 = time.perf_counter()
    for k, (t, img) in enumerate(images):
        evaluator.scan(img, t, modes[(k // 500) % len(modes)])
    return (time.perf_counter() - t0) / len(images) * 1e6


def _micropython(lines: list[str]) -> tuple[float, float, int]:
    text = "\n".join(lines) + "\n"
    outs = mpy.run([
        "import gc, time, json\n"
        "from controller.core.trace import replay_lines\n"
        "from controller.core.evaluator import evaluator_from_header\n"
        "def factory(catalog, head):\n"
        "    return evaluator_from_header(head, catalog.digest(), catalog.size)\n",
        "gc.collect()\nBASE = gc.mem_alloc()\n",
        "t0 = time.ticks_ms()\nR = replay_lines(open('/app/rules.trace'), factory, keep_timeline=False)\n"
        "print(time.ticks_diff(time.ticks_ms(), t0), R.scans)\nEV = R.state.rules\nR = None\n",
        "gc.collect()\nprint(gc.mem_alloc() - BASE)\n",
        "t0 = time.ticks_ms()\nR = replay_lines(open('/app/rules.trace'), None, keep_timeline=False)\n"
        "print(time.ticks_diff(time.ticks_ms(), t0))\nR = None\n",
    ], {"rules.trace": text})
    with_rules, n = (int(x) for x in outs[2].split())
    without = int(outs[4].strip())
    return (with_rules - without) / n * 1000, with_rules / 1000, int(outs[3].strip())


def _words(compiled: Compiled) -> str:
    return "{} rules, {} code words".format(len(compiled.rules), sum(len(r[4]) for r in compiled.data["rules"]))


def run() -> list[Figure]:
    site_catalog_, site = big_site(55, 8)
    site_table = compile_files(default_sources([]), site)
    text = random_rules(5, 1000)
    t0 = time.perf_counter()
    random_table = compile_text(text)
    compile_s = time.perf_counter() - t0
    pack = packs()
    figures = [
        Figure("~1,000 rules (packs, 55 batteries), per scan", _per_scan(site_table, 3000, False, site_catalog_)
               / 1000, "ms", "<= 1", _words(site_table)),
        Figure("  same, worst case (every rule runs)", _per_scan(site_table, 300, True, site_catalog_) / 1000,
               "ms", note="the bound on a scan"),
        Figure("1,000 random nested rules, per scan", _per_scan(random_table, 2000) / 1000, "ms",
               note=_words(random_table)),
        Figure("  same, worst case (every rule runs)", _per_scan(random_table, 300, True) / 1000, "ms"),
        Figure("default packs ({} rules), per scan".format(len(pack.rules)), _per_scan(pack, 20000), "us",
               "<= 100"),
        Figure("default packs, worst case (every rule runs)", _per_scan(pack, 5000, True), "us"),
        Figure("compile 1,000 distinct random rules", compile_s, "s", "<= 2"),
    ]
    if mpy.available():
        per_scan_us, total_s, heap = _micropython(rules_trace(pack, 3, 6000))
        figures.append(Figure("default packs under MicroPython, per scan", per_scan_us, "us",
                              note="replay with rules minus replay without, 6,000 scans"))
        figures.append(Figure("MicroPython 6,000-scan replay with the packs", total_s, "s"))
        figures.append(Figure("MicroPython live heap: core state + evaluator", heap / 1024, "KB"))
    else:
        figures.append(Figure("MicroPython figures", 0, "-", note="skipped: run `make setup`"))
    return figures
