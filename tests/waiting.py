"""Waiting for something that happens in another thread or process, in tests.

Tests never sleep a fixed time to let something happen: they poll for the
fact itself, with a generous deadline that only a real failure reaches.
"""

from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
