"""Closed-loop evaluation in virtual time: ``cabguard eval SCENARIO...``.

Each cabinet of a scenario gets its own gateway core (``CoreState`` from
the cabinet's catalog) and is driven by ``controller.core.step.step`` with
the world's changes and people's commands, scan by scan, on the scan grid
of the scenario.  Virtual time jumps over scans in which nothing can
happen: ``step()`` runs at every scan where an input changed or a command
arrived, at every deadline the core holds (exit/entry delay, maintenance,
siren limit), at the responder's acknowledgement, and at least every
``idle_ms`` (default 1 s, which is also when the I/O module's window closes
and the anomaly model's windows end).  For the core alone this is exact;
a rules evaluator with timers is resolved to within ``idle_ms`` (pass
``idle_ms=scan_ms`` for scan-exact timers).

A *detection* is the core entering ALARM or a rule raised with severity
alarm or critical.  An incident is detected when a detection falls in
``[start, end + grace]``; detections elsewhere are nuisance alarms
(detections less than a minute apart count once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import statistics
import sys
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterable

from controller.core import modes, ticks
from controller.core.anomaly import ModelTables
from controller.core.catalog import Catalog
from controller.core.events import ALARM, CMD_ACK, CMD_ARM, EV_INVENTORY, EV_MODE, EV_RULE
from controller.core.modelrules import ModelRules
from controller.core.outputs import OUTPUT_NAMES
from controller.core.step import DEFAULT_ENTRY_ZONES, CoreConfig, CoreState, step
from rules.modelfile import read_model
from simulator import checklist
from simulator.decodepath import profile_decode
from simulator.rulesource import RuleSource
from simulator.scenario import Cabinet, Scenario, gateway_downs
from simulator.errors import ScenarioError
from simulator.scenariofile import load
from simulator.senses import REPORTED_OUTPUTS
from simulator.world import CabinetWorld, cabinet_catalog

MERGE_MS = 60000
# Signals kept for the report's plots, around each incident.
PLOT_SIGNALS = ("io.vib_rms_mg", "io.vib_peak_mg", "io.door_open", "io.door_bolt", "io.tilt_mdeg",
                "io.accel_z_mg", "io.online", "anom.score")
PLOT_BATTERY = ("modules", "pack_mv", "current_ma", "temp_max_dc", "online")     # of every battery
PLOT_MARGIN_MS = 5 * 60000

# Builds, per cabinet, the rules evaluator (e.g. RuleSource: the compiled packs).
RulesFactory = Callable[[Catalog], Any]
# Builds, per cabinet, the path the world's values take to the image, e.g.
# encode into the simulated devices' registers and decode with the device
# profiles: changes in, changes out (catalog indices and integer values).
Changes = list[tuple[int, int]]
Decode = Callable[[Changes], Changes]
DecodeFactory = Callable[[Catalog], Decode]


@dataclass
class Detection:
    t_ms: int
    by: str                      # "entry_delay", "rule #N", "model: vib, peak"


@dataclass
class CabinetRun:
    cabinet: str
    detections: list[Detection]
    scans: int
    history: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    modes: list[tuple[int, int]] = field(default_factory=list)
    rises: dict[str, list[int]] = field(default_factory=dict)   # ms each reported output went on


_TIMED_MODES = (modes.ARMING, modes.ENTRY, modes.MAINTENANCE)     # modes with a deadline
_NEVER = 1 << 62
_NO_COMMANDS = ()          # a scan's commands when the world brought none (most scans): no list to make


def _due(state: CoreState, last: int) -> int | None:
    """The absolute ms of the next core deadline after scan ``last``, if any."""
    due = None
    m = state.machine
    if m.mode in _TIMED_MODES:
        due = last + ticks.diff(m.deadline, ticks.wrap(last))
    if state.siren_on:
        s = last + ticks.diff(ticks.add(state.siren_since, state.config.siren_max_ms), ticks.wrap(last))
        due = s if due is None or s < due else due
    esc = state.escalation
    if esc.running():              # the escalation plan's next step
        for code, delay in state.config.escalation.plan(esc.severity, esc.group):
            if not esc.taken(code):
                s = last + ticks.diff(ticks.add(esc.since, delay), ticks.wrap(last))
                due = s if due is None or s < due else due
                break
    return due


class GatewayImage:
    """The gateway's image of what the world's devices answer.

    At a start -- the first, and after each gateway restart -- every device
    is unread and offline (its signals 0), as on a gateway that has just
    started (``cabguard run``); each comes online at its first poll, one
    device per scan in catalog order, with what it answers then.  Signals of
    no device (``sys.*``, ``sched.*``) are the gateway's own: at once."""

    def __init__(self, catalog: Catalog, scan_ms: int, decode: Decode | None = None):
        self.scan_ms = scan_ms
        self.decode = decode                     # the world's values -> the image's, or None: as they are
        self.into: Callable[[Changes, list[int], list[int]], None] | None = getattr(decode, "into", None)
        self.truth = catalog.new_image()         # what the devices answer now
        self.image = catalog.new_image()         # what the gateway has read
        self.device_of = [-1] * catalog.size     # device number of each signal, -1: none
        self.signals: list[list[int]] = []       # each device's signals
        for k, dev in enumerate(catalog.devices):
            own = [i for i, name in enumerate(catalog.names) if name.startswith(dev + ".")]
            for i in own:
                self.device_of[i] = k
            self.signals.append(own)
        self.unpolled: dict[int, int] = {}       # device number -> ms of its first poll

    def boot(self, t: int) -> None:
        """The gateway starts at ``t``: its image is new, its devices unread."""
        for i in range(len(self.image)):
            self.image[i] = self.truth[i] if self.device_of[i] < 0 else 0
        self.unpolled = {k: t + (k + 1) * self.scan_ms for k in range(len(self.signals))}

    def apply(self, changes: Changes) -> None:
        """The world's changes, decoded: to the image for the devices polled
        since the start.  Once every device is read (the common case) they go
        to the truth and the image alike, decoded straight into both when the
        decoder can (``profile_decode``'s ``into``: one pass, no list between)."""
        truth, image, decode = self.truth, self.image, self.decode
        if not self.unpolled:
            if self.into is not None:
                self.into(changes, truth, image)
                return
            for i, v in (decode(changes) if decode else changes):
                truth[i] = image[i] = v
            return
        for i, v in (decode(changes) if decode else changes):
            truth[i] = v
            k = self.device_of[i]
            if k < 0 or k not in self.unpolled:
                image[i] = v

    def poll(self, t: int) -> None:
        """Devices whose first poll is due come online with what they answer."""
        for k, at in list(self.unpolled.items()):
            if at <= t:
                for i in self.signals[k]:
                    self.image[i] = self.truth[i]
                del self.unpolled[k]

    def next_poll(self) -> int | None:
        return min(self.unpolled.values()) if self.unpolled else None


