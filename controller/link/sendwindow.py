"""Which journal records go upstream next, and how far the cursor may move.

Pure bookkeeping, no I/O (the MQTT shell lives in controller/link/uplink.py):

- at most ``size`` records are in flight (published at QoS 1, not yet
  acknowledged) — paho would otherwise queue and re-send everything at once;
- unsent alarm records go ahead of older telemetry, so an alarm raised
  during a week-long backlog reaches the head end at once; the receiver
  restores sequence order;
- the cursor is the highest sequence number such that it and every record
  before it are acknowledged, so it moves only over contiguous acks and a
  restart re-sends from there (the receiver de-duplicates);
- a lost connection forgets what was in flight: those records are sent again.
"""

from __future__ import annotations

import heapq


class SendWindow:
    def __init__(self, cursor: int, size: int = 64):
        self.cursor = cursor          # every seq <= cursor is acknowledged
        self.size = size
        self.in_flight: set[int] = set()
        self.acked: set[int] = set()  # acknowledged seqs above the cursor
        self.next_seq = cursor + 1    # the next record in plain order
        self.urgent: list[int] = []   # heap of unsent urgent seqs

    def add_urgent(self, seq: int) -> None:
        if seq > self.cursor:
            heapq.heappush(self.urgent, seq)

    def room(self) -> int:
        return self.size - len(self.in_flight)

    def _sendable(self, seq: int) -> bool:
        return seq > self.cursor and seq not in self.in_flight and seq not in self.acked

    def take(self, last_seq: int, limit: int | None = None) -> list[int]:
        """The seqs to publish now, urgent first; ``last_seq`` is the newest record,
        ``limit`` caps how many (a paced drain)."""
        out: list[int] = []
        room = self.room() if limit is None else min(self.room(), limit)
        while self.urgent and len(out) < room:
            seq = heapq.heappop(self.urgent)
            if self._sendable(seq) and seq <= last_seq:
                out.append(seq)
        while len(out) < room and self.next_seq <= last_seq:
            seq = self.next_seq
            self.next_seq += 1
            if self._sendable(seq) and seq not in out:
                out.append(seq)
        self.in_flight.update(out)
        return out

    def ack(self, seq: int) -> bool:
        """Record an acknowledgement; True if the cursor moved."""
        self.in_flight.discard(seq)
        if seq <= self.cursor:
            return False
        self.acked.add(seq)
        moved = False
        while self.cursor + 1 in self.acked:
            self.cursor += 1
            self.acked.discard(self.cursor)
            moved = True
        return moved

    def disconnected(self) -> None:
        """In-flight publications are lost with the connection: send them again."""
        for seq in self.in_flight:
            if seq < self.next_seq:
                heapq.heappush(self.urgent, seq)
        self.in_flight.clear()

    def backlog(self, last_seq: int) -> int:
        return max(0, last_seq - self.cursor - len(self.acked))
