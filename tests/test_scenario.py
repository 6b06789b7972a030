import re
from pathlib import Path

import pytest

from simulator.errors import ScenarioError
from simulator.scenario import load, loads, parse_duration

ROOT = Path(__file__).resolve().parent.parent
BASE = """[scenario]
name = "x"
start = 2026-03-14T22:00:00+01:00
duration = "2h"

[[cabinet]]
id = "c1"
"""


def error(text):
    with pytest.raises(ScenarioError) as e:
        loads(text, "s.toml")
    return str(e.value)


def line_of(text, needle, nth=1):
    hits = [n + 1 for n, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth - 1]


def test_unknown_action_names_file_and_line():
    text = BASE + '\n[[action]]\nkind = "door_open"\nat = "+1m"\n\n[[action]]\nat = "+2m"\nkind = "door_smash"\n'
    msg = error(text)
    assert msg.startswith("s.toml:{}:".format(line_of(text, 'kind = "door_smash"')))
    assert "unknown action 'door_smash'" in msg and "door_forced" in msg


def test_bad_times_name_the_line():
    naive = BASE + '\n[[action]]\nkind = "door_open"\nat = 2026-03-14T23:00:00\n'
    assert error(naive).startswith("s.toml:{}: [[action]] #1 at: bad time".format(line_of(naive, "at =")))
    late = BASE + '\n[[action]]\nkind = "door_open"\nat = "+3h"\n'
    assert "outside the scenario" in error(late)
    junk = BASE + '\n[[action]]\nkind = "vibration"\nat = "+1m"\nduration = "5 seconds"\n'
    assert error(junk).startswith("s.toml:{}:".format(line_of(junk, "duration = \"5 seconds\"")))
    start = BASE.replace("2026-03-14T22:00:00+01:00", '"tomorrow"')
    assert error(start).startswith("s.toml:3: [scenario] start: bad time")


def test_overlapping_contradictory_labels_are_refused():
    text = BASE + """
[[incident]]
kind = "theft"
start = "+10m"
end = "+20m"

[[incident]]
kind = "safety"
start = "+15m"
end = "+30m"
"""
    msg = error(text)
    second = line_of(text, "[[incident]]", 2)
    assert msg.startswith("s.toml:{}:".format(second))
    assert "contradictory labels (theft vs safety)" in msg and "line {}".format(line_of(text, "[[incident]]")) in msg


def test_unknown_keys_cabinets_and_choices():
    assert "unknown key 'speed'" in error(BASE + '\n[[process]]\nkind = "crane"\nspeed = 3\n')
    assert "unknown cabinet 'c9'" in error(BASE + '\n[[action]]\nkind = "door_open"\nat = "+1m"\ncabinet = "c9"\n')
    assert "fault: want one of" in error(BASE + '\n[[action]]\nkind = "sensor_fault"\nat = "+1m"\nfault = "melted"\n')
    assert "unknown section [weather]" in error(BASE + "\n[weather]\nx = 1\n")
    assert "must be a whole number" in error(BASE + '\n[[process]]\nkind = "truck"\nrms_mg = "loud"\n')


def test_times_absolute_and_offsets_agree():
    text = BASE + '\n[[action]]\nkind = "door_open"\nat = 2026-03-14T23:30:00+01:00\n' \
                  '\n[[action]]\nkind = "door_open"\nat = "2026-03-14T21:30:00Z"\n' \
                  '\n[[action]]\nkind = "door_open"\nat = "+1h30m"\n'
    scn = loads(text)
    assert [a.at_ms for a in scn.actions] == [5400000, 1800000, 5400000]
    assert parse_duration("250ms") == 250 and parse_duration("1d2h3m4.5s") == 93784500
    assert parse_duration("5") is None and parse_duration("+") is None


def test_library_loads_and_covers_every_kind():
    files = sorted((ROOT / "simulator" / "scenarios").glob("*.toml"))
    scenarios = [load(p) for p in files]
    assert len([s for s in scenarios if s.incidents]) >= 30
    noise_days = sum(s.cabinet_days() for s in scenarios if not s.incidents)
    assert noise_days >= 30
    from simulator.scenario import ACTION_PARAMS, INCIDENT_KINDS, PROCESS_PARAMS
    actions = {a.kind for s in scenarios for a in s.actions}
    processes = {p.kind for s in scenarios for p in s.processes}
    assert actions == set(ACTION_PARAMS)
    assert processes == set(PROCESS_PARAMS)
    assert {i.kind for s in scenarios for i in s.incidents} == set(INCIDENT_KINDS)


def test_the_documented_example_loads():
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    scn = loads(example, "example.toml")
    assert [c.id for c in scn.cabinets] == ["cab-01", "cab-02"] and scn.incidents[0].kind == "theft"
