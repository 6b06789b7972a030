"""Small hand-made scenarios for the simulator and evaluation tests."""

from __future__ import annotations

from simulator.scenario import Scenario
from simulator.scenariofile import loads
from simulator.world import CabinetWorld


def scenario_head(name: str, start: str, duration: str, seed: int | None = None) -> str:
    """A scenario file's ``[scenario]`` table (docs/scenarios.md); ``start`` is a TOML date-time."""
    seed_line = "" if seed is None else "seed = {}\n".format(seed)
    return '\n[scenario]\nname = "{}"\nstart = {}\nduration = "{}"\n{}'.format(name, start, duration, seed_line)


def scenario_text(body: str = "", duration: str = "1h", armed: bool = True) -> str:
    """One cabinet, c1, armed or not, for ``duration`` from a Monday midnight; then ``body``."""
    return scenario_head("t", "2026-03-16T00:00:00+01:00", duration, seed=5) + \
        '\n[[cabinet]]\nid = "c1"\narmed = {}\n'.format(str(armed).lower()) + body


def scenario(body: str = "", duration: str = "1h", armed: bool = True) -> Scenario:
    return loads(scenario_text(body, duration, armed), "t.toml")


def series(scn: Scenario) -> tuple[dict[str, list[tuple[int, int]]], list[tuple[int, tuple[int, int]]]]:
    """Every signal's (t, value) changes and every (t, command) of cabinet c1."""
    world = CabinetWorld(scn, scn.cabinets[0])
    names = world.catalog.names
    out: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    cmds = []
    for t, changes, commands in world.stream():
        for i, v in changes:
            out[names[i]].append((t, v))
        cmds += [(t, c) for c in commands]
    return out, cmds


def value_at(points: list[tuple[int, int]], t: int) -> int:
    v = 0
    for ts, x in points:
        if ts > t:
            break
        v = x
    return v


def peak(points: list[tuple[int, int]], t0: int, t1: int) -> int:
    vals = [v for t, v in points if t0 <= t <= t1]
    return max(vals) if vals else value_at(points, t0)
