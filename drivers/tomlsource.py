"""Where a table or key sits in a TOML file (tomllib keeps no positions), so
that a validator's message can name ``FILE:LINE``.  Shared by the profile
loader (drivers/modbus/profiles.py) and the scenario loader
(simulator/scenario.py); each adds its own ``error()``.
"""

from __future__ import annotations

import re
from pathlib import Path


class TomlSource:
    def __init__(self, path: str | Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def headers(self, name: str, array: bool | None = None) -> list[int]:
        """0-based lines of the ``[[name]]`` (array), ``[name]`` (not array) or either headers."""
        left, right = {True: (r"\[\[", r"\]\]"), False: (r"\[", r"\]"), None: (r"\[+", r"\]+")}[array]
        pat = re.compile(r"^\s*" + left + r"\s*" + re.escape(name) + r"\s*" + right)
        return [i for i, line in enumerate(self.lines) if pat.match(line)]

    def line_of(self, name: str, key: str | None = None) -> int:
        """1-based line of table ``name`` (or of its ``key``); a dotted name may
        also be an inline table (``last = {...}``); a key of a table not found
        is looked for from the top."""
        inline = re.compile(r"^\s*" + re.escape(name.rsplit(".", 1)[-1]) + r"\s*=\s*\{")
        hits = self.headers(name)
        if "." in name:
            hits = sorted(hits + [i for i, line in enumerate(self.lines) if inline.match(line)])
        if hits:
            return self.key_line(hits[0], key) if key else hits[0] + 1
        return self.key_line(0, key) if key else 1

    def nth_of(self, name: str, n: int, key: str | None = None, array: bool = True) -> int:
        """1-based line of the n-th ``[[name]]`` (or ``[name]``) header, or of its
        ``key``; 1 when there is no such header."""
        hits = self.headers(name, array)
        if n < len(hits):
            return self.key_line(hits[n], key) if key else hits[n] + 1
        return 1

    def key_line(self, start: int, key: str) -> int:
        """1-based line of ``key`` in the table whose header is line ``start``
        (plain or inside an inline table); the header's line if it is not there."""
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        inline = re.compile(r"[{,]\s*" + re.escape(key) + r"\s*=")
        for i in range(start, len(self.lines)):
            line = self.lines[i]
            if i > start and line.lstrip().startswith("["):
                break
            if pat.match(line) or inline.search(line):
                return i + 1
        return start + 1
