"""The fixed-period scan timer: absolute deadlines, lateness measured, never drifting.

Each deadline is the previous one plus the period, not "now plus the
period", so small delays do not accumulate.  A scan that starts more than a
quarter period after its deadline is *late*; one that overruns whole
periods skips the deadlines it missed (counting each as late) instead of
running a burst of catch-up scans against stale inputs.
"""

from __future__ import annotations

import time
from typing import Callable


class ScanTimer:
    def __init__(self, period_ms: int, now_ns: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep):
        self.period_ns = period_ms * 1_000_000
        self.late_after_ns = self.period_ns // 4
        self.now_ns = now_ns
        self.sleep = sleep
        self.deadline_ns = 0
        self.late_scans = 0
        self.last_lateness_ns = 0

    def start(self) -> int:
        self.deadline_ns = self.now_ns()
        return self.deadline_ns

    def wait(self) -> int:
        """Sleep until the next deadline; returns how late this scan starts (ns)."""
        self.deadline_ns += self.period_ns
        remaining = self.deadline_ns - self.now_ns()
        if remaining > 0:
            self.sleep(remaining / 1e9)
        now = self.now_ns()
        lateness = now - self.deadline_ns
        if lateness >= self.period_ns:
            missed = lateness // self.period_ns
            self.deadline_ns += missed * self.period_ns
            self.late_scans += missed
            lateness = now - self.deadline_ns
        if lateness > self.late_after_ns:
            self.late_scans += 1
        self.last_lateness_ns = lateness
        return lateness
