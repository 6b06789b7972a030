"""``cabguard headend status|ack``: the fleet at a glance, and acknowledging an incident."""

from __future__ import annotations

import argparse
import json
import sys
import time

from controller.errors import CabguardError
from controller.headend import ledger
from controller.headend.config import HeadendConfig, load as load_config
from controller.headend.store import Store, open_store


def fleet(store: Store, silent_after_s: float, now: float | None = None) -> dict:
    """Per gateway: site, mode, online, last heartbeat, records, gaps (a missing tail
    below the newest anchored checkpoint included), equivocations, open incidents."""
    now = time.time() if now is None else now
    q = store.execute
    gws: dict[str, dict] = {}
    for gw, site, mode, hb_at, last_seq in q("SELECT gateway, site, mode, last_hb_at, last_seq FROM gateways "
                                             "ORDER BY gateway").fetchall():
        gws[gw] = {"gateway": gw, "site": site, "mode": mode, "last_heartbeat_at": hb_at,
                   "online": hb_at is not None and now - hb_at <= silent_after_s, "reported_last_seq": last_seq,
                   "records": 0, "first_seq": None, "last_seq": None, "gaps": [], "checkpoint": None,
                   "equivocations": 0, "open_incidents": 0}
    for gw, first, last, count in q("SELECT gateway, MIN(seq), MAX(seq), COUNT(*) FROM records "
                                    "GROUP BY gateway").fetchall():
        gws[gw].update(first_seq=first, last_seq=last, records=count)
    for gw, a, b in q("SELECT gateway, seq + 1, next - 1 FROM (SELECT gateway, seq, LEAD(seq) OVER "
                      "(PARTITION BY gateway ORDER BY seq) AS next FROM records) AS s WHERE next > seq + 1 "
                      "ORDER BY gateway, seq").fetchall():
        gws[gw]["gaps"].append([a, b])
    for gw, seq in q("SELECT gateway, MAX(seq) FROM checkpoints GROUP BY gateway").fetchall():
        g = gws[gw]
        g["checkpoint"] = seq
        held = g["last_seq"] if g["last_seq"] is not None else -1
        if seq > held:                     # the gateway anchored records the head end does not hold
            g["gaps"].append([held + 1, seq])
    for gw, n in q("SELECT gateway, COUNT(*) FROM equivocations GROUP BY gateway").fetchall():
        gws[gw]["equivocations"] = n
    incidents = [{"id": i, "gateway": gw, "kind": kind, "opened_at": at, "records": n, "first_seq": a,
                  "last_seq": b, "detail": detail}
                 for i, gw, kind, at, n, a, b, detail in q(
                     "SELECT id, gateway, kind, opened_at, records, first_seq, last_seq, detail FROM incidents "
                     "WHERE state='open' ORDER BY id").fetchall()]
    for inc in incidents:
        gws[inc["gateway"]]["open_incidents"] += 1
    deliveries = dict(q("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall())
    listed = list(gws.values())
    return {"gateways": listed, "total": len(listed), "online": sum(g["online"] for g in listed),
            "open_incidents": incidents, "equivocations": sum(g["equivocations"] for g in listed),
            "gaps": sum(len(g["gaps"]) for g in listed),
            "deliveries": {s: deliveries.get(s, 0) for s in ("pending", "delivered", "failed")}}


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    s = max(0, int(now - at))
    return "{} s ago".format(s) if s < 120 else "{} min ago".format(s // 60) if s < 7200 else \
        "{} h ago".format(s // 3600)


def _span(g: dict) -> str:
    return "-" if g["first_seq"] is None else "{}..{}".format(g["first_seq"], g["last_seq"])


def print_text(f: dict, now: float, out=None) -> None:
    out = out or sys.stdout
    d = f["deliveries"]
    print("{} gateways, {} online; {} open incidents; {} equivocations; {} gaps; notifications: {} delivered, "
          "{} pending, {} failed".format(f["total"], f["online"], len(f["open_incidents"]), f["equivocations"],
                                         f["gaps"], d["delivered"], d["pending"], d["failed"]), file=out)
    rows = [("GATEWAY", "SITE", "MODE", "ONLINE", "LAST HEARTBEAT", "RECORDS", "SEQ", "GAPS", "EQUIV", "INCIDENTS")]
    for g in f["gateways"]:
        gaps = ",".join("{}-{}".format(a, b) for a, b in g["gaps"][:3]) + (" ..." if len(g["gaps"]) > 3 else "")
        rows.append((g["gateway"], g["site"] or "-", g["mode"] or "-", "yes" if g["online"] else "NO",
                     _ago(g["last_heartbeat_at"], now), str(g["records"]), _span(g), gaps or "none",
                     str(g["equivocations"]), str(g["open_incidents"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
    for inc in f["open_incidents"]:
        print("open incident #{id} {gateway} {kind}, {records} record(s), since {when}: {detail}".format(
            when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(inc["opened_at"])), **inc), file=out)


def main(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    if args.headend_command == "ack":
        with store.transaction() as tx:
            if not ledger.acknowledge(tx, args.incident, args.by):
                raise CabguardError("incident #{} is not open in {} (`cabguard headend status` lists the open "
                                    "ones)".format(args.incident, args.db))
        print("incident #{} acknowledged by {}".format(args.incident, args.by))
        return 0
    config = load_config(args.config) if args.config else HeadendConfig()
    now = time.time()
    f = fleet(store, config.silent_after_s, now)
    if args.json:
        json.dump(f, sys.stdout, sort_keys=True)
        print()
    else:
        print_text(f, now)
    return 0
