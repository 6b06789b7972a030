"""The console's window on the running gateway (the GatewayView of session.py)."""

from __future__ import annotations

from controller import __version__
from controller.console import commands as cm
from controller.console.auth import Person
from controller.console.commandpath import CommandPath
from controller.console.gatewayport import GatewayPort
from controller.core.events import ALARM, CMD_DURESS
from controller.journal import records as R

UNIT_TEXT = {("V", -3): "mV", ("A", -3): "mA", ("C", -1): "0.1 degC", ("g", -3): "mg",
             ("deg", -3): "mdeg", ("pct", 0): "%", ("bool", 0): "", ("count", 0): "", ("code", 0): ""}


def unit_text(unit: str, scale: int) -> str:
    """How the console shows a signal's unit: "mV", "bits" (not "bitse0"), "We2"."""
    return UNIT_TEXT.get((unit, scale), unit if scale == 0 else "{}e{}".format(unit, scale))


class ConsoleView:
    def __init__(self, gateway: GatewayPort, path: CommandPath):
        self.gateway = gateway
        self.path = path
        self.gateway_id = gateway.gateway_id

    def status_text(self) -> str:
        return self.gateway.status_text()

    def version_text(self) -> str:
        return "cabguard {}; rules: {}".format(__version__, self.gateway.rules_info().splitlines()[0])

    def signal_rows(self) -> list[tuple[str, int, str]]:
        g = self.gateway
        cat = g.catalog
        return [(cat.names[i], g.image[i], unit_text(cat.units[i], cat.scales[i])) for i in range(cat.size)]

    def events_tail(self, count: int) -> list[str]:
        return self.gateway.recent()[-count:]

    def devices_text(self) -> str:
        return self.gateway.devices_text()

    def submit(self, request: cm.Request) -> str:
        return self.path.execute(request)

    def host_action(self, request: cm.Request) -> str:
        return self.path.execute(request)

    def audit(self, actor: str, what: str, outcome: str) -> None:
        g = self.gateway
        ctx = g.health.context()
        # Everything typed goes through the console's flood control; a login and a
        # command a known person ran are real events and always pass.
        if what == "login":
            ok = outcome.startswith("ok")
            g.health.journal_from("console", R.login(ctx, actor, "console", ok), protected=ok)
        else:
            ok = not outcome.startswith(("refused", "error", "failed"))
            g.health.journal_from("console", R.command(ctx, "console", "{} by {}".format(what, actor), 0, ok,
                                                "" if ok else outcome), protected=ok and actor != "-")

    def alert(self, kind: str, person: Person | None) -> None:
        g = self.gateway
        if kind == "duress" and person is not None:
            g.submit(CMD_DURESS, person.number, "console", person.ident)
        elif kind == "console_lockout":
            g.health.record(R.HEALTH_CONSOLE_LOCKOUT, "console locked after repeated failed logins", ALARM)

    def grant_active(self, wall_s: float) -> bool:
        return self.path.grant_active(wall_s)
