"""The simulator's exception hierarchy."""


class SimError(Exception):
    """Base of every error about simulator configs and scenarios."""


class SimConfigError(SimError):
    """A simulator config (SIM.toml) or API call that cannot be carried out."""


class ScenarioError(SimError):
    """A scenario file that cannot be loaded; the message names file and line."""


class EvalError(SimError):
    """An evaluation that cannot run as asked (missing model, bad report folder)."""
