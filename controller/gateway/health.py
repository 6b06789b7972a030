"""The gateway's health records: what goes wrong beside the core (a bus, the
uplink, late scans, a rule table) as journal records.

An alarm-or-worse record is announced to the uplink at once (``urgent``).
Records from a source anyone outside can drive (the console, the downlink,
a device's bus news, the uplink) pass the flood control first
(controller/gateway/floodgate.py, docs/journal.md "Flood control").
"""

from __future__ import annotations

from typing import Callable

from controller.core.events import ALARM, SEVERITY_NAMES, WARNING
from controller.gateway.floodgate import Floodgate
from controller.journal import records as R
from drivers import cose


class HealthReporter:
    """Health records into ``journal``; ``context`` gives a record's time and
    clock quality, ``note`` shows a line on the console's event list."""

    def __init__(self, journal, context: Callable[[], R.Context], note: Callable[[str], None],
                 log: Callable[[str], None] = lambda line: None):
        self.journal = journal
        self.context = context
        self.note = note
        self.log = log          # one line per journaled health record, for the system journal (stderr)
        self.floodgate = Floodgate()
        self.urgent_listeners: list[Callable[[int], None]] = []

    def record(self, code: int, detail: str, severity: int = WARNING, source: str = "") -> int:
        """A health record (R.HEALTH_*); with a ``source`` (e.g. "bus:pump1:timeout")
        it goes through that source's flood control.  Returns its seq, or -1."""
        record = R.health(self.context(), code, detail, severity)
        seq = self.journal_from(source, record) if source else self.journal.append(record)
        if seq >= 0:        # what flood control holds back is counted in its flood record, not logged
            self.log("{} health: {} (seq {})".format(SEVERITY_NAMES[severity], detail, seq))
        if severity >= ALARM and seq >= 0:
            self.urgent(seq)
        self.note("health: " + detail)
        return seq

    def journal_from(self, source: str, record: dict[int, object], protected: bool = False) -> int:
        """A record from a source anyone outside can drive (the console, the
        downlink, a device, the uplink): journaled if the source is within its
        limit or the record is ``protected`` (a real event: an accepted command,
        a login), else counted into the source's next flood record; returns its
        seq, or -1 (docs/journal.md, "Flood control")."""
        content = cose.encode(record.get(R.DATA, {}))
        if not self.floodgate.admit(source, content, record[R.MONO_MS], record[R.WALL_MS],  # type: ignore[arg-type]
                                    protected):
            return -1
        return self.journal.append(record)

    def floods(self, final: bool = False) -> None:
        """One flood record per source whose summary interval is over (all at a stop)."""
        ctx = self.context()
        for summary in self.floodgate.summaries(ctx.mono_ms, final):
            self.journal.append(R.flood(ctx, *summary))

    def urgent(self, seq: int) -> None:
        """An alarm or critical record: the uplink sends it at once, not with the next batch."""
        for listener in self.urgent_listeners:
            listener(seq)

    def uplink(self, text: str) -> None:
        """The uplink's troubles, through the uplink's flood control."""
        self.record(R.HEALTH_UPLINK, text, source="uplink")
