"""The drivers' exception hierarchy."""


class DriverError(Exception):
    """Base of every error a driver reports to a person."""
