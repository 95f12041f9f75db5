"""Errors that carry a message fit to show a user as is (one line each)."""


class AutotuneError(Exception):
    """Bad input or state: the message names what is wrong and what was expected."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = list(details or [])


class ConfigError(AutotuneError):
    """The tune configuration is invalid; ``details`` holds one line per wrong field."""
