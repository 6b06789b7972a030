"""examples/site.toml on a bench: the one site config the demo, the soak and the tests run.

docs/config.md's complete example (examples/site.toml) is the only site
config written out in full.  Whatever runs a gateway against ``cabguard sim``
starts from it and changes documented keys only, as an installer would
with an editor (docs/config.md, "Against the simulator"): the bus port to
the simulator's link, ``[gpio] pin_factory = "mock"``, the gateway's files
under one folder, a broker on loopback, delays that fit a test.  The text
is edited in place, so the result keeps the example's comments and order:

    text = bench_site({"bus.port": link, "gpio.pin_factory": "mock", "console": None,
                       **local_paths(folder), **loopback_uplink("127.0.0.1:1883")})

A change is ``"table.key": value`` (``device[NAME].key`` picks one of an
array of tables by its name; a new key is added to its table, a new table
at the end), ``"table.key": None`` removes a key, ``"table": None`` (or
``"device[NAME]": None``) removes a whole table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from simulator.errors import SimConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site.toml"
SIM_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.toml"    # the example's cabinet, simulated
HEADER = re.compile(r"^\s*(\[\[?)\s*([\w.-]+)\s*\]\]?")
KEY = re.compile(r"^\s*([\w-]+)\s*=")


def local_paths(folder: Path) -> dict[str, str]:
    """The gateway's own files under one folder, the keys named as `cabguard keys gen --out FOLDER/keys`
    names them (the model and the console's people file go with their tables, which a bench may drop).
    The root record key is never there (``gateway/record.key``): as flash.sh leaves a gateway, epoch 0
    is in the state folder and the root stays in FOLDER/keys, the installer's (docs/keys.md)."""
    d = str(folder)
    return {"gateway.state_dir": d + "/state", "rules.table": d + "/rules.table",
            "rules.key": d + "/keys/installer.key", "keys.record": d + "/gateway/record.key",
            "keys.headend": d + "/keys/command.key", "journal.dir": d + "/journal"}


def loopback_uplink(broker: str, heartbeat_s: int | None = None) -> dict[str, object]:
    """``[uplink]`` to a broker on this machine: no TLS, no account; the example's
    heartbeat unless ``heartbeat_s`` says otherwise."""
    changes: dict[str, object] = {"uplink.broker": broker, "uplink.username": None, "uplink.password": None,
                                  "uplink.ca_file": None, "uplink.cert_file": None, "uplink.key_file": None}
    if heartbeat_s is not None:
        changes["uplink.heartbeat_s"] = heartbeat_s
    return changes


def toml_value(v: object) -> str:
    """A TOML value: booleans, numbers, strings, lists and inline tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (str, Path)):
        return '"{}"'.format(str(v).replace("\\", "\\\\").replace('"', '\\"'))
    if isinstance(v, dict):
        return "{ " + ", ".join("{} = {}".format(k, toml_value(x)) for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise SimConfigError("no TOML value for {!r}".format(v))


class _Table:
    """One table of the file: the comments just above its header, the header
    (none for the top of the file) and the lines up to the next table."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.head = next((i for i, line in enumerate(lines) if HEADER.match(line)), -1)

    def is_(self, name: str, item: str | None) -> bool:
        m = HEADER.match(self.lines[self.head]) if self.head >= 0 else None
        return bool(m and m.group(2) == name and (item is None or self.item_name() == item))

    def item_name(self) -> str | None:
        span = self.key_span("name")
        m = re.search(r'=\s*"([^"]*)"', self.lines[span[0]]) if span else None
        return m.group(1) if m else None

    def key_span(self, key: str) -> tuple[int, int] | None:
        """Lines [start, end) of ``key = value`` (a value may go on over lines until its brackets close)."""
        for i in range(self.head + 1, len(self.lines)):
            m = KEY.match(self.lines[i])
            if m and m.group(1) == key:
                end, depth = i + 1, _depth(self.lines[i][m.end():])
                while depth > 0 and end < len(self.lines):
                    depth += _depth(self.lines[end])
                    end += 1
                return i, end
        return None

    def set(self, key: str, value: object) -> None:
        span = self.key_span(key)
        if span is None:
            if value is not None:
                last = max([i for i, line in enumerate(self.lines) if KEY.match(line)] + [self.head])
                self.lines.insert(last + 1, "{} = {}".format(key, toml_value(value)))
            return
        start, end = span
        if value is None:
            del self.lines[start:end]
            return
        first = self.lines[start]
        new = "{} = {}".format(KEY.match(first).group(0)[:-1].rstrip(), toml_value(value))
        comment = _comment(first) if end == start + 1 else ""
        if comment:      # the comment stays in its column where the new value leaves room
            new = new.ljust(len(first) - len(comment) - 1) + " " + comment
        self.lines[start:end] = [new]


def _depth(text: str) -> int:
    """Brackets opened less closed in ``text``, outside strings and comments."""
    depth, quote, i = 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth


def _comment(line: str) -> str:
    """The ``# ...`` at the end of a line, outside strings ("" if none)."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[i:]
    return ""


def _split(text: str) -> list[_Table]:
    tables, lines = [], []
    for line in text.split("\n"):
        if HEADER.match(line) and lines:
            # comments and blank lines just above a header belong to it
            keep = len(lines)
            while keep > 0 and (not lines[keep - 1].strip() or lines[keep - 1].lstrip().startswith("#")):
                keep -= 1
            tables.append(_Table(lines[:keep]))
            lines = lines[keep:]
        lines.append(line)
    tables.append(_Table(lines))
    return tables


def _parse_path(path: str) -> tuple[str, str | None, str | None]:
    """``table[item].key`` -> (table, item, key); a known table name without key -> (table, item, None)."""
    m = re.fullmatch(r"([\w.-]+?)(?:\[([\w-]+)\])?(?:\.([\w-]+))?", path)
    if not m:
        raise SimConfigError("'{}' is not TABLE.KEY or TABLE[NAME].KEY".format(path))
    return m.group(1), m.group(2), m.group(3)


def bench_site(changes: Mapping[str, object], text: str | None = None) -> str:
    """The example (or ``text``) with ``changes`` made (see the module's doc)."""
    tables = _split(EXAMPLE.read_text(encoding="utf-8") if text is None else text)
    for path, value in changes.items():
        name, item, key = _parse_path(path)
        if key is not None and not _find(tables, name, item) and _find(tables, name + "." + key, item):
            name, key = name + "." + key, None            # "schedules.night": a whole table
        found = _find(tables, name, item)
        if key is None:
            if value is not None:
                raise SimConfigError("'{}': give a key to set, or None to remove the table".format(path))
            if not found:
                raise SimConfigError("'{}': the config has no such table".format(path))
            tables = [t for t in tables if t not in found]
            continue
        if not found:
            if value is None:
                continue
            if item is not None:
                raise SimConfigError("'{}': the config has no [[{}]] named {}".format(path, name, item))
            found = [_Table(["", "[{}]".format(name)])]
            tables.append(found[0])
        for t in found:
            t.set(key, value)
    return "\n".join(line for t in tables for line in t.lines)


def _find(tables: list[_Table], name: str, item: str | None) -> list[_Table]:
    return [t for t in tables if t.is_(name, item)]
