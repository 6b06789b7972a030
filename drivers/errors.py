"""The drivers' exception hierarchy."""


class DriverError(Exception):
    """Base of every error a driver reports to a person."""


class CoseError(DriverError):
    """A COSE message that is malformed or fails its MAC."""


class KeyFileError(DriverError):
    """A key file that is missing, malformed or too open."""
