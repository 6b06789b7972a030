"""Signed downlink commands, checked by the gateway.

The envelope (a COSE_Mac0 under the head-end key over a CBOR map) is part
of the wire contract, controller/link/wire.py, where the head end makes
it.  The gateway refuses, and journals the refusal of, anything that is
oversized, malformed, under a bad MAC, for another gateway, not newer than
the last accepted sequence number (replayed or reordered), expired, or not
a downlink command of the shared command model (controller/console/commands.py).
The last accepted sequence number is persisted atomically before the
command runs, so a reboot does not reopen the replay window.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import cbor2

from controller.console.commands import BY_NAME, CommandError, Request, bind
from controller.errors import CabguardError
from controller.link.wire import AAD, FORMAT, K_ARGS, K_EXPIRY, K_FORMAT, K_GATEWAY, K_NAME, K_SEQ, MAX_BYTES
from drivers.atomicfile import write_atomic
from drivers.cose import mac0_decode
from drivers.errors import CoseError
from drivers.keys import CoseKey
from drivers.safefile import InputFileError, read_bytes

# Bounds on what a signed command may claim (a valid MAC proves who sent it,
# not that its numbers are sane): one sequence number far ahead would make
# every later command "replayed", an expiry years away keeps it replayable.
SEQ_STEP_MAX = 366 * 86_400_000       # a year of the head end's default (milliseconds) sequence
EXPIRY_MAX_S = 7 * 86_400
PLAUSIBLE_WALL_S = 1_767_225_600      # 2026-01-01: a gateway clock before this is not believed


class Refused(CabguardError):
    """A downlink command the gateway will not run; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str, seq: int | None = None, name: str = ""):
        self.reason = reason
        self.seq = seq
        self.name = name
        super().__init__("downlink command refused ({}): {}".format(reason, detail))


class SeqStore:
    """The highest accepted command sequence number, persisted atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.value = int(read_bytes(self.path, "downlink sequence file", 64).strip() or 0)
        except FileNotFoundError:
            self.value = 0
        except (ValueError, InputFileError):
            raise CabguardError("{} is corrupt: it must hold one number (the last accepted downlink "
                                "sequence); restore it from the journal's last command record".format(self.path))

    def advance(self, seq: int) -> None:
        write_atomic(self.path, "{}\n".format(seq).encode())
        self.value = seq


class DownlinkVerifier:
    def __init__(self, gateway_id: str, key: CoseKey, seqs: SeqStore):
        self.gateway_id = gateway_id
        self.key = key
        self.seqs = seqs

    def verify(self, data: bytes, wall_s: float) -> Request:
        """A Request to run, or Refused saying why (never another exception)."""
        if len(data) > MAX_BYTES:
            raise Refused("oversized", "more than {} bytes".format(MAX_BYTES))
        try:
            msg = mac0_decode(data)
        except CoseError as e:
            raise Refused("malformed", str(e)) from None
        if msg.kid != self.key.kid or msg.alg != self.key.alg:
            raise Refused("bad-mac", "signed with kid {!r} alg {}, expected the head-end key {!r}".format(
                msg.kid.decode(errors="replace"), msg.alg, self.key.kid_text))
        try:
            payload = msg.verify(self.key.k, AAD)
        except CoseError as e:
            raise Refused("bad-mac", str(e)) from None
        body = self._payload(payload)
        seq, name = body[K_SEQ], body[K_NAME]
        if body[K_GATEWAY] != self.gateway_id:
            raise Refused("wrong-gateway", "addressed to {!r}".format(body[K_GATEWAY]), seq, name)
        if seq <= self.seqs.value:
            raise Refused("replayed", "sequence {} is not after {}".format(seq, self.seqs.value), seq, name)
        ceiling = max(self.seqs.value, int(max(wall_s, PLAUSIBLE_WALL_S) * 1000)) + SEQ_STEP_MAX
        if seq > ceiling:
            raise Refused("bad-sequence", "sequence {} is more than a year ahead (at most {})".format(seq, ceiling),
                          seq, name)
        if wall_s > body[K_EXPIRY]:
            raise Refused("expired", "expired {:.0f} s ago".format(wall_s - body[K_EXPIRY]), seq, name)
        if wall_s >= PLAUSIBLE_WALL_S and body[K_EXPIRY] > wall_s + EXPIRY_MAX_S:
            raise Refused("bad-expiry", "expires {:.0f} days from now (at most {})".format(
                (body[K_EXPIRY] - wall_s) / 86_400, EXPIRY_MAX_S // 86_400), seq, name)
        spec = BY_NAME.get(name)
        if spec is None or not spec.downlink:
            raise Refused("unknown-command", "{!r} is not a downlink command".format(name), seq, name)
        try:
            words = [str(body[K_ARGS][a.name]) for a in spec.args if a.name in body[K_ARGS]]
            args = bind(spec, words)
        except (CommandError, TypeError) as e:
            raise Refused("bad-arguments", str(e), seq, name) from None
        self.seqs.advance(seq)
        return Request(spec, args, "downlink", "headend")

    @staticmethod
    def _payload(payload: bytes) -> dict:
        try:
            body = cbor2.loads(payload)
        except Exception as e:  # cbor2 raises several types
            raise Refused("malformed", "payload is not CBOR ({})".format(e)) from None
        types = {K_FORMAT: int, K_GATEWAY: str, K_SEQ: int, K_EXPIRY: int, K_NAME: str, K_ARGS: dict}
        if not isinstance(body, dict) or body.get(K_FORMAT) != FORMAT or any(
                not isinstance(body.get(k), t) or isinstance(body.get(k), bool) for k, t in types.items()):
            raise Refused("malformed", "payload must be the documented command map (docs/uplink.md)")
        return body


def command_handler(verifier: DownlinkVerifier, on_request: Callable[[Request], object],
                    on_refused: Callable[[Refused], None]) -> Callable[[bytes], None]:
    """What the uplink calls with each payload from the command topic: verify,
    then run it (``on_request``) or report the refusal (``on_refused``)."""
    def handle(payload: bytes) -> None:
        try:
            request = verifier.verify(payload, time.time())
        except Refused as refused:
            on_refused(refused)
            return
        on_request(request)
    return handle
