"""The simulator's exception hierarchy."""


class SimError(Exception):
    """Base of every error about simulator configs and scenarios."""
