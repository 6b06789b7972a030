"""The core's persisted state (mode, resume, lock, escalation, inventory), kept across restarts.

A latched alarm must stay latched across a crash, so this file is never
behind the journal: the scan loop hands each change to the journal
(``Journal.persist``), whose writer thread calls ``save`` before it writes
the records that announce the change (docs/runtime.md, "Crash order").
``save`` replaces the file atomically and fsyncs it.

The escalation's progress holds ticks of the monotonic clock, which runs
on over a process restart but starts again at a reboot.  So the file also
holds the moment of the save on both clocks and the kernel's boot id;
``load`` says where "now" lies on the saved run's tick clock: the tick
itself on the same boot, the saved tick plus the wall time since on another
boot when the wall clock was trusted at both ends, and UNKNOWN otherwise
(or after a day down, longer than any step's delay), for which the core
takes every pending step at once (controller/core/step.py).

The batteries' inventory (each one's last modules and serial read) lets the
core see what changed while nobody scanned: a gateway's power pulled during
a break-in (docs/runtime.md, "Crash order").
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.core import ticks
from controller.core.step import UNKNOWN
from controller.journal.records import Context
from drivers.atomicfile import write_atomic
from drivers.safefile import KIB, InputFileError, parse_json, read_bytes

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MAX_DOWN_MS = 24 * 3600 * 1000     # down longer: as good as unknown (every step is due)


def boot_id(path: Path = BOOT_ID) -> str:
    """This boot's id ("" where the kernel has none: every restart then counts as a reboot)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


class StateFile:
    def __init__(self, path: str | Path, boot: str | None = None):
        self.path = Path(path)
        self.boot = boot_id() if boot is None else boot

    def load(self, now: Context) -> tuple[tuple, int] | None:
        """The persisted state (``CoreState.persisted()``) and ``now`` on its tick
        clock (or UNKNOWN); None on a first start or an unreadable file.  A
        file of a gateway from before escalation progress was kept gives
        (mode, resume, lock) alone, and one from before the inventory was
        kept gives no inventory."""
        try:
            doc = parse_json(read_bytes(self.path, "core state file", 4 * KIB), self.path, "core state file")
            persisted: tuple = (int(doc["mode"]), int(doc["resume"]), int(doc["lock"]))
            if "escalation" not in doc:
                return persisted, UNKNOWN
            esc, siren = tuple(int(v) for v in doc["escalation"]), tuple(int(v) for v in doc["siren"])
            if len(esc) != 5 or len(siren) != 3:
                return None
            persisted += (esc, siren)
            if "inventory" in doc:
                inventory = tuple(tuple(int(v) for v in entry) for entry in doc["inventory"])
                if any(len(entry) != 3 for entry in inventory):
                    return None
                persisted += (inventory,)
            return persisted, self._then(doc, now)
        except (OSError, ValueError, KeyError, TypeError, InputFileError):
            return None

    def _then(self, doc: dict, now: Context) -> int:
        tick = ticks.wrap(now.mono_ms)
        if doc.get("boot") == self.boot and self.boot:
            return tick
        down = now.wall_ms - int(doc["wall_ms"])
        if not (doc.get("trusted") and now.trusted) or not 0 <= down <= MAX_DOWN_MS:
            return UNKNOWN
        return ticks.add(int(doc["tick"]), down)

    def save(self, persisted: tuple, at: Context) -> None:
        """Write ``persisted`` and the moment ``at`` durably; blocks for the disk (the journal writer calls it)."""
        mode, resume, lock, esc, siren, inventory = persisted
        write_atomic(self.path, json.dumps({
            "mode": mode, "resume": resume, "lock": lock, "escalation": list(esc), "siren": list(siren),
            "inventory": [list(entry) for entry in inventory],
            "tick": ticks.wrap(at.mono_ms), "wall_ms": at.wall_ms, "trusted": bool(at.trusted),
            "boot": self.boot}).encode())
