"""Named weekly schedules (night, shifts, maintenance) → the ``sched.*`` signals.

A window is a set of days and a time range in the site's timezone.  A range
that ends before it starts (``20:00``–``06:00``) crosses midnight and belongs
to the day it starts on, so Tuesday 03:00 is inside Monday's night.  A range
whose ends are equal covers the whole day.

When the wall clock is not trusted (docs/config.md, drivers/clock.py) a
schedule takes its ``when_clock_untrusted`` value instead: the safe
assumption is chosen per schedule by whoever writes the config, because only
they know whether "active" widens protection (night) or narrows it
(maintenance).  Records written meanwhile carry the untrusted-time flag.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(spec: str) -> frozenset[int]:
    """'mon-fri,sun' → {0, 1, 2, 3, 4, 6}; ranges may wrap ('fri-mon')."""
    days: set[int] = set()
    for part in spec.split(","):
        ends = [DAYS.index(e.strip()) for e in part.split("-")]
        first, last = ends[0], ends[-1]
        d = first
        while True:
            days.add(d)
            if d == last:
                break
            d = (d + 1) % 7
    return frozenset(days)


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Window:
    def __init__(self, days: str, start: str, end: str):
        self.days = parse_days(days)
        self.start = _minutes(start)
        self.end = _minutes(end)

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start == self.end:
            return weekday in self.days
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or \
               ((weekday - 1) % 7 in self.days and minute < self.end)


class Schedules:
    """All of a site's schedules; ``values()`` gives ``{signal name: 0/1}``."""

    def __init__(self, doc: dict[str, Any], timezone: str):
        self.tz = ZoneInfo(timezone)
        self.windows = {
            name: [Window(w["days"], w["from"], w["to"]) for w in spec["windows"]]
            for name, spec in doc.items()
        }
        self.untrusted = {name: 1 if spec["when_clock_untrusted"] == "active" else 0
                          for name, spec in doc.items()}

    def names(self) -> list[str]:
        return sorted(self.windows)

    def week_hour(self, wall_s: float, trusted: bool) -> int:
        """``sys.week_hour``: the hour of the week in the site's timezone (0 =
        Monday 00:00), or -1 while the clock is untrusted (the anomaly model
        then scores against its all-week envelope, docs/anomaly.md)."""
        if not trusted:
            return -1
        local = datetime.fromtimestamp(wall_s, self.tz)
        return local.weekday() * 24 + local.hour

    def values(self, wall_s: float, trusted: bool) -> dict[str, int]:
        if not trusted:
            return {"sched." + n: v for n, v in self.untrusted.items()}
        local = datetime.fromtimestamp(wall_s, self.tz)
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        return {"sched." + n: int(any(w.contains(weekday, minute) for w in ws))
                for n, ws in self.windows.items()}
