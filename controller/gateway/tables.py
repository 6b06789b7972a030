"""Signed rule tables: sign on the host, verify and load on the gateway.

A table file is a tagged COSE_Mac0 (drivers/cose.py) whose payload is the
compiled table's CBOR (rules/payload.py), MAC'd with the installer key.
The gateway refuses a table whose MAC, key or catalog digest does not match
and keeps running the last good one (TableSlot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from controller.core.catalog import Catalog
from controller.core.evaluator import Evaluator
from drivers.atomicfile import write_atomic
from drivers.cose import kid_text, mac0_create, mac0_decode
from drivers.errors import CoseError
from drivers.keys import CoseKey
from rules.errors import TableRefused
from rules.payload import load_payload

# Binds the MAC to its purpose: a record or command MAC'd with the same key
# cannot pass for a rule table.
EXTERNAL_AAD = b"cabguard rule table"


def sign(payload: bytes, key: CoseKey) -> bytes:
    """The table file's bytes: ``payload`` in a COSE_Mac0 under ``key``."""
    return mac0_create(payload, key.alg, key.kid, key.k, EXTERNAL_AAD)


def write_table(path: str | Path, data: bytes) -> None:
    """Write atomically and durably (drivers/atomicfile.py), so a gateway never
    reads half a table; readable by all: a table is signed, not secret."""
    write_atomic(path, data, 0o644)


def read_payload(path: str | Path, key: CoseKey | None) -> bytes:
    """The verified payload of a table file (unverified when ``key`` is None)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise TableRefused("cannot read rule table {}: {}".format(path, e.strerror)) from None
    try:
        msg = mac0_decode(raw)
    except CoseError as e:
        raise TableRefused("{}: not a signed rule table ({}); make one with "
                           "`cabguard rules compile`".format(path, e)) from None
    if key is None:
        return msg.body
    if msg.kid != key.kid:
        raise TableRefused("{}: signed with key '{}', but this gateway's installer key is '{}': "
                           "recompile with the right --key".format(path, kid_text(msg.kid), key.kid_text))
    try:
        return msg.verify(key.k, EXTERNAL_AAD)
    except CoseError:
        raise TableRefused("{}: the MAC does not verify under key '{}': the table was altered or "
                           "signed with another key of the same name".format(path, key.kid_text)) from None


def load_table(path: str | Path, key: CoseKey | None, catalog: Catalog) -> tuple[dict, Evaluator]:
    """Verify, decode and check a table file; returns its data and a fresh evaluator."""
    return load_payload(read_payload(path, key), catalog, str(path))


class TableSlot:
    """The gateway's current rule table; a refused table leaves it as it was.

    >>> slot = TableSlot(key, catalog)
    >>> slot.load("rules.cbor")        # True: now active
    >>> slot.load("tampered.cbor")     # False: slot.error says why, old table stays
    """

    def __init__(self, key: CoseKey, catalog: Catalog,
                 on_change: Callable[[Evaluator], None] | None = None):
        self.key = key
        self.catalog = catalog
        self.on_change = on_change
        self.evaluator: Evaluator | None = None
        self.data: dict | None = None
        self.payload: bytes | None = None   # as verified: what the journal keeps for replays
        self.path = ""
        self.error = ""

    def load(self, path: str | Path) -> bool:
        try:
            payload = read_payload(path, self.key)
            data, evaluator = load_payload(payload, self.catalog, str(path))
        except TableRefused as e:
            self.error = str(e)
            return False
        self.payload = payload
        self.data = data
        self.evaluator = evaluator
        self.path = str(path)
        self.error = ""
        if self.on_change is not None:
            self.on_change(evaluator)
        return True
