"""Scenario parts for cameras, GNSS and the response plan (simulator/senses.py),
through the evaluation as `cabguard eval` runs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rules.language import PACKS, default_sources
from simulator.decodepath import profile_decode
from simulator.errors import ScenarioError
from simulator.evaluate import evaluate
from simulator.rulesource import RuleSource
from simulator.scenariofile import loads

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


def documented_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    return re.search(r"```toml\n(# carried-away\.toml\n.*?)```", text, re.S).group(1)


def run(text: str, with_camera_pack: bool) -> dict:
    rules = default_sources([]) + ([str(PACKS / "optional" / "cameras.toml")] if with_camera_pack else [])
    return evaluate([loads(text, "carried-away.toml")], RuleSource(rules), decode_factory=profile_decode())


def test_the_documented_scenario_detects_with_cameras_and_gnss_and_reports_the_outputs():
    doc = run(documented_example(), with_camera_pack=True)
    knock, carry = doc["scenarios"][0]["incidents"]
    assert knock["detected"] and knock["by"] == "rule person_with_vibration.io" and knock["ttd_s"] == 60.0
    assert knock["outputs_s"] == {"lights": 60.0, "camera": 60.0, "lock": 180.0}
    assert carry["detected"] and carry["by"] == "rule moved_from_place.pos" and carry["ttd_s"] <= 10
    assert doc["nuisance_alarms"] == 0
    without = run(documented_example(), with_camera_pack=False)["scenarios"][0]["incidents"]
    assert not without[0]["detected"] and without[1]["detected"]


def test_without_the_plan_the_alarm_sounds_as_it_always_did():
    text = documented_example().split("[escalation.alarm]")[0]
    knock = run(text, with_camera_pack=True)["scenarios"][0]["incidents"][0]
    assert knock["detected"] and knock["outputs_s"] == {}


@pytest.mark.parametrize("change, problem", [
    (('camera = "gate"', 'camera = "shed"'), "cabinet cab-01 has no camera 'shed'"),
    (('event = "person"', 'event = "dog"'), "event 'dog': want one of person"),
    (('kind = "gnss"', 'kind = "rain"'), r"carried-away.toml:\d+: \[\[action\]\] carry: cabinet cab-01 has no GNSS receiver"),
    (('after_s = 120 }', 'after_s = 7200 }'), "after_s must be whole seconds from 0 to 3600"),
    (('{ do = "camera" }', '{ do = "horn" }'), "step \\['horn', 0\\]"),
])
def test_what_a_sense_action_or_plan_lacks_is_refused_with_its_line(change, problem):
    text = documented_example().replace(*change)
    with pytest.raises(ScenarioError, match=problem):
        loads(text, "carried-away.toml")


def test_a_camera_offline_reports_nothing_so_its_events_leave_the_zone():
    """docs/signals.md: zone.<event> is 1 while any camera *online* reports it."""
    from simulator.world import CabinetWorld
    text = """
[scenario]
name = "blind"
start = 2026-04-07T22:00:00+02:00
duration = "1h"
[[cabinet]]
id = "c"
[[process]]
kind = "cameras"
names = ["gate", "yard"]
[[action]]
kind = "camera_offline"
at = "+10m"
camera = "gate"
duration = "5m"
[[action]]
kind = "camera_event"
at = "+12m"
camera = "gate"
duration = "10m"
[[action]]
kind = "camera_event"
at = "+30m"
camera = "yard"
duration = "1m"
[[action]]
kind = "camera_event"
at = "+30m30s"
camera = "gate"
duration = "1m"
"""
    scn = loads(text, "blind.toml")
    world = CabinetWorld(scn, scn.cabinets[0])
    names = ("zone.person", "cam.gate.person", "cam.gate.online")
    idx = {world.catalog.index[n]: n for n in names}
    seen = {n: [] for n in names}
    for t, changes, _c in world.stream():
        for i, v in changes:
            if i in idx:
                seen[idx[i]].append((t // 1000, v))
    assert seen["cam.gate.online"] == [(0, 1), (600, 0), (900, 1)]
    assert seen["cam.gate.person"] == [(600, 0), (900, 1), (1320, 0), (1830, 1), (1890, 0)]
    assert seen["zone.person"] == [(900, 1), (1320, 0), (1800, 1), (1890, 0)]     # not while gate was offline
