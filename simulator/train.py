"""``cabguard model train INPUT... -o MODEL``: learn the anomaly baseline.

Host-only, pure Python.  Inputs are scenario files (their cabinets' normal
life, simulated) or recorded traces (docs/trace.md).  Every window is cut
into the same features the gateway computes (``controller.core.anomaly.Features``),
turned into log-scale levels, and folded into:

* an envelope per hour of the week: the highest level seen in that hour and
  its neighbours (shift changes wander), never below ...
* ... a floor per feature: the 99.9th percentile over all hours, so that
  weather, which comes at any hour, is learned once for the whole week,
  and never below a physical prior (PRIOR);
* an all-week envelope, used while the gateway's clock is not trusted.

Windows that overlap a labelled incident (plus the scenario's grace) are
left out, and the trainer says so.  The model file is JSON
(docs/anomaly.md), well under 16 KB.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterator

from controller.core import ticks
from controller.core.anomaly import FEATURES, FORMAT, HOURS, N_FEATURES, Features, qlog
from controller.core.errors import TraceError
from controller.core.trace import parse_header, parse_scan
from drivers.atomicfile import write_output
from drivers.safefile import open_text
from rules.errors import ModelFileError
from simulator.scenariofile import load
from simulator.world import CabinetWorld, cabinet_catalog

WINDOW_MS = 5000
PRE = [0, 0, 0, 0, 0, 2, 2, 0, 0]          # right shifts before the log: mA and mV steps / 4
WEIGHT = [4] * N_FEATURES
MARGIN = 8                                  # levels above the envelope that cost nothing (x1.4)
THRESHOLD = 48                              # 12 levels past the margin on one feature (x1.7)
FLOOR_QUANTILE = 0.999
# Physical priors: levels below these are never unusual, whatever training
# saw (a pack voltage step under 2 V, a current step under 20 A between two
# readings, a 1.2 °C rise in 5 min, 0.5° of tilt, 50 mg of lift).
PRIOR = {"volt": qlog(2000 >> PRE[6]), "current": qlog(20000 >> PRE[5]), "temp": qlog(12),
         "tilt": qlog(500), "lift": qlog(50)}
ADAPT = {"cap": 12, "step_windows": 720, "holdoff_windows": 720}

Window = tuple[int, list[int]]              # (hour of week or -1, raw features)


class Collected:
    """Level statistics over the training windows."""

    def __init__(self) -> None:
        self.env = [[-1] * N_FEATURES for _ in range(HOURS)]
        self.hist = [[0] * 256 for _ in range(N_FEATURES)]
        self.windows = 0
        self.excluded_windows = 0
        self.notes: list[str] = []

    def add(self, hour: int, raw: list[int]) -> None:
        self.windows += 1
        row = self.env[hour] if 0 <= hour < HOURS else None
        for f in range(N_FEATURES):
            q = qlog(raw[f] >> PRE[f])
            self.hist[f][q] += 1
            if row is not None and q > row[f]:
                row[f] = q

    def tables(self) -> dict:
        base = [max(max((q for q in range(256) if self.hist[f][q]), default=0), PRIOR.get(FEATURES[f], 0))
                for f in range(N_FEATURES)]
        floor = [max(self._quantile(f, FLOOR_QUANTILE), PRIOR.get(FEATURES[f], 0)) for f in range(N_FEATURES)]
        hi = bytearray()
        for h in range(HOURS):
            near = [self.env[(h + d) % HOURS] for d in (-1, 0, 1)]
            for f in range(N_FEATURES):
                seen = max(r[f] for r in near)
                hi.append(base[f] if seen < 0 else max(seen, floor[f]))
        return {
            "cabguard_model": FORMAT, "features": list(FEATURES), "window_ms": WINDOW_MS,
            "pre": PRE, "weight": WEIGHT, "margin": MARGIN, "threshold": THRESHOLD,
            "base": base, "hi": hi.hex(), "adapt": ADAPT,
            "trained": {"windows": self.windows, "excluded_windows": self.excluded_windows},
        }

    def _quantile(self, f: int, q: float) -> int:
        total = sum(self.hist[f])
        need = q * total
        seen = 0
        for level in range(256):
            seen += self.hist[f][level]
            if seen >= need:
                return level
        return 255


def _excluded(t_end: int, spans: list[tuple[int, int]]) -> bool:
    t0 = t_end - WINDOW_MS
    return any(t0 < b and a < t_end for a, b in spans)


def scenario_windows(path: str, out: Collected, cabinet: str | None = None) -> None:
    scn = load(path)
    if scn.incidents:
        kinds = ", ".join(sorted({i.kind for i in scn.incidents}))
        out.notes.append("{}: excluded {} labelled incident(s) ({}) from training".format(
            path, len(scn.incidents), kinds))
    for cab in scn.cabinets:
        if cabinet is not None and cab.id != cabinet:
            continue
        spans = [(i.start_ms - WINDOW_MS, i.end_ms + scn.grace_ms) for i in scn.incidents if i.cabinet == cab.id]
        catalog = cabinet_catalog(scn, cab)
        for t_end, hour, raw in _windows(CabinetWorld(scn, cab, catalog).stream(), catalog.index,
                                         catalog.new_image(), catalog.index["sys.week_hour"]):
            if _excluded(t_end, spans):
                out.excluded_windows += 1
            else:
                out.add(hour, raw)


def _windows(stream: Iterator, index: dict[str, int], image: list[int], hour_idx: int) -> Iterator[tuple[int, int, list[int]]]:
    feats = Features(index)
    close = WINDOW_MS
    for t, changes, _cmds in stream:
        while t >= close:
            yield close, (image[hour_idx] if hour_idx >= 0 else -1), feats.close(image)
            close += WINDOW_MS
        for i, v in changes:
            image[i] = v
        feats.update(image)


def trace_windows(path: str, out: Collected) -> None:
    """A recorded trace; its header may label incidents as
    ``"incidents": [[start_t, end_t, kind], ...]`` in the scans' own ticks."""
    try:
        with open_text(path, "trace") as f:
            lines = [x for x in f if x.strip()]
    except OSError as e:
        raise ModelFileError("cannot read {}: {}".format(path, e.strerror)) from None
    except UnicodeDecodeError as e:
        raise ModelFileError("{}: not UTF-8 text (byte {} of a line); a trace is JSON Lines".format(
            path, e.start)) from None
    try:
        catalog, _config, _zones, head = parse_header(lines[0]) if lines else (None, None, None, None)
        if catalog is None:
            raise TraceError("trace is empty: the first line must be the header")
        scans = [parse_scan(text, n + 2, catalog) for n, text in enumerate(lines[1:])]
    except TraceError as e:
        raise ModelFileError("{}: {}".format(path, e)) from None
    except RecursionError:     # json.loads of a line nested thousands deep
        raise ModelFileError("{}: a line is nested too deep; a trace is JSON Lines".format(path)) from None
    labels = head.get("incidents", [])
    t0 = scans[0][0] if scans else 0
    spans = [(ticks.diff(a, t0) - WINDOW_MS, ticks.diff(b, t0)) for a, b, _k in labels]
    if labels:
        out.notes.append("{}: excluded {} labelled incident(s) from training".format(path, len(labels)))
    stream = ((ticks.diff(t, t0), [(i, v) for i, v in ch], cm) for t, ch, cm in scans)
    for t_end, hour, raw in _windows(stream, catalog.index, catalog.new_image(), catalog.index.get("sys.week_hour", -1)):
        if _excluded(t_end, spans):
            out.excluded_windows += 1
        else:
            out.add(hour, raw)


def train(inputs: list[str], cabinet: str | None = None) -> tuple[dict, list[str]]:
    """The model document and what the trainer has to say about its inputs.

    ``cabinet``: learn only that cabinet of the scenario inputs (a baseline
    for one gateway); by default every cabinet's life is pooled."""
    out = Collected()
    for path in inputs:
        if path.endswith(".toml"):
            scenario_windows(path, out, cabinet)
        else:
            trace_windows(path, out)
    if out.windows == 0:
        raise ModelFileError("no normal windows to learn from in {}".format(", ".join(inputs)))
    return out.tables(), out.notes


def main(args: argparse.Namespace) -> int:
    doc, notes = train(args.inputs, args.cabinet)
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    write_output(args.output, (text + "\n").encode(), "model", 0o644)
    for note in notes:
        print(note, file=sys.stderr)
    print("model {}: {} windows learned, {} excluded, {} bytes".format(
        args.output, doc["trained"]["windows"], doc["trained"]["excluded_windows"], len(text) + 1))
    return 0
