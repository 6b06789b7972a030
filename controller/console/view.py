"""The console's window on the running gateway (the GatewayView of session.py)."""

from __future__ import annotations

from controller import __version__
from controller.console import commands as cm
from controller.console.auth import Person
from controller.console.commandpath import CommandPath
from controller.core.catalog import DEVICE_TWINS
from controller.core.events import ALARM, CMD_DURESS
from controller.core.modes import MODE_NAMES
from controller.core.outputs import OUTPUT_NAMES
from controller.journal import records as R

UNIT_TEXT = {("V", -3): "mV", ("A", -3): "mA", ("C", -1): "0.1 degC", ("g", -3): "mg",
             ("deg", -3): "mdeg", ("pct", 0): "%", ("bool", 0): "", ("count", 0): "", ("code", 0): ""}


def unit_text(unit: str, scale: int) -> str:
    """How the console shows a signal's unit: "mV", "bits" (not "bitse0"), "We2"."""
    return UNIT_TEXT.get((unit, scale), unit if scale == 0 else "{}e{}".format(unit, scale))


class ConsoleView:
    def __init__(self, gateway, path: CommandPath):
        self.gateway = gateway
        self.path = path
        self.gateway_id = gateway.gateway_id

    def status_text(self) -> str:
        g = self.gateway
        state = g.state
        lines = ["gateway {}  site {}  cabguard {}".format(g.gateway_id, g.site.config.doc["gateway"]["site"],
                                                           __version__),
                 "mode      {}{}".format(MODE_NAMES[state.mode], _left(state.machine.remaining(g.now_tick()))),
                 "outputs   " + ", ".join("{}={}".format(n, v) for n, v in zip(OUTPUT_NAMES, state.outputs)),
                 "devices   " + ", ".join("{} {}".format(d, "online" if g.image[g.catalog.index[d + ".online"]]
                                                         else "OFFLINE") for d in g.catalog.devices),
                 "clock     {}".format("trusted" if g.trusted else "UNTRUSTED (schedules on their safe values)"),
                 "journal   next seq {}, backlog {}".format(g.journal.next_seq, g.backlog),
                 "last      {}".format(g.last_event or "-")]
        return "\n".join(lines)

    def version_text(self) -> str:
        return "cabguard {}; rules: {}".format(__version__, self.gateway.status.rules_info().splitlines()[0])

    def signal_rows(self) -> list[tuple[str, int, str]]:
        g = self.gateway
        cat = g.catalog
        return [(cat.names[i], g.image[i], unit_text(cat.units[i], cat.scales[i])) for i in range(cat.size)]

    def events_tail(self, count: int) -> list[str]:
        return list(self.gateway.recent)[-count:]

    def devices_text(self) -> str:
        """Per device: the image's twins, then where it is and how its bus is doing."""
        g = self.gateway
        config = {d["name"]: d for d in g.site.config.doc["device"]}
        stats: dict[str, dict[str, float]] = {}
        for poller in g.site.pollers:
            stats.update(poller.stats())
        rows = []
        for d in g.catalog.devices:
            twins = [g.image[g.catalog.index["{}.{}".format(d, t)]] for t, _u, _s in DEVICE_TWINS]
            rows.append("{:<10} {:<8} ok {:<8} timeouts {:<6} crc {:<6} last exception {}".format(
                d, "online" if twins[0] else "OFFLINE", *twins[1:]))
            if d in config and d in stats:
                c, st = config[d], stats[d]
                rows.append("{:<10} bus {} address {} profile {} poll {} ms; latency {:.1f} ms, timeout {:.0f} ms, "
                            "exceptions {}, registers not implemented {}".format(
                                "", c["bus"], c["address"], c["profile"], c["poll_ms"], st["latency_ms"],
                                st["timeout_ms"], int(st["exceptions"]), int(st["not_implemented"])))
        return "\n".join(rows)

    def submit(self, request: cm.Request) -> str:
        return self.path.execute(request)

    def host_action(self, request: cm.Request) -> str:
        return self.path.execute(request)

    def audit(self, actor: str, what: str, outcome: str) -> None:
        g = self.gateway
        ctx = g.context(False)
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


def _left(ms: int) -> str:
    return "  ({} s left)".format((ms + 999) // 1000) if ms else ""
