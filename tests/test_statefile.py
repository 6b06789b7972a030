"""The persisted core state (controller/gateway/statefile.py): where "now" lies on the saved run's clock."""

import json

import pytest

from controller.core import ticks
from controller.core.step import UNKNOWN
from controller.gateway.statefile import MAX_DOWN_MS, StateFile
from controller.journal.records import Context

PERSISTED = (5, 0, 0, (0, 1, 123456, 0b100, 3), (1, 123456, 0), ((40, 8, 550200), (52, -1, -1)))
SAVED_AT = Context(1_800_000_000_000, True, 10_000_000)


@pytest.mark.parametrize("boot, now, then", [
    ("boot-a", Context(1_800_000_009_000, False, 10_009_000), ticks.wrap(10_009_000)),   # the clock ran on
    ("boot-b", Context(1_800_000_009_000, True, 5_000), ticks.wrap(10_009_000)),          # a reboot: wall time
    ("boot-b", Context(1_800_000_009_000, False, 5_000), UNKNOWN),                         # not trusted now
    ("boot-b", Context(1_799_999_999_000, True, 5_000), UNKNOWN),                          # wall clock went back
    ("boot-b", Context(1_800_000_000_001 + MAX_DOWN_MS, True, 5_000), UNKNOWN),            # down over a day
])
def test_load_maps_now_onto_the_saved_clock(tmp_path, boot, now, then):
    StateFile(tmp_path / "s.json", "boot-a").save(PERSISTED, SAVED_AT)
    assert StateFile(tmp_path / "s.json", boot).load(now) == (PERSISTED, then)


def test_an_older_file_gives_mode_resume_lock_and_a_bad_one_nothing(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"mode": 5, "resume": 0, "lock": 1}))
    assert StateFile(path, "b").load(SAVED_AT) == ((5, 0, 1), UNKNOWN)
    path.write_text(json.dumps({"mode": 5, "resume": 0, "lock": 1, "escalation": [1, 2], "siren": [0, 0, 0]}))
    assert StateFile(path, "b").load(SAVED_AT) is None


def test_a_file_from_before_the_inventory_gives_none_and_a_bad_inventory_nothing(tmp_path):
    path = tmp_path / "s.json"
    doc = {"mode": 2, "resume": 0, "lock": 0, "escalation": [-1, 0, 0, 0, 0], "siren": [0, 0, 0],
           "tick": 0, "wall_ms": 0, "trusted": False, "boot": "a"}
    path.write_text(json.dumps(doc))
    assert StateFile(path, "b").load(SAVED_AT) == ((2, 0, 0, (-1, 0, 0, 0, 0), (0, 0, 0)), UNKNOWN)
    path.write_text(json.dumps(dict(doc, inventory=[[40, 8]])))
    assert StateFile(path, "b").load(SAVED_AT) is None
