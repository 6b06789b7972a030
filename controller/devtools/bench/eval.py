"""Evaluation figures: virtual-time speed, model inference cost, model size and heap."""

from __future__ import annotations

import json
import time

from controller.core import modes
from controller.core.anomaly import AnomalyModel, ModelTables
from controller.devtools import mpy
from controller.devtools.bench import Figure
from simulator.decodepath import profile_decode
from simulator.evaluate import DEFAULT_MODEL, run_cabinet
from simulator.rulesource import RuleSource
from simulator.scenariofile import load
from simulator.world import CabinetWorld

NOISE_MONTH = DEFAULT_MODEL.parent.parent.parent / "simulator" / "scenarios" / "noise-month.toml"
DAY_MS = 86400000


def _speed(model: ModelTables) -> tuple[float, float]:
    """Seconds for the 30-day noise scenario at one cabinet, as ``cabguard eval``
    runs it: profile decode, the default packs, the model, step()."""
    scn = load(NOISE_MONTH)
    t0 = time.perf_counter()
    run_cabinet(scn, scn.cabinets[0], RuleSource(), model, decode_factory=profile_decode())
    return time.perf_counter() - t0, scn.duration_ms / 1000


def _inference(model: ModelTables) -> float:
    """Microseconds per window: a day of port noise, all scans, per window closed."""
    scn = load(NOISE_MONTH)
    world = CabinetWorld(scn, scn.cabinets[0])
    scans = []
    for t, changes, _c in world.stream():
        if t > DAY_MS:
            break
        scans.append((t, changes))
    image = world.catalog.new_image()
    frames = []
    for t, changes in scans:             # pre-build images so only the model is timed
        for i, v in changes:
            image[i] = v
        frames.append((t, list(image)))
    m = AnomalyModel(model, world.catalog.index, (modes.DISARMED,))
    t0 = time.perf_counter()
    for t, img in frames:
        m.scan(img, t, modes.ARMED)
    return (time.perf_counter() - t0) / m.windows * 1e6


def _heap(text: str, index: dict[str, int]) -> int:
    outs = mpy.run([
        "import gc, json\nfrom controller.core.anomaly import AnomalyModel, ModelTables\n"
        "DOC = json.load(open('/app/model.json'))\nINDEX = json.load(open('/app/index.json'))\n",
        "gc.collect()\nBASE = gc.mem_alloc()\n",
        "M = AnomalyModel(ModelTables(DOC), INDEX, (0,))\n",
        "gc.collect()\nprint(gc.mem_alloc() - BASE)\n",
    ], {"model.json": text, "index.json": json.dumps(index)})
    return int(outs[3].strip())


def run() -> list[Figure]:
    text = DEFAULT_MODEL.read_text()
    model = ModelTables(json.loads(text))
    seconds, virtual = _speed(model)
    figures = [
        Figure("eval speed, one cabinet, decode + packs + model + core", virtual / seconds, "x", ">= 50000",
               "x real time"),
        Figure("30 cabinet-days of port noise", seconds * 30 * 86400 / virtual, "s", "<= 52"),
        Figure("model inference per window, CPython", _inference(model), "us", "<= 50",
               "includes folding every scan of the window"),
        Figure("model file size", len(text.encode()) / 1024, "KB", "<= 16"),
    ]
    if mpy.available():
        scn = load(NOISE_MONTH)
        index = dict(CabinetWorld(scn, scn.cabinets[0]).catalog.index)
        figures.append(Figure("MicroPython heap of one model instance", _heap(text, index) / 1024, "KB", "<= 16"))
    else:
        figures.append(Figure("MicroPython figures", 0, "-", note="skipped: run `make setup`"))
    return figures
