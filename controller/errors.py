"""The host-side controller's exception hierarchy.

Every message is written for the person who reads it at 3 a.m.: it names
the file, line, key or port, and says what to do.
"""


class CabguardError(Exception):
    """Base of every error the host-side controller reports to a person."""


class UsageError(CabguardError):
    """A command line that cannot be carried out as given."""


class JournalError(CabguardError):
    """A journal that cannot be opened, continued or written."""
