"""What the running gateway says about itself: the systemd status line, the
uplink's heartbeat and the console's ``status``, ``devices`` and ``rules
info``.  Read-only: a view over the gateway's state, built from plain values."""

from __future__ import annotations

from controller import __version__
from controller.core.catalog import DEVICE_TWINS
from controller.core.modes import MODE_NAMES
from controller.core.outputs import OUTPUT_NAMES


class StatusView:
    def __init__(self, gateway):
        self.gateway = gateway

    def _online(self) -> list[str]:
        g = self.gateway
        return [d for d in g.catalog.devices if g.image[g.catalog.index[d + ".online"]]]

    def status_line(self) -> str:
        g = self.gateway
        # An alarm still raised matters more than whatever happened last (a rule clearing, say).
        last = ("active: " + ", ".join(sorted(g.active_rules)) if g.active_rules
                else "last: " + (g.last_event or "-"))
        return "mode {} | devices {}/{} online | {}".format(
            MODE_NAMES[g.state.mode], len(self._online()), len(g.catalog.devices), last)

    def console_text(self) -> str:
        """The console's ``status``: who and where, mode, outputs, devices, clock, journal."""
        g = self.gateway
        state = g.state
        lines = ["gateway {}  site {}  cabguard {}".format(g.gateway_id, g.settings.site_name, __version__),
                 "mode      {}{}".format(MODE_NAMES[state.mode], _left(state.machine.remaining(g.now_tick()))),
                 "outputs   " + ", ".join("{}={}".format(n, v) for n, v in zip(OUTPUT_NAMES, state.outputs)),
                 "devices   " + ", ".join("{} {}".format(d, "online" if g.image[g.catalog.index[d + ".online"]]
                                                         else "OFFLINE") for d in g.catalog.devices),
                 "clock     {}".format("trusted" if g.trusted else "UNTRUSTED (schedules on their safe values)"),
                 "journal   next seq {}, backlog {}".format(g.journal.next_seq, g.backlog),
                 "last      {}".format(g.last_event or "-")]
        return "\n".join(lines)

    def devices_text(self) -> str:
        """The console's ``devices``: per device, the image's twins, then where it is and how its bus is doing."""
        g = self.gateway
        config = {d.name: d for d in g.settings.devices}
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
                rows.append("{:<10} bus {} address {} profile {} poll {} ms (polled every {:.0f}); latency {:.1f} ms, "
                            "timeout {:.0f} ms, exceptions {}, registers not implemented {}".format(
                                "", c.bus, c.address, c.profile, c.poll_ms, st["poll_gap_ms"], st["latency_ms"],
                                st["timeout_ms"], int(st["exceptions"]), int(st["not_implemented"])))
        return "\n".join(rows)

    def heartbeat_doc(self) -> dict:
        """Health for the uplink's heartbeat (called from the uplink-inbox thread)."""
        g = self.gateway
        online = self._online()
        return {"gateway": g.settings.gateway_id, "site": g.settings.site_name,
                "mode": MODE_NAMES[g.state.mode], "devices_online": len(online),
                "devices": len(g.catalog.devices), "offline": sorted(set(g.catalog.devices) - set(online)),
                "last_seq": g.journal.durable_seq, "clock_trusted": g.trusted,
                "late_scans": g.timer.late_scans, "version": __version__,
                "rules": self.rules_info(), "wall_ms": int(g.clock.wall_s() * 1000)}

    def rules_info(self) -> str:
        """What decides: the rule table (or none) and the anomaly model (or none)."""
        g = self.gateway
        model = ""
        if g.model_rules is not None:
            model = "; anomaly model {} (score threshold {})".format(g.settings.model_path, g.model_rules.threshold)
        table = g.table
        if table is None or table.data is None:
            return "no rule table (core entry-delay protection only)" + model
        source = table.data.get("source", b"")
        return "{}: {} rules, source {}, MAC kid {}{}".format(
            table.path, table.evaluator.table.size,
            source.hex()[:16] if isinstance(source, bytes) else source, table.key.kid_text, model)


def _left(ms: int) -> str:
    return "  ({} s left)".format((ms + 999) // 1000) if ms else ""
