"""The portable core's exception hierarchy."""


class CoreError(Exception):
    """Base of every error the portable core raises."""


class UnknownSignal(CoreError):
    """A signal name that the catalog does not hold."""

    def __init__(self, name, where=""):
        self.name = name
        self.where = where
        CoreError.__init__(self, "{}unknown signal '{}'".format(where, name))


class ModeError(CoreError):
    """A mode event that the transition table does not allow."""


class TraceError(CoreError):
    """A malformed trace; the message names the line."""


class TableError(CoreError):
    """A rule table whose structure does not follow the format; names the rule."""
