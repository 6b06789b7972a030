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
from tests.scen_helpers import scenario_head

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


def documented_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    return re.search(r"```toml\n(# carried-away\.toml\n.*?)```", text, re.S).group(1)


def run(text: str) -> dict:
    return evaluate([loads(text, "carried-away.toml")], RuleSource(default_sources([])), decode_factory=profile_decode())


def run_packs(text: str, packs: list[str]) -> dict:
    return evaluate([loads(text, "carried-away.toml")], RuleSource(packs), decode_factory=profile_decode())


def test_the_documented_scenario_detects_with_cameras_and_gnss_and_reports_the_outputs():
    doc = run(documented_example())
    knock, carry = doc["scenarios"][0]["incidents"]
    # The window starts at the knock (the first contact), not at the camera's sighting a minute before.
    assert knock["kind"] == "tamper" and knock["start_s"] == 21 * 60
    assert knock["detected"] and knock["by"] == "rule person_with_vibration.cam.gate" and knock["ttd_s"] == 0.0
    assert knock["outputs_s"] == {"lights": 0.0, "camera": 0.0, "lock": 120.0}
    assert carry["kind"] == "theft" and carry["detected"] and carry["ttd_s"] <= 10      # the lift is felt
    assert doc["nuisance_alarms"] == 0
    # A site whose calendar has no night: the night camera rules are not compiled, and the knock
    # (one peak, inside port life) is missed.
    no_night = documented_example().replace('[[schedule]]\nname = "night"\nfrom = "20:00"\nto = "06:00"\n', "")
    assert 'name = "night"' not in no_night
    without = run(no_night)["scenarios"][0]["incidents"]
    assert not without[0]["detected"] and without[1]["detected"]


def test_the_receiver_rides_with_the_gateway_through_the_cuts():
    """docs/scenarios.md: a power_cut and a cable_cut of the bus leave the
    GNSS receiver reporting, so the position pack alone finds the drive."""
    carry = run_packs(documented_example(), [str(PACKS / "position.toml")])["scenarios"][0]["incidents"][1]
    assert carry["detected"] and carry["by"] == "rule moved_from_place.pos"
    assert 60 < carry["ttd_s"] <= 75                  # the cuts and the drive start 60 s after the lift


def test_a_bad_plan_is_refused_with_the_line_of_its_table():
    text = documented_example().replace('{ do = "uplink" }', '{ do = "siren" }')
    line = text.splitlines().index("[escalation.alarm]         # the port's plan: lights and the camera at once, "
                                   "the lock after 2 min") + 1
    with pytest.raises(ScenarioError, match="carried-away.toml:{}: escalation plan alarm.armed: step 'siren' is "
                                            "listed twice".format(line)):
        loads(text, "carried-away.toml")


def test_without_the_plan_the_alarm_sounds_as_it_always_did():
    text = documented_example().split("[escalation.alarm]")[0]
    knock = run(text)["scenarios"][0]["incidents"][0]
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
    text = scenario_head("blind", "2026-04-07T22:00:00+02:00", "1h") + """[[cabinet]]
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
