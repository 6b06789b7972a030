"""What the running gateway says about itself: the systemd status line, the
uplink's heartbeat and the console's ``rules info``.  Read-only: a view
over the gateway's state, built from plain values."""

from __future__ import annotations

from controller import __version__
from controller.core.modes import MODE_NAMES


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
