import re
from pathlib import Path

import pytest

from simulator.errors import ScenarioError
from simulator.scenario import parse_duration
from simulator.scenariofile import load, loads

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


# Each documented error message (docs/scenarios.md "Errors") is what the
# loader says for the documented example with this one change.
DOC_ERRORS = [
    ('kind = "theft_slow"', 'kind = "door_smash"'),
    ("at = 2026-03-15T02:10:00+01:00    # absolute", "at = 2026-03-15T02:10:00          # absolute"),
    ('duration = "20m"\nmodules = 2', 'duration = "20m"\nbattery = "bms3"'),
    ('signal = "io.vib_rms_mg"', 'signal = "io.vib_rms"'),
    ("modules = 8\n", 'battery = "bms1"\n'),
    ('cabinet = "cab-01"\nstart = "+6h"  ', 'cabinet = "cab-02"\nstart = "+4h20m"'),
    ('cabinet = "cab-02"                # required when there is more than one cabinet\n', ''),
]


def test_the_documented_errors_are_the_real_messages():
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    for old, new in DOC_ERRORS:
        assert example.count(old) == 1
        with pytest.raises(ScenarioError) as e:
            loads(example.replace(old, new), "night.toml")
        assert str(e.value) in doc


def test_a_misspelt_fault_signal_is_refused_with_the_valid_names():
    text = BASE + '\n[[action]]\nkind = "sensor_fault"\nat = "+1m"\nsignal = "io.door_opn"\nfault = "zero"\n'
    msg = error(text)
    assert msg.startswith("s.toml:{}: [[action]] #1 (sensor_fault) signal: unknown signal 'io.door_opn'".format(
        line_of(text, "signal =")))
    assert "did you mean io.door_open?" in msg and "vib_rms_mg" in msg and "for N from 1 to 2" in msg
    three = BASE.replace('id = "c1"', 'id = "c1"\nbatteries = 1')
    assert "unknown signal 'bms2.modules'" in error(
        three + '\n[[action]]\nkind = "sensor_fault"\nat = "+1m"\nsignal = "bms2.modules"\n')
    ok = loads(BASE + '\n[[action]]\nkind = "sensor_fault"\nat = "+1m"\nsignal = "bms2.temp_max_dc"\n')
    assert ok.actions[0].params["signal"] == "bms2.temp_max_dc"


def test_error_labels_read_well():
    text = BASE + '\n[[action]]\nkind = "door_open"\nat = "+1m"\nspeed = 3\n'
    assert error(text) == "s.toml:{}: [[action]] #1: unknown key 'speed' (known: at, cabinet, cabinets, kind, unbolt)" \
        .format(line_of(text, "speed"))
    assert "s.toml:10: [response]: unknown key 'x'" in error(BASE + "\n[response]\nx = 1\n")
    assert error(BASE + "\n[response]\nrearm = 1\n").endswith("[response] rearm: must be true or false, got 1")
    msg = error(BASE.replace('duration = "2h"', 'duration = "2h"\nscan_ms = 5'))
    assert msg == "s.toml:5: [scenario] scan_ms: must be a whole number from 10 to 1000, got 5"
    naive = BASE + '\n[[action]]\nkind = "door_open"\nat = 2026-03-14T23:00:00\n'
    assert "bad time 2026-03-14T23:00:00:" in error(naive)


