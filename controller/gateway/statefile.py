"""The core's persisted state (mode, resume, lock), kept across restarts.

A latched alarm must stay latched across a crash, so this file is never
behind the journal: the scan loop hands each change to the journal
(``Journal.persist``), whose writer thread calls ``save`` before it writes
the records that announce the change (docs/runtime.md, "Crash order").
``save`` replaces the file atomically and fsyncs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from drivers.atomicfile import write_atomic
from drivers.safefile import KIB, InputFileError, parse_json, read_bytes


class StateFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> tuple[int, int, int] | None:
        """The persisted (mode, resume, lock), or None (first start or unreadable)."""
        try:
            doc = parse_json(read_bytes(self.path, "core state file", 4 * KIB), self.path, "core state file")
            return (int(doc["mode"]), int(doc["resume"]), int(doc["lock"]))
        except (OSError, ValueError, KeyError, TypeError, InputFileError):
            return None

    def save(self, persisted: tuple[int, int, int]) -> None:
        """Write (mode, resume, lock) durably; blocks for the disk (the journal writer calls it)."""
        mode, resume, lock = persisted
        write_atomic(self.path, json.dumps({"mode": mode, "resume": resume, "lock": lock}).encode())
