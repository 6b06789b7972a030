"""The one path every command takes, from the console or the downlink.

Commands that change what the cabinet does become core commands and go
into the next scan (``GatewayPort.submit``); the answer is what the core made
of them (accepted, or refused in this mode).  The rest are host actions
(load a rule table, rotate the record key, enrol a person, grant installer
access, check the config).  Every command and its outcome is journaled,
whichever way it came.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Iterator

from controller.console import commands as cm
from controller.console.auth import PeopleStore, otpauth_uri
from controller.console.gatewayport import GatewayPort
from controller.errors import CabguardError
from controller.journal import records as R
from controller.journal.browse import Entry, Filter, Names, described, incidents, word_filter
from controller.link.downlink import Refused
from drivers.errors import DriverError
from drivers.modbus.poller import open_master
from drivers.modbus.scan import probes, report, scan_job, scan_timeout

OUTCOME_TIMEOUT_S = 2.0
JOURNAL_LINES, JOURNAL_MOST = 20, 500
JOURNAL_BACK = 10_000       # records the console's journal view reads back at most (the rest: `cabguard journal`)
SCAN_STEP_BUDGET_S = 0.25  # per address, waiting for the bus thread (polls come first)


class CommandPath:
    def __init__(self, gateway: GatewayPort, people: PeopleStore | None = None):
        self.gateway = gateway
        self.people = people
        self.grant_until = 0.0
        self.actions: dict[str, Callable[[cm.Request, float], str]] = {
            "grant": self._grant,
            "keys rotate": self._rotate,
            "rules load": self._rules_load,
            "rules info": lambda req, now: self.gateway.rules_info(),
            "tech enrol": self._enrol,
            "config check": lambda req, now: self.gateway.config_check(),
            "config show": lambda req, now: self.gateway.config_text(),
            "bus scan": self._bus_scan,
            "journal list": self._journal_list,
            "journal show": self._journal_show,
            "journal incidents": self._journal_incidents,
            "pos survey": lambda req, now: self.gateway.survey_position(),
        }

    def grant_active(self, wall_s: float) -> bool:
        return wall_s < self.grant_until

    def execute(self, request: cm.Request, wall_s: float | None = None) -> str:
        wall_s = time.time() if wall_s is None else wall_s
        core = request.core_command()
        if core is not None:
            outcome = self.gateway.submit(core[0], core[1], request.source, request.actor)
            try:
                return outcome.result(OUTCOME_TIMEOUT_S)
            except FutureTimeout:
                return "queued (the scan loop has not answered yet)"
        action = self.actions.get(request.spec.name)
        if action is None:
            raise CabguardError("'{}' is not available here".format(request.spec.name))
        try:
            answer = action(request, wall_s)
            ok = True
        except CabguardError as e:
            answer, ok = "failed: {}".format(e), False
        self.journal(request.source, request.spec.name, request.actor, ok, answer.splitlines()[0] if answer else "")
        return answer

    def journal(self, source: str, name: str, actor: str, ok: bool, detail: str) -> None:
        ctx = self.gateway.health.context()
        # A command carried out is a real event; refusals go through the source's flood control.
        self.gateway.health.journal_from(source, R.command(ctx, source, "{} by {}".format(name, actor or "-"), 0, ok,
                                                    "" if ok else detail), protected=ok)

    def refused(self, refused: Refused) -> None:
        """A downlink command that failed its checks: journaled, nothing else happens."""
        self.journal("downlink", refused.name or "?", "headend", False, str(refused))
        self.gateway.note(str(refused))

    # ---- host actions ------------------------------------------------------

    def _grant(self, req: cm.Request, now: float) -> str:
        self.grant_until = now + 60 * int(req.args["minutes"])
        return "installer access granted for {} min".format(req.args["minutes"])

    def _rotate(self, req: cm.Request, now: float) -> str:
        seq = self.gateway.journal.rotate_key()
        return "record key rotated (key-rotation record {})".format(seq)

    def _rules_load(self, req: cm.Request, now: float) -> str:
        return self.gateway.load_rules(str(req.args["path"]))

    def _enrol(self, req: cm.Request, now: float) -> str:
        if self.people is None:
            raise CabguardError("no [console] people file is configured")
        person = self.people.enrol(str(req.args["id"]), str(req.args.get("role", "technician")))
        return "enrolled {} as {}; add this to their authenticator app (shown once):\n{}".format(
            person.ident, person.role, otpauth_uri(person, self.gateway.gateway_id))

    def _journal_entries(self, first_seq: int) -> Iterator[Entry]:
        """Records from ``first_seq`` (of the last JOURNAL_BACK), the newest made durable first."""
        g = self.gateway
        g.journal.flush(OUTCOME_TIMEOUT_S)
        return described(g.journal.opened_from(max(first_seq, g.journal.next_seq - JOURNAL_BACK, 0)),
                         Names(g.catalog, g.rule_names()))

    def _journal_list(self, req: cm.Request, now: float) -> str:
        """The last records (of the last JOURNAL_BACK), filtered by one word."""
        count, words = JOURNAL_LINES, str(req.args.get("what", "")).split()
        if words and words[0].isdigit():
            count = min(int(words.pop(0)[:4]), JOURNAL_MOST)
        if len(words) > 1:
            raise CabguardError("one filter at a time: a severity, a record type, a device or a rule id "
                                "(`cabguard journal list` combines them)")
        keep = word_filter(words[0], self.gateway.catalog.devices) if words else Filter()
        found = collections.deque((e for e in self._journal_entries(0) if keep.keeps(e)), maxlen=count)
        if not found:
            return "no such records among the last {}".format(JOURNAL_BACK)
        return "\n".join(e.line() for e in found)

    def _journal_show(self, req: cm.Request, now: float) -> str:
        seq = int(req.args["seq"])
        for e in self._journal_entries(seq):
            if e.seq == seq:
                return e.full()
        raise CabguardError("no record {} among the last {} on this gateway (next seq {}; older ones: "
                            "`cabguard journal show` on a copy)".format(seq, JOURNAL_BACK, self.gateway.journal.next_seq))

    def _journal_incidents(self, req: cm.Request, now: float) -> str:
        found = incidents(self._journal_entries(0))
        if not found:
            return "no incidents among the last {} records".format(JOURNAL_BACK)
        return "\n".join(i.text() for i in found)

    def _bus_scan(self, req: cm.Request, now: float) -> str:
        """Through the bus's own poller thread when the gateway polls it, else on the open port."""
        name = str(req.args["bus"])
        buses = self.gateway.buses
        if name not in buses:
            raise CabguardError("no bus {!r} in the site config (buses: {})".format(name, ", ".join(sorted(buses))))
        bus, poller = buses[name].settings, buses[name].poller
        first, last = address_range(str(req.args.get("addresses", "1-247")))
        addresses = range(first, last + 1)
        try:
            if poller is not None:
                future = poller.run_job(scan_job(addresses, scan_timeout(bus.baud)))
                found = future.result(2.0 + SCAN_STEP_BUDGET_S * len(addresses))
            else:
                master = open_master(bus.port, bus.options)
                try:
                    found = [f for f in probes(master, addresses, scan_timeout(bus.baud)) if f is not None]
                finally:
                    master.close()
        except FutureTimeout:
            raise CabguardError("bus {}: the scan did not finish in time (is the bus overloaded?)".format(name))
        except DriverError as e:
            raise CabguardError("bus {}: {}".format(name, e)) from None
        return "\n".join(report("{} ({})".format(name, bus.port), bus.baud, first, last, found))


def address_range(text: str) -> tuple[int, int]:
    """'1-16' or '5' → (first, last), within Modbus's 1..247."""
    first, _, last = text.partition("-")
    if not (first.isdigit() and (last.isdigit() or not last)):
        raise CabguardError("ADDRESSES is A-B or A, e.g. 1-16, not {!r}".format(text))
    lo, hi = int(first), int(last or first)
    if not 1 <= lo <= hi <= 247:
        raise CabguardError("addresses go from 1 to 247, first <= last; got {!r}".format(text))
    return lo, hi
