"""The gateway's health records: what goes wrong beside the core (a bus, the
uplink, late scans, a rule table) as journal records.

An alarm-or-worse record is announced to the uplink at once (``urgent``);
news that can repeat every poll (a device answering with exceptions, the
uplink's troubles) is journaled at most once a minute per source and kind.
"""

from __future__ import annotations

import time
from typing import Callable

from controller.core.events import ALARM, SEVERITY_NAMES, WARNING
from controller.journal import records as R

NEWS_INTERVAL_S = 60.0


class HealthReporter:
    """Health records into ``journal``; ``context`` gives a record's time and
    clock quality, ``note`` shows a line on the console's event list."""

    def __init__(self, journal, context: Callable[[], R.Context], note: Callable[[str], None],
                 log: Callable[[str], None] = lambda line: None):
        self.journal = journal
        self.context = context
        self.note = note
        self.log = log          # one line per health record, for the system journal (stderr under systemd)
        self.urgent_listeners: list[Callable[[int], None]] = []
        self._reported: dict[tuple[str, str], float] = {}

    def record(self, code: int, detail: str, severity: int = WARNING) -> int:
        """Journal a health record (R.HEALTH_*); returns its sequence number."""
        seq = self.journal.append(R.health(self.context(), code, detail, severity))
        self.log("{} health: {} (seq {})".format(SEVERITY_NAMES[severity], detail, seq))
        if severity >= ALARM:
            self.urgent(seq)
        self.note("health: " + detail)
        return seq

    def urgent(self, seq: int) -> None:
        """An alarm or critical record: the uplink sends it at once, not with the next batch."""
        for listener in self.urgent_listeners:
            listener(seq)

    def news(self, source: str, kind: str) -> bool:
        """At most once a minute per source and kind: a device answering every
        poll with an exception must not flood the journal."""
        now = time.monotonic()
        key = (source, kind)
        if now - self._reported.get(key, -NEWS_INTERVAL_S) < NEWS_INTERVAL_S:
            return False
        self._reported[key] = now
        return True

    def uplink(self, text: str) -> None:
        """The uplink's troubles: noted at once, journaled at most once a minute."""
        self.note(text)
        if self.news("uplink", "health"):
            seq = self.journal.append(R.health(self.context(), R.HEALTH_UPLINK, text, WARNING))
            self.log("warning health: {} (seq {})".format(text, seq))
