"""The rules package's exception hierarchy.

The base (RuleError) and TableError live in the portable rules/table_errors.py
so that the evaluator can raise them under MicroPython too.
"""

from __future__ import annotations

from rules.table_errors import RuleError, TableError

__all__ = ["RuleError", "TableError", "Diagnostic", "RuleSourceError", "CatalogFileError", "ModelFileError"]


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
