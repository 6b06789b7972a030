"""The rules package's exception hierarchy."""


class RuleError(Exception):
    """Base of every error about rules, tables or models."""
