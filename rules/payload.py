"""The rule table's payload codec: compiled table data <-> CBOR bytes, and a
checked evaluator from a payload.

The compiler (rules/compiler.py) encodes; the gateway (controller/gateway/
tables.py), the simulator's evaluation and the tools decode.  Nothing here
parses rule source, so the gateway never loads the compiler (and ``ast``)
to run a table.
"""

from __future__ import annotations

import cbor2

from controller.core.catalog import Catalog
from controller.core.errors import TableError
from controller.core.evaluator import Evaluator
from controller.core.table import Table
from rules.errors import RuleError, TableRefused


def encode_payload(data: dict) -> bytes:
    """The compact, canonical CBOR payload that gets MAC'd."""
    return cbor2.dumps(data, canonical=True)


def decode_payload(payload: bytes, where: str) -> dict:
    """The table data from its CBOR payload; RuleError names ``where``."""
    try:
        data = cbor2.loads(payload)
    except Exception as e:  # cbor2 raises several types for bad input
        raise RuleError("{}: the table payload is not CBOR ({})".format(where, e)) from None
    if not isinstance(data, dict):
        raise RuleError("{}: the table payload is not a rule table".format(where))
    return data


def json_data(data: dict) -> dict:
    """The table data with its byte strings as hex, for a JSON trace header."""
    out = dict(data)
    for key in ("catalog", "source"):
        out[key] = bytes(data[key]).hex()
    return out


def build_table(data: dict, catalog: Catalog, where: str) -> Table:
    """Check the table against ``catalog``; TableRefused on a mismatch."""
    digest = catalog.digest()
    theirs = data.get("catalog")
    if not isinstance(theirs, bytes) or theirs != digest:
        shown = theirs.hex()[:12] if isinstance(theirs, bytes) else "(none)"
        raise TableRefused(
            "{}: compiled for signal catalog {}..., but this gateway's catalog is {}...: recompile "
            "the rules against this site's catalog".format(where, shown, digest.hex()[:12]))
    try:
        return Table(data, catalog.size)
    except TableError as e:
        raise TableRefused("{}: {}".format(where, e)) from None


def load_payload(payload: bytes, catalog: Catalog, where: str) -> tuple[dict, Evaluator]:
    """Decode and check a verified table payload; returns its data and a fresh evaluator."""
    try:
        data = decode_payload(payload, where)
    except RuleError as e:
        raise TableRefused(str(e)) from None
    return data, Evaluator(build_table(data, catalog, where))
