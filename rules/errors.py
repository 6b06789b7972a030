"""The rules package's exception hierarchy (host side).

A table that breaks the format is the core's TableError
(controller/core/errors.py): the evaluator raises it under MicroPython too.
"""

from __future__ import annotations


class RuleError(Exception):
    """Base of every error about rule files, table payloads or models."""


class Diagnostic:
    """One problem in a rule file, located as precisely as it can be."""

    def __init__(self, path: str, line: int, col: int, rule_id: str, message: str):
        self.path = path
        self.line = line
        self.col = col
        self.rule_id = rule_id
        self.message = message

    def __str__(self) -> str:
        where = "{}:{}:{}".format(self.path, self.line, self.col) if self.line else self.path
        rule = "rule '{}': ".format(self.rule_id) if self.rule_id else ""
        return "{}: {}{}".format(where, rule, self.message)


class RuleSourceError(RuleError):
    """Everything wrong with a set of rule files, every problem at once."""

    def __init__(self, diagnostics: list[Diagnostic]):
        diagnostics = sorted(diagnostics, key=lambda d: (d.path, d.line, d.col))
        self.diagnostics = diagnostics
        count = len(diagnostics)
        head = "{} problem{} in the rules:".format(count, "" if count == 1 else "s")
        RuleError.__init__(self, "\n".join([head] + ["  " + str(d) for d in diagnostics]))


class CatalogFileError(RuleError):
    """A --catalog file that cannot be used; names the file and the key."""


class ModelFileError(RuleError):
    """An anomaly model file or training input that cannot be used."""


class TableRefused(RuleError):
    """A table that must not run here; the message says why and what to do."""
