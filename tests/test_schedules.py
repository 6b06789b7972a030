from datetime import datetime
from zoneinfo import ZoneInfo

from controller.gateway.schedules import Schedules, parse_days

TZ = "Europe/Amsterdam"
DOC = {
    "night": {"windows": [{"days": "mon-fri", "from": "20:00", "to": "06:00"}],
              "when_clock_untrusted": "active"},
    "maintenance": {"windows": [{"days": "sat", "from": "09:00", "to": "12:00"}],
                    "when_clock_untrusted": "inactive"},
}


def at(*args):
    return datetime(*args, tzinfo=ZoneInfo(TZ)).timestamp()


def test_days_and_wrapping_ranges():
    assert parse_days("mon-fri") == {0, 1, 2, 3, 4}
    assert parse_days("fri-mon,wed") == {4, 5, 6, 0, 2}


def test_night_crosses_midnight_and_belongs_to_its_start_day():
    s = Schedules(DOC, TZ)
    assert s.values(at(2026, 11, 24, 3, 0), True)["sched.night"] == 1   # Tue 03:00, Monday's night
    assert s.values(at(2026, 11, 24, 12, 0), True)["sched.night"] == 0
    assert s.values(at(2026, 11, 28, 3, 0), True)["sched.night"] == 1   # Sat 03:00, Friday's night
    assert s.values(at(2026, 11, 29, 3, 0), True)["sched.night"] == 0   # Sun 03:00: none on Sat
    assert s.values(at(2026, 11, 28, 10, 0), True)["sched.maintenance"] == 1


def test_untrusted_clock_takes_the_safe_assumption():
    s = Schedules(DOC, TZ)
    assert s.values(at(2026, 11, 24, 12, 0), False) == {"sched.night": 1, "sched.maintenance": 0}


def test_timezone_not_utc():
    s = Schedules(DOC, TZ)
    # 19:30 UTC on a Monday in winter is 20:30 in Amsterdam: night has begun.
    utc = datetime(2026, 11, 23, 19, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert s.values(utc, True)["sched.night"] == 1
