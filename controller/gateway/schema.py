"""A small declarative checker for TOML documents.

A schema is a tree of ``Field`` objects.  ``check(schema, doc)`` walks the
document once and collects *every* problem with its dotted path
(``device[2].address: want a whole number from 1 to 247, got 300``), so an
installer fixes a config in one pass instead of one error per restart.
Unknown keys are problems too: a misspelt key must not be silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return "{}: {}".format(self.path or "(top level)", self.message)


class Field:
    """Base: ``convert(value, path, problems)`` returns the checked value."""

    required = True
    default: Any = None

    def convert(self, value: Any, path: str, problems: list[Problem]) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return ""


def _join(path: str, key: str) -> str:
    return "{}.{}".format(path, key) if path else key


class Int(Field):
    def __init__(self, lo: int, hi: int, default: int | None = None):
        self.lo, self.hi = lo, hi
        self.required = default is None
        self.default = default

    def describe(self) -> str:
        return "a whole number from {} to {}".format(self.lo, self.hi)

    def convert(self, value, path, problems):
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            problems.append(Problem(path, "want {}, got {!r}".format(self.describe(), value)))
            return self.default
        return value


class Bool(Field):
    def __init__(self, default: bool | None = None):
        self.required = default is None
        self.default = default

    def describe(self) -> str:
        return "true or false"

    def convert(self, value, path, problems):
        if not isinstance(value, bool):
            problems.append(Problem(path, "want true or false, got {!r}".format(value)))
            return self.default
        return value


class Str(Field):
    def __init__(self, pattern: str = r".+", hint: str = "text", default: str | None = None,
                 check: Callable[[str], str | None] | None = None):
        self.pattern = re.compile(pattern)
        self.hint = hint
        self.required = default is None
        self.default = default
        self.check = check

    def describe(self) -> str:
        return self.hint

    def convert(self, value, path, problems):
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            problems.append(Problem(path, "want {}, got {!r}".format(self.hint, value)))
            return self.default
        if self.check:
            why = self.check(value)
            if why:
                problems.append(Problem(path, why))
                return self.default
        return value


class Choice(Field):
    def __init__(self, choices: tuple, default: Any = None):
        self.choices = choices
        self.required = default is None
        self.default = default

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def convert(self, value, path, problems):
        if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
            problems.append(Problem(path, "want {}, got {!r}".format(self.describe(), value)))
            return self.default
        return value


class ListOf(Field):
    """``optional``: a missing list is None (the caller's default applies)."""

    def __init__(self, item: Field, default: list | None = None, min_items: int = 0, optional: bool = False):
        self.item = item
        self.required = default is None and not optional
        self.default = default
        self.min_items = min_items

    def convert(self, value, path, problems):
        if not isinstance(value, list):
            problems.append(Problem(path, "want a list of {}, got {!r}".format(self.item.describe(), value)))
            return list(self.default or [])
        if len(value) < self.min_items:
            problems.append(Problem(path, "want at least {} item(s)".format(self.min_items)))
        return [self.item.convert(v, "{}[{}]".format(path, i), problems) for i, v in enumerate(value)]


class Table(Field):
    """A TOML table with known keys; the result is a plain dict."""

    def __init__(self, fields: dict[str, Field], optional: bool = False, doc: str = ""):
        self.fields = fields
        self.required = not optional
        self.default = None
        self.doc = doc

    def describe(self) -> str:
        return "a table"

    def convert(self, value, path, problems):
        if not isinstance(value, dict):
            problems.append(Problem(path, "want a table ([{}]), got {!r}".format(path, value)))
            return None
        out: dict[str, Any] = {}
        for key in value:
            if key not in self.fields:
                problems.append(Problem(_join(path, key), "unknown key (known here: {})".format(
                    ", ".join(sorted(self.fields)))))
        for key, field in self.fields.items():
            sub = _join(path, key)
            if key in value:
                out[key] = field.convert(value[key], sub, problems)
            elif field.required:
                problems.append(Problem(sub, "missing; want {}".format(field.describe() or "a value")))
                out[key] = field.default
            else:
                out[key] = field.default
        return out


class ArrayOfTables(Field):
    """``[[name]]`` entries, each a Table; ``key`` names must be unique."""

    def __init__(self, table: Table, key: str = "name", min_items: int = 0):
        self.table = table
        self.key = key
        self.required = min_items > 0
        self.default: list = []
        self.min_items = min_items

    def describe(self) -> str:
        return "at least {} [[...]] table(s)".format(self.min_items)

    def convert(self, value, path, problems):
        if not isinstance(value, list):
            problems.append(Problem(path, "want [[{}]] tables, got {!r}".format(path, value)))
            return []
        items, seen = [], {}
        for i, v in enumerate(value):
            item = self.table.convert(v, "{}[{}]".format(path, i), problems)
            if item is None:
                continue
            name = item.get(self.key)
            if name is not None and name in seen:
                problems.append(Problem("{}[{}].{}".format(path, i, self.key),
                                        "{!r} is already used by {}[{}]".format(name, path, seen[name])))
            seen.setdefault(name, i)
            items.append(item)
        if len(items) < self.min_items:
            problems.append(Problem(path, "want at least {} [[{}]] table(s)".format(self.min_items, path)))
        return items


class MapOf(Field):
    """A table whose keys are free names (e.g. schedules), values all alike."""

    def __init__(self, value: Field, key_pattern: str = r"[a-z][a-z0-9_]*"):
        self.value = value
        self.key_pattern = re.compile(key_pattern)
        self.required = False
        self.default: dict = {}

    def convert(self, value, path, problems):
        if not isinstance(value, dict):
            problems.append(Problem(path, "want a table, got {!r}".format(value)))
            return {}
        out = {}
        for k, v in value.items():
            if not self.key_pattern.fullmatch(k):
                problems.append(Problem(_join(path, k), "name must match {}".format(self.key_pattern.pattern)))
                continue
            out[k] = self.value.convert(v, _join(path, k), problems)
        return out


def check(schema: Table, doc: dict) -> tuple[dict | None, list[Problem]]:
    problems: list[Problem] = []
    result = schema.convert(doc, "", problems)
    return result, problems
