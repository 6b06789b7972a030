"""The rules package's exception base, portable so the evaluator can raise it.

rules/errors.py re-exports these and adds the host-side (compiler) errors.
"""


class RuleError(Exception):
    """Base of every error about rules, tables or models."""


class TableError(RuleError):
    """A table whose structure does not follow the format; names the rule."""