def test_values_the_world_cannot_run_are_refused():
    """Each of these used to crash the world (division by zero, a missing
    battery) or silently mean nothing."""
    cases = {
        '\n[[process]]\nkind = "crane"\ngap = "0s"\n': "[[process]] #1 gap: must be longer than 0",
        '\n[[process]]\nkind = "wind"\ngust_every = "0s"\n': "gust_every: must be longer than 0",
        '\n[[process]]\nkind = "storm"\nperiod = "0s"\n': "period: must be longer than 0",
        '\n[[process]]\nkind = "maintenance"\nlength = "4m"\n': "length: must be more than 5 minutes",
        '\n[[process]]\nkind = "truck"\nper_hour = -1.0\n': "per_hour: must not be negative",
        '\n[[process]]\nkind = "shift"\nvisit_prob = 2.0\n': "visit_prob: must be from 0.0 to 1.0",
        '\n[[process]]\nkind = "shift"\nschedule = "Shift Change"\n': "schedule: want a name of lower-case",
        '\n[[process]]\nkind = "wind"\ncabinets = "c1"\n': "'cabinets' must be a non-empty list",
        '\n[[action]]\nkind = "module_remove"\nat = "+1m"\nbattery = "bms3"\n':
            "battery: cabinet c1 has only bms1 … bms2 (its 'batteries' is 2), got 'bms3'",
        '\n[[action]]\nkind = "cable_cut"\nat = "+1m"\ndevice = "bms4"\n': "device: cabinet c1 has only",
        '\n[[action]]\nkind = "module_remove"\nat = "+1m"\ncount = 0\n': "count: must be a whole number from 1 to 32",
        '\n[[action]]\nkind = "door_open"\nat = "+1m"\ncabinet = "c1"\ncabinets = ["c1"]\n': "not both",
    }
    for body, message in cases.items():
        assert message in error(BASE + body), body
    # The I/O module's whole seconds must fall on scans, or its values never reach the image.
    assert "scan_ms: must divide 1000" in error(BASE.replace('duration = "2h"', 'duration = "2h"\nscan_ms = 300'))
    cabinet = {"capacity_ah = 0.0": "capacity_ah: must be from 0.1", "soc_pct = 150": "soc_pct: must be a whole number",
               "serial = 2147483647": "serial: must be a whole number from 0 to 2147483646"}
    for line, message in cabinet.items():
        assert message in error(BASE + line + "\n"), line


def test_the_shift_window_is_the_one_the_default_packs_read():
    from simulator.scenario import PROCESS_PARAMS
    packs = " ".join(p.read_text() for p in (ROOT / "rules" / "packs").glob("*.toml"))
    named = set(re.findall(r"schedule\(\s*[\"'](\w+)[\"']", packs))
    assert PROCESS_PARAMS["shift"]["schedule"] in named
    assert PROCESS_PARAMS["maintenance"]["schedule"] in named


def test_new_world_actions_are_checked_with_their_line():
    cases = {
        'kind = "sensor_failure"\nat = "+1m"\nfault = "spike"\n':
            ('fault = "spike"', "[[action]] #1 (sensor_failure) fault: want one of stuck, zero, offline"),
        'kind = "booked_window"\nat = "+1m"\nlength = "0s"\n':
            ('length = "0s"', "[[action]] #1 (booked_window) length: must be longer than 0"),
        'kind = "booked_window"\nat = "+1m"\nschedule = "Night Shift"\n':
            ('schedule =', "(booked_window) schedule: want a name of lower-case"),
        'kind = "weather_front"\nat = "+1m"\nback = "0s"\n': ('back =', "[[action]] #1 back: must be longer than 0"),
        'kind = "weather_front"\nat = "+1m"\nramp = "soon"\n': ('ramp =', "[[action]] #1 ramp: bad duration 'soon'"),
        'kind = "grid_outage"\nat = "+1m"\nduration = "0s"\n':
            ('duration = "0s"', '(grid_outage) duration: must be longer than 0 ("": the power never comes back)'),
        'kind = "panel_open"\nat = "+1m"\nduration = "forever"\n': ('"forever"', "duration: bad duration 'forever'"),
    }
    for body, (needle, message) in cases.items():
        text = BASE + "\n[[action]]\n" + body
        msg = error(text)
        assert msg.startswith("s.toml:{}:".format(line_of(text, needle))) and message in msg, msg
    ok = loads(BASE + '\n[[action]]\nkind = "weather_front"\nat = "+1m"\ndelta_c = 8\nhold = ""\n')
    assert ok.actions[0].params["delta_c"] == 8 and ok.actions[0].params["hold"] < 0
