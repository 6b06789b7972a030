"""Readable timelines of what ``step()`` did, for people."""

from __future__ import annotations

from typing import Sequence

from controller.core import modes
from controller.core.catalog import Catalog
from controller.core.events import (
    COMMAND_NAMES, EVENT_FIELDS, EVENT_NAMES, EV_DEVICE, EV_DURESS, EV_ESCALATION, EV_FAULT, EV_INVENTORY, EV_LOCK, EV_MODE, EV_OUTPUT_TEST, EV_REFUSED, EV_RULE, EV_SILENCED, EV_SIREN_LIMIT, SEVERITY_NAMES,
)
from controller.core.escalation import STEP_NAMES
from controller.core.outputs import OUT_LED, OUTPUT_NAMES


def clock(ms: int, origin_s: int = 0) -> str:
    """``HH:MM:SS.s`` for ``ms`` after ``origin_s`` seconds past midnight."""
    total = origin_s * 1000 + ms
    s, tenth = divmod(total // 100, 10)
    h, rest = divmod(s, 3600)
    return "{:02d}:{:02d}:{:02d}.{}".format(h % 24, rest // 60, rest % 60, tenth)


def describe(ev: Sequence[int], catalog: Catalog, rule_names: Sequence[str] = ()) -> str:
    code, a, b, c = ev
    if code == EV_MODE:
        return "mode {} -> {} ({})".format(modes.MODE_NAMES[a], modes.MODE_NAMES[b], modes.EVENT_NAMES[c])
    if code == EV_REFUSED:
        return "command {} refused in mode {}".format(COMMAND_NAMES.get(a, a), modes.MODE_NAMES[b])
    if code == EV_RULE:
        name = rule_names[a] if a < len(rule_names) else "#{}".format(a)
        return "rule {} {} ({})".format(name, "raised" if c else "cleared", SEVERITY_NAMES[b])
    if code == EV_DEVICE:
        dev = catalog.names[a][: -len(".online")]
        return "device {} {}".format(dev, "online" if b else "OFFLINE")
    if code == EV_SIREN_LIMIT:
        return "siren stopped after its maximum on-time ({} s)".format(a // 1000)
    if code == EV_LOCK:
        cause = "command" if b == 0 else (rule_names[b - 1] if b - 1 < len(rule_names) else "rule #{}".format(b - 1))
        return "battery output {} by {}".format("LOCKED" if a else "unlocked", cause)
    if code == EV_SILENCED:
        return "siren silenced"
    if code == EV_OUTPUT_TEST:
        return "output test: {} for {} ms".format(OUTPUT_NAMES[a], b)
    if code == EV_DURESS:
        return "DURESS login by technician {} (silent)".format(a)
    if code == EV_FAULT:
        return "fault {} reported in mode {}".format(a, modes.MODE_NAMES[b])
    if code == EV_ESCALATION:
        return "escalation ({}): {} {}".format(SEVERITY_NAMES[b], STEP_NAMES[a], "taken" if c else "cancelled by ack")
    if code == EV_INVENTORY:
        return "{} read {} after the restart, {} before it".format(catalog.names[a], c, b)
    fields = EVENT_FIELDS.get(code, ("a", "b", "c"))
    return "{} {}".format(EVENT_NAMES.get(code, code), dict(zip(fields, (a, b, c))))


def outputs_text(outputs: Sequence[int]) -> str:
    on = [OUTPUT_NAMES[i] for i in range(len(outputs)) if i != OUT_LED and outputs[i]]
    return "outputs: " + (", ".join(on) if on else "quiet") + ", led pattern {}".format(outputs[OUT_LED])


def event_json(ev: Sequence[int]) -> dict:
    code, a, b, c = ev
    fields = EVENT_FIELDS.get(code, ("a", "b", "c"))
    doc: dict = {"event": EVENT_NAMES.get(code, str(code))}
    for name, value in zip(fields, (a, b, c)):
        if name != "-":
            doc[name] = value
    return doc