def _restarts(scn: Scenario, cab: Cabinet) -> list[tuple[int, int]]:
    """The cabinet's gateway restarts: (ms it stops, ms it starts again)."""
    return gateway_downs(scn, cab.id)     # gateway_restart, and a cut outlasting the backup


def run_cabinet(scn: Scenario, cab: Cabinet, rules_factory: RulesFactory | None = None,
                model: ModelTables | None = None, idle_ms: int = 1000, record: bool = False,
                decode_factory: DecodeFactory | None = None) -> CabinetRun:
    """Drive one cabinet's core through the whole scenario."""
    catalog = cabinet_catalog(scn, cab, getattr(rules_factory, "schedules", ()))
    decode = decode_factory(catalog) if decode_factory else None
    config = CoreConfig(scn.core, tuple(catalog.zone(z) for z in DEFAULT_ENTRY_ZONES))  # as a site's default

    def start() -> CoreState:
        """A gateway's core as it starts: rules and model without history."""
        rules = rules_factory(catalog) if rules_factory else None
        evaluator = rules
        if model is not None:
            evaluator = ModelRules(model, catalog, rules, config.maint_max_ms)
        return CoreState(catalog, config, evaluator)
    state = start()
    gateway = GatewayImage(catalog, scn.scan_ms, decode)
    gateway.boot(0)
    image, truth, into = gateway.image, gateway.truth, gateway.into
    restarts = _restarts(scn, cab)
    stream = CabinetWorld(scn, cab, catalog).stream()
    nxt = next(stream, None)
    scan = scn.scan_ms
    end = scn.duration_ms
    windows = [(i.start_ms - PLOT_MARGIN_MS, i.end_ms + PLOT_MARGIN_MS)
               for i in scn.incidents if i.cabinet == cab.id] if record else []
    plot_names = list(PLOT_SIGNALS) + ["bms{}.{}".format(n, s) for n in range(1, cab.batteries + 1)
                                       for s in PLOT_BATTERY]
    plot_idx = [(name, catalog.index[name]) for name in plot_names if name in catalog.index]
    run = CabinetRun(cab.id, [], 0, {name: [] for name, _ in plot_idx})
    reported = [(name, OUTPUT_NAMES.index(name)) for name in REPORTED_OUTPUTS]
    run.rises = {name: [] for name, _ in reported}
    watched = itemgetter(*(i for _name, i in reported))     # the reported outputs, at once
    was_on = watched([0] * len(OUTPUT_NAMES))
    was = [0] * len(reported)
    ack_at = _NEVER             # when the operator acknowledges an alarm, if one is pending
    last = -scan
    scans = 0
    nxt_t = nxt[0] if nxt is not None else _NEVER
    machine, escalation = state.machine, state.escalation     # (bound again at a restart)
    mask = ticks.MASK           # ticks.wrap(t) inline: one call less per scan
    while True:
        t = last + idle_ms
        if nxt_t < t:
            t = nxt_t
        # escalation.severity >= 0 is escalation.running() without the call (every scan)
        if machine.mode in _TIMED_MODES or state.siren_on or escalation.severity >= 0:
            due = _due(state, last)         # (else no deadline: the common case, without the call)
            if due is not None and due < t:
                t = due
        if ack_at < t:
            t = ack_at
        if gateway.unpolled:
            poll = gateway.next_poll()
            if poll is not None and poll < t:
                t = poll
        if t % scan:
            t = -(-t // scan) * scan
        if t < last + scan:
            t = last + scan
        if restarts and restarts[0][0] <= t:
            # The gateway is down: the world goes on, nobody scans, commands
            # are lost; then it starts as `cabguard run` does, resuming the
            # mode it persisted.
            _down, up = restarts.pop(0)
            while nxt is not None and nxt[0] < up:
                gateway.apply(nxt[1])
                nxt = next(stream, None)
            nxt_t = nxt[0] if nxt is not None else _NEVER
            up = -(-up // scan) * scan
            persisted = state.persisted()
            state = start()
            machine, escalation = state.machine, state.escalation
            state.resume_after_restart(persisted, ticks.wrap(up), ticks.wrap(up))
            gateway.boot(up)
            ack_at = _NEVER
            last = up - scan
            continue
        if t > end:
            break
        cmds: list[tuple[int, int]] | tuple[()] = _NO_COMMANDS
        if nxt_t == t:
            if into is not None and not gateway.unpolled:
                into(nxt[1], truth, image)      # apply()'s common case, without the call
            else:
                gateway.apply(nxt[1])
            cmds = nxt[2]
            nxt = next(stream, None)
            nxt_t = nxt[0] if nxt is not None else _NEVER
        if gateway.unpolled:
            gateway.poll(t)
        if t == ack_at:
            cmds = list(cmds) + [(CMD_ACK, 0)] + ([(CMD_ARM, 0)] if scn.rearm and cab.armed else [])
            ack_at = _NEVER
        outputs, events = step(state, (image, cmds), t & mask)
        scans += 1
        on = watched(outputs)
        if on != was_on:
            was_on = on
            for k, (name, i) in enumerate(reported):
                if outputs[i] and not was[k]:
                    run.rises[name].append(t)
                was[k] = outputs[i]
        for ev in events:
            found = _detection(ev, state)
            if found:
                run.detections.append(Detection(t, found))
            if ev[0] == EV_MODE:
                if record:
                    run.modes.append((t, ev[2]))
                if ev[2] == modes.ALARM and scn.ack_after_ms:
                    ack_at = t + scn.ack_after_ms
        if windows and any(a <= t <= b for a, b in windows):
            for name, i in plot_idx:
                h = run.history[name]
                if not h or h[-1][1] != image[i]:
                    h.append((t, image[i]))
        last = t
    run.scans = scans
    return run


def _detection(ev: tuple[int, int, int, int], state: CoreState) -> str:
    code, a, b, c = ev
    evaluator = state.rules
    if code == EV_INVENTORY and state.mode == modes.ALARM:
        # What changed while the gateway was down: it raises the core's alarm
        # only while guarding, and the mode's event follows (or it was in ALARM).
        return "core: inventory {} {} -> {}".format(state.catalog.names[a], b, c)
    if code == EV_MODE and b == modes.ALARM:
        return "core: " + modes.EVENT_NAMES[c]
    if code == EV_RULE and c and b >= ALARM:
        if isinstance(evaluator, ModelRules) and a == evaluator.raised_as:
            why = evaluator.explained[-1][1] if evaluator.explained else []
            return "model: " + ", ".join("{} {}".format(n, p) for n, p in why)
        names = evaluator.rules.table.ids if isinstance(evaluator, ModelRules) else evaluator.table.ids
        return "rule " + names[a]
    return ""


def _excused(scn: Scenario, cabinet: str) -> list[tuple[int, int]]:
    """Spans of a cabinet where a detection is no nuisance: its incidents'
    ``[start, end + grace]`` and the times a responder has it in hand."""
    spans = [(i.start_ms, i.end_ms + scn.grace_ms) for i in scn.incidents if i.cabinet == cabinet]
    spans += [(a.at_ms, a.at_ms + a.params["duration"] if a.params["duration"] else scn.duration_ms)
              for a in scn.actions if a.kind == "responder" and cabinet in a.cabinets]
    return spans


def score_scenario(scn: Scenario, runs: list[CabinetRun]) -> dict[str, Any]:
    """Per-incident detection and time-to-detect; nuisance alarms per cabinet-day."""
    incidents = []
    by_cab = {r.cabinet: r for r in runs}
    for inc in scn.incidents:
        hits = [d for d in by_cab[inc.cabinet].detections if inc.start_ms <= d.t_ms <= inc.end_ms + scn.grace_ms]
        first = hits[0] if hits else None
        incidents.append({
            "scenario": scn.name, "cabinet": inc.cabinet, "kind": inc.kind, "note": inc.note,
            "start_s": inc.start_ms / 1000, "end_s": inc.end_ms / 1000,
            "detected": first is not None,
            "ttd_s": (first.t_ms - inc.start_ms) / 1000 if first else None,
            "outputs_s": {name: (next(t for t in ts if inc.start_ms <= t <= inc.end_ms + scn.grace_ms)
                                 - inc.start_ms) / 1000
                          for name, ts in by_cab[inc.cabinet].rises.items()
                          if any(inc.start_ms <= t <= inc.end_ms + scn.grace_ms for t in ts)},
            "by": first.by if first else "",
        })
    nuisance = {}
    times = {}
    by = {}
    for r in runs:
        spans = _excused(scn, r.cabinet)
        count = 0
        last = None
        times[r.cabinet] = []
        by[r.cabinet] = []
        for d in r.detections:
            if any(a <= d.t_ms <= b for a, b in spans):
                continue
            times[r.cabinet].append(d.t_ms / 1000)
            by[r.cabinet].append(d.by)
            if last is None or d.t_ms - last >= MERGE_MS:
                count += 1
            last = d.t_ms
        nuisance[r.cabinet] = count
    days = scn.cabinet_days()
    return {
        "scenario": scn.name, "path": scn.path, "cabinet_days": round(days, 4),
        "incidents": incidents, "nuisance_alarms": nuisance,
        "nuisance_per_cabinet_day": round(sum(nuisance.values()) / days, 4),
        "nuisance_times": times, "nuisance_by": by,
        "scans": sum(r.scans for r in runs),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall PD, NAR and time-to-detect over scenario results."""
    incidents = [i for r in results for i in r["incidents"]]
    found = [i for i in incidents if i["detected"]]
    ttds = sorted(i["ttd_s"] for i in found)
    days = sum(r["cabinet_days"] for r in results)
    alarms = sum(sum(r["nuisance_alarms"].values()) for r in results)
    # The quality goal's NAR: scenarios of pure port noise (no incident labelled).
    noise = [r for r in results if not r["incidents"]]
    noise_days = sum(r["cabinet_days"] for r in noise)
    noise_alarms = sum(sum(r["nuisance_alarms"].values()) for r in noise)
    by_kind = {}
    for kind in sorted({i["kind"] for i in incidents}):
        of = [i for i in incidents if i["kind"] == kind]
        by_kind[kind] = round(sum(1 for i in of if i["detected"]) / len(of), 4)
    return {
        "incidents": len(incidents), "detected": len(found),
        "pd": round(len(found) / len(incidents), 4) if incidents else None,
        "pd_by_kind": by_kind,
        "nar": round(alarms / days, 4) if days else None,
        "nar_per_cabinet_30d": round(30 * alarms / days, 3) if days else None,
        "nuisance_alarms": alarms, "cabinet_days": round(days, 3),
        "noise_cabinet_days": round(noise_days, 3), "noise_nuisance_alarms": noise_alarms,
        "nar_noise_per_cabinet_30d": round(30 * noise_alarms / noise_days, 3) if noise_days else None,
        "ttd_median_s": statistics.median(ttds) if ttds else None,
        "ttd_p95_s": ttds[min(len(ttds) - 1, int(0.95 * len(ttds)))] if ttds else None,
    }


# What a worker process runs: (scenarios, configurations, (rules factory,
# idle_ms, record, decode factory)); set before the pool forks, so the
# workers share it without pickling factories.
_WORK: tuple[list[Scenario], list[tuple[str, ModelTables | None]], tuple[Any, ...]] | None = None
# A task: one cabinet (scenario k, cabinet j) under one configuration.
Task = tuple[int, int, str]


def _run_one(task: Task) -> tuple[int, int, str, CabinetRun]:
    """One cabinet of one scenario under one configuration."""
    assert _WORK is not None
    scns, configs, (rules_factory, idle_ms, record, decode_factory) = _WORK
    k, j, name = task
    scn = scns[k]
    return k, j, name, run_cabinet(scn, scn.cabinets[j], rules_factory, dict(configs)[name], idle_ms, record,
                                   decode_factory)


def _run_all(scns: list[Scenario], configs: list[tuple[str, ModelTables | None]], setup: tuple[Any, ...],
             jobs: int) -> Iterable[tuple[int, str, dict[str, Any], list[CabinetRun]]]:
    """Every (scenario, configuration): its score and, when recording, its
    cabinets' runs.  Each cabinet runs on its own under each configuration,
    on ``jobs`` processes (1: here, in order); every run is independent and
    seeded, so the results are the same either way.  The longest cabinets
    go first and the short ones fill in at the end, so every core stays busy
    until the last (a long file of several cabinets is several tasks)."""
    global _WORK
    tasks = [(k, j, name) for k in range(len(scns)) for name, _m in configs for j in range(len(scns[k].cabinets))]
    _WORK = (scns, configs, setup)
    try:
        if jobs <= 1 or len(tasks) < 2:
            yield from _scored(scns, map(_run_one, tasks), setup[2])
            return
        tasks.sort(key=lambda t: -scns[t[0]].duration_ms)
        _compile_rules_here(scns, setup[0])
        with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            yield from _scored(scns, pool.imap_unordered(_run_one, tasks, chunksize=1), setup[2])
    finally:
        _WORK = None


def _scored(scns: list[Scenario], done: Iterable[tuple[int, int, str, CabinetRun]],
            record: bool) -> Iterable[tuple[int, str, dict[str, Any], list[CabinetRun]]]:
    """Cabinet runs, in any order, into each (scenario, configuration)'s score once all its cabinets ran."""
    pending: dict[tuple[int, str], list[CabinetRun | None]] = {}
    for k, j, name, run in done:
        runs = pending.setdefault((k, name), [None] * len(scns[k].cabinets))
        runs[j] = run
        if all(r is not None for r in runs):
            del pending[(k, name)]
            cab_runs = [r for r in runs if r is not None]
            yield k, name, score_scenario(scns[k], cab_runs), cab_runs if record else []


def _compile_rules_here(scns: list[Scenario], rules_factory: RulesFactory | None) -> None:
    """Compile every cabinet's rules before the pool forks: a bad rule file is refused
    here, not inside a worker (a pool torn down mid-run can hang), and the workers
    inherit the compiled tables instead of compiling them again."""
    if rules_factory is None:
        return
    for scn in scns:
        for cab in scn.cabinets:
            rules_factory(cabinet_catalog(scn, cab, getattr(rules_factory, "schedules", ())))


def evaluate(scenarios: Iterable[Scenario], rules_factory: RulesFactory | None = None,
             model: ModelTables | None = None, idle_ms: int = 1000,
             record: bool = False, decode_factory: DecodeFactory | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run every scenario once per configuration and summarise.

    Configurations: "rules" (the rules evaluator from ``rules_factory``, or
    the core alone) and, when a model is given, "rules+model".  The
    top-level keys describe the last configuration (with the model if any);
    ``compare`` holds each configuration's summary and the incidents that
    only the model found.
    """
    configs: list[tuple[str, ModelTables | None]] = [("rules", None)]
    if model is not None:
        configs.append(("rules+model", model))
    scns = list(scenarios)
    per: dict[str, list[dict[str, Any]]] = {name: [{}] * len(scns) for name, _m in configs}
    runs: dict[str, dict[str, list[CabinetRun]]] = {name: {} for name, _m in configs}
    for k, name, score, cab_runs in _run_all(scns, configs, (rules_factory, idle_ms, record, decode_factory), jobs):
        per[name][k] = score
        runs[name][scns[k].path] = cab_runs
    last = configs[-1][0]
    doc = summarise(per[last])
    doc["config"] = last
    doc["detections_from"] = ("the core (entry delay)" + (", a rules evaluator" if rules_factory else "")
                              + (", the anomaly model" if model is not None else ""))
    doc["scenarios"] = per[last]
    doc["compare"] = {name: summarise(res) for name, res in per.items()}
    if model is not None:
        base = {(i["scenario"], i["cabinet"], i["start_s"]) for r in per["rules"] for i in r["incidents"] if i["detected"]}
        doc["compare"]["model_adds"] = [
            {k: i[k] for k in ("scenario", "cabinet", "kind", "start_s", "ttd_s", "by")}
            for r in per[last] for i in r["incidents"]
            if i["detected"] and (i["scenario"], i["cabinet"], i["start_s"]) not in base]
        doc["compare"]["model_by_batch"] = model_by_batch(per["rules"], per[last])
    doc["_runs"] = runs
    return doc


def _tally(counts: dict[str, int], by: str) -> None:
    """Count a model detection under its top feature (``model: volt 120, vib 24``)."""
    if by.startswith("model: "):
        top = by[len("model: "):].split(" ")[0] or "?"
        counts[top] = counts.get(top, 0) + 1


def batch_of(path: str) -> str:
    """A scenario's batch: a held-out file's name prefix (``ho3`` for
    ``heldout/ho3-forklift.toml``), else ``library``."""
    p = Path(path)
    return p.name.split("-")[0] if p.parent.name == "heldout" else "library"


def model_by_batch(rules: list[dict[str, Any]], with_model: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The model's contribution per batch (docs/anomaly.md, "Earning its
    place"): incidents it detects that the rules alone miss, incidents the
    rules detect that it loses, and the nuisance alarms it adds (negative:
    removes).  It earns its place in a batch with detections added and no
    nuisance added."""
    out: dict[str, dict[str, Any]] = {}
    for a, b in zip(rules, with_model):
        row = out.setdefault(batch_of(a["path"]), {"scenarios": 0, "incidents": 0, "detections_added": 0,
                                                   "detections_lost": 0, "nuisance_added": 0, "added_by": {},
                                                   "model_nuisance_by": {}})
        row["scenarios"] += 1
        for i, j in zip(a["incidents"], b["incidents"]):
            row["incidents"] += 1
            if j["detected"] and not i["detected"]:
                row["detections_added"] += 1
                _tally(row["added_by"], j["by"])
            row["detections_lost"] += int(i["detected"] and not j["detected"])
        row["nuisance_added"] += sum(b["nuisance_alarms"].values()) - sum(a["nuisance_alarms"].values())
        for found in b["nuisance_by"].values():
            for d in found:
                _tally(row["model_nuisance_by"], d)
    for row in out.values():
        row["earns"] = row["detections_added"] > 0 and row["nuisance_added"] <= 0 and not row["detections_lost"]
    return dict(sorted(out.items()))


def load_model(path: str | None) -> ModelTables | None:
    return read_model(path) if path is not None else None


DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "rules" / "models" / "port.json"


def _text(doc: dict[str, Any]) -> str:
    lines = []
    for r in doc["scenarios"]:
        lines.append("{}  ({:.2f} cabinet-days, {} nuisance alarm(s))".format(
            r["scenario"], r["cabinet_days"], sum(r["nuisance_alarms"].values())))
        for i in r["incidents"]:
            lines.append("  {:<7} {:<8} at {:>9.1f} s  {}".format(
                i["kind"], i["cabinet"], i["start_s"],
                "detected in {:.1f} s by {}".format(i["ttd_s"], i["by"]) if i["detected"] else "MISSED"))
    for name, s in doc["compare"].items():
        if name in ("model_adds", "model_by_batch"):
            continue
        lines.append("{:<12} PD {} {}  NAR {} /cabinet-day ({} per cabinet-30d; port noise alone {} per "
                     "cabinet-30d over {} cabinet-days)  TTD median {} s, p95 {} s".format(
                         name, s["pd"], s["pd_by_kind"], s["nar"], s["nar_per_cabinet_30d"],
                         s["nar_noise_per_cabinet_30d"], s["noise_cabinet_days"], s["ttd_median_s"], s["ttd_p95_s"]))
    if "model_adds" in doc["compare"]:
        lines.append("the model adds {} detection(s) the rules alone miss".format(len(doc["compare"]["model_adds"])))
        for batch, row in doc["compare"]["model_by_batch"].items():
            lines.append("  model on {:<8} {} incident(s): {} detection(s) added, {} lost, {:+d} nuisance alarm(s){}".format(
                batch, row["incidents"], row["detections_added"], row["detections_lost"], row["nuisance_added"],
                "  (earns its place)" if row["earns"] else ""))
    lines.append("detections come from {}".format(doc["detections_from"]))
    return "\n".join(lines)


def check(paths: list[str]) -> int:
    """``cabguard eval --check``: load and validate each file, run nothing.
    Prints what each holds and every visit its processes drew (local times),
    or the file's first error with its line; 0 if all load, else 2."""
    bad = 0
    for path in paths:
        try:
            scn = load(path)
        except ScenarioError as e:
            print(e, file=sys.stderr)
            bad += 1
            continue
        print("{}: ok: {} cabinet(s), {:.2f} cabinet-days, {} action(s), {} incident(s)".format(
            path, len(scn.cabinets), scn.cabinet_days(), len(scn.actions), len(scn.incidents)))
        print(checklist.span(scn))
        for cab in scn.cabinets:
            for start, opened, closed, end, auth in sorted(CabinetWorld(scn, cab).visits):
                print("  {} visit ({}): unbolted {} (+{}), door open +{} to +{}, signed off {} (+{}){}".format(
                    cab.id, auth, _local(scn, start), _offset(start), _offset(opened), _offset(closed),
                    _local(scn, end), _offset(end), _past_end(scn, start, end)))
        for line in checklist.scripted(scn):          # the scripted acts and the incident windows
            print(line)
    return 2 if bad else 0


def _past_end(scn: Scenario, start: int, end: int) -> str:
    """What the scenario's end leaves of a visit: the world stops at ``duration``."""
    if start > scn.duration_ms:
        return "  (after the end: not played)"
    if end > scn.duration_ms:
        return "  (cut short by the end: no sign-off)"
    return ""


def _local(scn: Scenario, ms: int) -> str:
    return (scn.start + dt.timedelta(milliseconds=ms)).isoformat(timespec="seconds")


def _offset(ms: int) -> str:
    s = ms // 1000
    return "{}h{:02d}m{:02d}s".format(s // 3600, s // 60 % 60, s % 60)


def main(args: argparse.Namespace) -> int:
    if args.check:
        return check(args.scenario)
    scenarios = [load(p) for p in args.scenario]
    model_path = None if args.no_model else (args.model or (str(DEFAULT_MODEL) if DEFAULT_MODEL.exists() else None))
    rules = None if args.no_rules else RuleSource(args.rules)
    doc = evaluate(scenarios, rules_factory=rules, model=load_model(model_path), idle_ms=args.idle_ms,
                   record=bool(args.report), decode_factory=profile_decode(),
                   jobs=args.jobs or os.cpu_count() or 1)
    runs = doc.pop("_runs")
    doc["model"] = model_path
    doc["rules"] = rules.paths if rules else []
    if args.report:
        from simulator.report import write_report
        doc["report"] = write_report(Path(args.report), scenarios, doc, runs)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(_text(doc))
        if args.report:
            print("report: {}".format(doc["report"]))
    return 0
