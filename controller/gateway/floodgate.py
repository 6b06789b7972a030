"""Flood control for the journal: one token bucket per source.

Anyone at the console, anyone who can publish on the command topic and a
device answering every poll with an exception can each make records as fast
as they can type, publish or answer.  Every record from those sources goes
through ``Floodgate.admit`` first: a source has a bucket of ``burst`` records
that refills at ``rate_per_s``; a record over the limit is not journaled but
counted, with its first and last time and a SHA-256 over its content, and
``summaries()`` turns each source's drops into ONE summary record per
``interval_ms``.  A protected record (an accepted command, a login, an alarm:
the caller says which) is always admitted, and still spends a token, so a
flood cannot hide behind it.

Pure: no I/O and no clock of its own (the caller passes monotonic and wall
milliseconds); the lock only makes it safe to share between threads.
"""

from __future__ import annotations

import hashlib
import threading
from typing import NamedTuple


class Limit(NamedTuple):
    rate_per_s: float   # tokens added per second
    burst: int          # bucket size: records admitted at once after a quiet spell


# The limit of a source is that of its class, the part before the first ':'
# ("bus:pump1:timeout" is of class "bus").  Bus and uplink news was journaled
# at most once a minute per kind before there was a floodgate; so it stays.
# A person at the console types a line every few seconds at most, and a known
# person's commands pass anyway (protected); 20 at once covers a pasted script.
LIMITS: dict[str, Limit] = {
    "console": Limit(0.2, 20),
    "downlink": Limit(0.2, 20),
    "bus": Limit(1 / 60, 1),
    "uplink": Limit(1 / 60, 1),
}
DEFAULT_LIMIT = Limit(1.0, 20)
INTERVAL_MS = 60_000   # at most one summary per source per minute


class Summary(NamedTuple):
    """What one source had dropped: the content of a flood record."""
    source: str
    count: int
    first_wall_ms: int
    last_wall_ms: int
    digest: bytes       # SHA-256 over the dropped contents, each length-prefixed, in order


class _Bucket:
    __slots__ = ("tokens", "mono_ms", "dropped", "first_ms", "last_ms", "hash", "window_ms")

    def __init__(self, limit: Limit, mono_ms: int):
        self.tokens = float(limit.burst)
        self.mono_ms = mono_ms
        self.dropped = 0
        self.first_ms = self.last_ms = 0
        self.hash = hashlib.sha256()
        self.window_ms = mono_ms   # when the current summary interval began

    def refill(self, limit: Limit, mono_ms: int) -> None:
        elapsed = max(0, mono_ms - self.mono_ms)
        self.tokens = min(float(limit.burst), self.tokens + elapsed * limit.rate_per_s / 1000)
        self.mono_ms = max(self.mono_ms, mono_ms)


class Floodgate:
    def __init__(self, limits: dict[str, Limit] | None = None, interval_ms: int = INTERVAL_MS):
        self.limits = LIMITS if limits is None else limits
        self.interval_ms = interval_ms
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def limit_of(self, source: str) -> Limit:
        return self.limits.get(source.partition(":")[0], DEFAULT_LIMIT)

    def admit(self, source: str, content: bytes, mono_ms: int, wall_ms: int, protected: bool = False) -> bool:
        """True: journal the record.  False: it is counted into the source's summary."""
        limit = self.limit_of(source)
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is None:
                bucket = self._buckets[source] = _Bucket(limit, mono_ms)
            bucket.refill(limit, mono_ms)
            if bucket.tokens >= 1.0 or protected:
                bucket.tokens = max(0.0, bucket.tokens - 1.0)
                return True
            if bucket.dropped == 0:
                bucket.first_ms = wall_ms
                bucket.window_ms = mono_ms
            bucket.dropped += 1
            bucket.last_ms = wall_ms
            bucket.hash.update(len(content).to_bytes(4, "big") + content)
            return False

    def summaries(self, mono_ms: int, final: bool = False) -> list[Summary]:
        """The summaries whose interval is over (every pending one if ``final``),
        each source's counting started afresh."""
        due = []
        with self._lock:
            for source, bucket in self._buckets.items():
                if bucket.dropped and (final or mono_ms - bucket.window_ms >= self.interval_ms):
                    due.append(Summary(source, bucket.dropped, bucket.first_ms, bucket.last_ms,
                                       bucket.hash.digest()))
                    bucket.dropped = 0
                    bucket.hash = hashlib.sha256()
        return due
