"""The simulator's exception hierarchy."""


class SimError(Exception):
    """Base of every error about simulator configs and scenarios."""


class SimConfigError(SimError):
    """A simulator config (SIM.toml) or API call that cannot be carried out."""
