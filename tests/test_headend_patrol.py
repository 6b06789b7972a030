"""`cabguard headend patrol` (controller/headend/patrol.py): open incidents first, then the
shift's (cabinet, hour) pairs by alarms and near misses, recent and in quiet hours weighing more."""

import json
from zoneinfo import ZoneInfo

import pytest

from controller.cli.main import main as cli
from controller.devtools import fleethistory
from controller.devtools.sealed import SealedChain
from controller.headend.collect import Collector
from controller.headend.patrol import PatrolError, rank, shift_hours
from controller.headend.store import open_store
from controller.journal import records as R

END_MS = 1_796_158_800_000          # 2026-12-01 21:00 UTC
DAY_MS, HOUR_MS = 86_400_000, 3_600_000
UTC = ZoneInfo("UTC")


def test_a_simulated_month_ranks_the_open_incident_then_the_quiet_hours_near_misses(db, capsys):
    fleethistory.fill(db, END_MS)
    hints = rank(open_store(db), END_MS, 28, shift_hours("22-06"), UTC)
    assert hints[0]["gateway"] == "gw-porta-019" and hints[0]["hour"] is None and "open (alarm)" in hints[0]["why"]
    assert [(h["gateway"], h["hour"], h["score"]) for h in hints[1:]] == [
        ("gw-porta-018", 2, 28.0),      # 5 warnings, 2 of them this week: (3 x 2 + 2 x 4) x 2 (quiet)
        ("gw-porta-017", 23, 20.0),     # the alarm three nights ago: 5 x 2 x 2
        ("gw-porta-019", 3, 16.0),      # two failed logins this week
        ("gw-porta-017", 1, 4.0)]       # the warning three weeks ago
    assert hints[1]["why"] == "5 near misses in 28 days, 2 in the last 7; a quiet hour (visits on 0 of 28 days)"
    day = rank(open_store(db), END_MS, 28, shift_hours("06-14"), UTC)
    assert [h["hour"] for h in day] == [None]       # visits are habits, not risks
    assert cli(["headend", "patrol", "--db", db, "--at", "2026-12-01T21:00:00Z", "--shift", "22-06",
                "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["shift"][:3] == [22, 23, 0] and doc["hints"][1]["gateway"] == "gw-porta-018"


def test_a_near_miss_in_a_routine_visit_hour_weighs_half_of_one_in_a_quiet_hour(tmp_path):
    db = str(tmp_path / "h.db")
    chain = SealedChain("gw-1")
    collector = Collector(db, [chain.key])
    start = END_MS - END_MS % DAY_MS - 28 * DAY_MS
    events = [(start + d * DAY_MS + 6 * HOUR_MS, R.ev.EV_MODE, R.ev.INFO,
               {R.EVENT_A: R.modes.ARMED, R.EVENT_B: R.modes.MAINTENANCE, R.EVENT_C: R.modes.MAINT_START})
              for d in range(28)]
    for hour in (2, 6):       # a warning rule rising, two weeks ago
        events.append((start + 14 * DAY_MS + hour * HOUR_MS + 1800_000, R.ev.EV_RULE, R.ev.WARNING,
                       {R.EVENT_A: 3, R.EVENT_B: R.ev.WARNING, R.EVENT_C: 1}))
    for wall, rtype, severity, data in sorted(events, key=lambda e: e[0]):
        assert collector.record(chain.append(rtype, severity, wall, data))
    hints = rank(open_store(db), END_MS, 28, shift_hours("00-12"), UTC)
    assert [(h["hour"], h["score"]) for h in hints] == [(2, 4.0), (6, 2.0)]
    assert hints[1]["why"].endswith("visits on 27 of 28 days")      # the first one is before the window


@pytest.mark.parametrize("spec, problem", [("22", "want START-END"), ("25-02", "hours 0..24"), ("06-06", "not the same")])
def test_a_bad_shift_is_refused_saying_what_is_wanted(spec, problem):
    with pytest.raises(PatrolError, match=problem):
        shift_hours(spec)
