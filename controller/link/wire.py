"""The wire contract between a gateway and its head end: the MQTT topic
scheme and the downlink command envelope (docs/uplink.md).  The record
format is controller/journal/records.py (docs/records.cddl); the command
vocabulary is controller/console/commands.py.

Both sides import this module and nothing else of each other: the gateway's
uplink and downlink verifier, the head end's receiver and command sender.

A downlink command is a tagged COSE_Mac0 (drivers/cose.py) under the
head-end key -- never the record key -- whose payload is a CBOR map:

    {1: 1 (format), 2: gateway id, 3: command sequence number,
     4: expiry (Unix seconds), 5: command name, 6: {argument: value}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.console.commands import BY_NAME, CommandError
from drivers.cose import encode, mac0_create

if TYPE_CHECKING:     # the uplink process imports this module for its topics, and no keys
    from drivers.keys import CoseKey

FORMAT = 1
MAX_BYTES = 4096
AAD = b"cabguard downlink v1"
K_FORMAT, K_GATEWAY, K_SEQ, K_EXPIRY, K_NAME, K_ARGS = 1, 2, 3, 4, 5, 6


class Topics:
    """A gateway's topics: ``PREFIX/SITE/GATEWAY/KIND``."""

    RECORDS, HEARTBEAT, STATE, COMMANDS = "rec", "hb", "state", "cmd"

    def __init__(self, prefix: str, site: str, gateway: str):
        base = "{}/{}/{}/".format(prefix.rstrip("/"), site, gateway)
        self.records = base + self.RECORDS
        self.heartbeat = base + self.HEARTBEAT
        self.state = base + self.STATE
        self.commands = base + self.COMMANDS

    @classmethod
    def all_records(cls, prefix: str) -> str:
        return "{}/+/+/{}".format(prefix.rstrip("/"), cls.RECORDS)

    @classmethod
    def all_heartbeats(cls, prefix: str) -> str:
        return "{}/+/+/{}".format(prefix.rstrip("/"), cls.HEARTBEAT)

    @staticmethod
    def parse(topic: str) -> tuple[str, str]:
        """(gateway id, kind) of a gateway's topic; ("", "") for any other."""
        parts = topic.split("/")
        return (parts[-2], parts[-1]) if len(parts) >= 4 else ("", "")


def make_command(key: CoseKey, gateway: str, seq: int, expiry_s: int, name: str,
                 args: dict[str, int | str] | None = None) -> bytes:
    """The head end's side: a signed command (used by `cabguard cmd`)."""
    spec = BY_NAME.get(name)
    if spec is None or not spec.downlink:
        raise CommandError("{!r} is not a downlink command (they are: {})".format(
            name, ", ".join(c.name for c in BY_NAME.values() if c.downlink)))
    payload = encode({K_FORMAT: FORMAT, K_GATEWAY: gateway, K_SEQ: seq, K_EXPIRY: expiry_s,
                      K_NAME: name, K_ARGS: dict(args or {})})
    return mac0_create(payload, key.alg, key.kid, key.k, AAD)
