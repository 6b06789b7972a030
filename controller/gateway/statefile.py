"""The core's persisted state (mode, resume, lock), kept across restarts.

The scan loop hands each change to ``save`` (non-blocking); a small writer
thread writes it atomically and fsyncs it, so a latched alarm and a locked
battery output survive a power cut.  Only the newest value matters, so the
writer coalesces changes that arrive faster than the disk.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from drivers.atomicfile import write_atomic


class StateFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pending: tuple | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def load(self) -> tuple[int, int, int] | None:
        """The persisted (mode, resume, lock), or None (first start or unreadable)."""
        try:
            doc = json.loads(self.path.read_text())
            return (int(doc["mode"]), int(doc["resume"]), int(doc["lock"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, persisted: tuple[int, int, int]) -> None:
        with self._cond:
            self._pending = persisted
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                item, self._pending = self._pending, None
                if item is None:
                    return
            mode, resume, lock = item
            write_atomic(self.path, json.dumps({"mode": mode, "resume": resume, "lock": lock}).encode())

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(5)
