"""Sealed record chains without a journal: what a gateway's uplink publishes,
made fast for the head end's tests and benches (``cabguard bench --only headend``).
Each record is COSE_Mac0 under the gateway's epoch-0 key, chained by tag."""

from __future__ import annotations

import json

import cbor2

from controller.journal import records as R
from drivers.cose import Sealer
from drivers.keys import CoseKey, EpochKeys, generate, role_kid


class SealedChain:
    """Records 0, 1, 2 ... of one gateway; ``tags[seq]`` is each record's tag."""

    def __init__(self, gateway: str, key: CoseKey | None = None):
        self.gateway = gateway
        self.key = key or generate(role_kid(gateway, "record"))
        epoch = EpochKeys(self.key).epoch(0)
        self.sealer = Sealer(epoch.alg, epoch.kid, epoch.k)
        self.tags: list[bytes] = []
        self.records: list[bytes] = []

    def seal(self, seq: int, prev: bytes, severity: int = 0, rtype: int = R.TELEMETRY,
             wall_ms: int | None = None, data: dict | None = None) -> tuple[bytes, bytes]:
        """One record at ``seq`` with this previous tag: (message, tag); not added to the chain.
        Its wall time is ``wall_ms``, by default ``seq`` ms after 2023-11-14 22:13:20 UTC."""
        wall = 1_700_000_000_000 + seq if wall_ms is None else wall_ms
        rec = {R.SEQ: seq, R.BOOT: 0, R.WALL_MS: wall, R.TIME_QUALITY: R.TIME_TRUSTED,
               R.GATEWAY: self.gateway, R.TYPE: rtype, R.SEVERITY: severity, R.PREV: prev}
        if data:
            rec[R.DATA] = data
        return self.sealer.seal(cbor2.dumps(rec), seq)

    def extend(self, n: int, severity: dict[int, int] | None = None, rtype: dict[int, int] | None = None) -> "SealedChain":
        """Append ``n`` records; ``severity``/``rtype`` by sequence number where not telemetry/info."""
        for _ in range(n):
            seq = len(self.records)
            self.append((rtype or {}).get(seq, R.TELEMETRY), (severity or {}).get(seq, 0))
        return self

    def append(self, rtype: int, severity: int, wall_ms: int | None = None, data: dict | None = None) -> bytes:
        """Seal the next record onto the chain (wall time as ``seal``); its message."""
        seq = len(self.records)
        msg, tag = self.seal(seq, self.tags[-1] if self.tags else b"", severity, rtype, wall_ms, data)
        self.records.append(msg)
        self.tags.append(tag)
        return msg

    def heartbeat(self, site: str, seq: int, wall_ms: int, mode: str = "armed") -> bytes:
        """A heartbeat naming record ``seq`` as its checkpoint (as the uplink sends it)."""
        return json.dumps({"gateway": self.gateway, "site": site, "mode": mode, "last_seq": seq,
                           "checkpoint": {"seq": seq, "tag": self.tags[seq].hex()}, "wall_ms": wall_ms},
                          sort_keys=True).encode()
