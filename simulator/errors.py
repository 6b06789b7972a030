"""The simulator's exception hierarchy."""


class SimError(Exception):
    """Base of every error about simulator configs and scenarios."""


class ScenarioError(SimError):
    """A scenario file that cannot be loaded; the message names file and line."""


class EvalError(SimError):
    """An evaluation that cannot run as asked (missing model, bad report folder)."""
