"""The evaluation report: summary JSON, a Markdown page and one PNG per incident.

Each plot shows, around the incident, the signals (vibration, door, tilt,
lift, pack, current, temperature, anomaly score), the core's mode, the
detections, and the ground-truth window, for every configuration that was
evaluated (rules alone, rules plus model).  matplotlib is the optional
extra ``report``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controller.core.modes import MODE_NAMES
from simulator.errors import EvalError
from simulator.scenario import Scenario

# (label, signals); "bmsN." signals are drawn for each battery the incident concerns.
PANELS = (
    ("vibration, mg", ("io.vib_rms_mg", "io.vib_peak_mg")),
    ("door / bolt", ("io.door_open", "io.door_bolt")),
    ("tilt mdeg, lift mg", ("io.tilt_mdeg", "io.accel_z_mg")),
    ("modules", ("bmsN.modules",)),
    ("current mA", ("bmsN.current_ma",)),
    ("temp 0.1 °C", ("bmsN.temp_max_dc",)),
    ("online", ("io.online", "bmsN.online")),
    ("anomaly score", ("anom.score",)),
)


def incident_batteries(scn: Scenario, inc: Any) -> list[str]:
    """The batteries an incident concerns: those its cabinet's actions name
    (``battery``, a BMS ``device``, a BMS ``signal``) inside its window, or
    every battery of the cabinet when none is named (a bus cut, a lift)."""
    named = []
    for a in scn.actions:
        if inc.cabinet in a.cabinets and inc.start_ms <= a.at_ms <= inc.end_ms:
            for key in ("battery", "device", "signal"):
                dev = str(a.params.get(key, "")).split(".")[0]
                if dev.startswith("bms") and dev not in named:
                    named.append(dev)
    if named:
        return sorted(named)
    cab = next(c for c in scn.cabinets if c.id == inc.cabinet)
    return ["bms{}".format(n) for n in range(1, cab.batteries + 1)]


def _steps(points: list[tuple[int, int]], t0: int, t1: int) -> tuple[list[float], list[int]]:
    """A step line over [t0, t1], starting from the value in force at t0."""
    xs: list[float] = []
    ys: list[int] = []
    before = [p for p in points if p[0] < t0]
    inside = [p for p in points if t0 <= p[0] <= t1]
    for t, v in before[-1:] + inside:
        t = max(t, t0)
        if xs:
            xs.append((t - t0) / 1000)
            ys.append(ys[-1])
        xs.append((t - t0) / 1000)
        ys.append(v)
    if xs:
        xs.append((t1 - t0) / 1000)
        ys.append(ys[-1])
    return xs, ys


def _plot(path: Path, scn: Scenario, inc: Any, runs: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    t0 = inc.start_ms - 5 * 60000
    t1 = inc.end_ms + 5 * 60000
    fig, axes = plt.subplots(len(PANELS) + 1, 1, figsize=(11, 13), sharex=True)
    full = runs[names[-1]]
    batteries = incident_batteries(scn, inc)
    for ax, (label, panel) in zip(axes, PANELS):
        signals = [b + s[4:] for s in panel if s.startswith("bmsN.") for b in batteries] + \
                  [s for s in panel if not s.startswith("bmsN.")]
        for s in signals:
            xs, ys = _steps(full.history.get(s, []), t0, t1)
            if xs:
                ax.plot(xs, ys, lw=0.8, label=s)
        ax.set_ylabel(label, fontsize=7)
        ax.legend(fontsize=6, loc="upper right")
    ax = axes[-1]
    for k, name in enumerate(names):
        xs, ys = _steps(runs[name].modes, t0, t1)
        if xs:
            ax.plot(xs, [y + 0.1 * k for y in ys], lw=1.2, label="mode: " + name)
        for d in runs[name].detections:
            if t0 <= d.t_ms <= t1:
                ax.axvline((d.t_ms - t0) / 1000, color="C{}".format(k + 3), ls="--", lw=1)
    ax.set_yticks(range(len(MODE_NAMES)))
    ax.set_yticklabels(MODE_NAMES, fontsize=6)
    ax.legend(fontsize=6, loc="upper right")
    ax.set_xlabel("seconds from 5 min before the incident")
    for a in axes:
        a.set_xlim(0, (t1 - t0) / 1000)
        a.axvspan((inc.start_ms - t0) / 1000, (inc.end_ms - t0) / 1000, color="red", alpha=0.08)
    fig.suptitle("{} / {}: {} ({})".format(scn.name, inc.cabinet, inc.kind, inc.note), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out: Path, scenarios: list[Scenario], doc: dict[str, Any],
                 runs: dict[str, dict[str, list[Any]]]) -> str:
    """Write summary.json, report.md and the plots; returns the report's path."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EvalError("the report needs matplotlib: pip install -e '.[report]'") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError("cannot create report folder {}: {}".format(out, e.strerror)) from None
    (out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Evaluation report", "", "Detections come from {}.".format(doc["detections_from"]), "",
             "| configuration | PD | PD by kind | NAR /cabinet-day | per cabinet-30d | port noise: per cabinet-30d "
             "| TTD median s | TTD p95 s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in doc["compare"].items():
        if name not in ("model_adds", "model_by_batch"):
            lines.append("| {} | {} | {} | {} | {} | {} ({} cabinet-days) | {} | {} |".format(
                name, s["pd"], ", ".join("{} {}".format(k, v) for k, v in s["pd_by_kind"].items()), s["nar"],
                s["nar_per_cabinet_30d"], s["nar_noise_per_cabinet_30d"], s["noise_cabinet_days"],
                s["ttd_median_s"], s["ttd_p95_s"]))
    if "model_adds" in doc["compare"]:
        lines += ["", "Incidents only the model detected: {}".format(len(doc["compare"]["model_adds"]))]
        lines += ["- {scenario} / {cabinet}: {kind}, {ttd_s} s, {by}".format(**a) for a in doc["compare"]["model_adds"]]
    lines += ["", "## Incidents", ""]
    for scn in scenarios:
        for n, inc in enumerate(scn.incidents):
            per = {name: next(r for r in runs[name][scn.path] if r.cabinet == inc.cabinet) for name in runs}
            png = "{}-{}.png".format(scn.name, n + 1)
            _plot(out / png, scn, inc, per)
            lines.append("### {} / {}: {}\n\n![{}]({})\n".format(scn.name, inc.cabinet, inc.kind, png, png))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return str(out / "report.md")
