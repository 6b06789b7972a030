"""The rules package's exception hierarchy."""


class RuleError(Exception):
    """Base of every error about rules, tables or models."""


class ModelFileError(RuleError):
    """An anomaly model file or training input that cannot be used."""
