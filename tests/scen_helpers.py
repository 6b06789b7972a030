"""Small hand-made scenarios for the simulator and evaluation tests."""

from __future__ import annotations

from simulator.scenario import Scenario

from simulator.scenariofile import loads
from simulator.world import CabinetWorld

HEAD = """
[scenario]
name = "t"
start = 2026-03-16T00:00:00+01:00
duration = "{duration}"
seed = 5

[[cabinet]]
id = "c1"
armed = {armed}
"""


def scenario(body: str = "", duration: str = "1h", armed: bool = True) -> Scenario:
    return loads(HEAD.format(duration=duration, armed=str(armed).lower()) + body, "t.toml")


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
