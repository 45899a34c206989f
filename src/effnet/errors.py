"""Errors that describe bad input. The CLI prints them without a traceback and exits 2."""


class UsageError(ValueError):
    """Bad input from the user: an argument, a file, a name. The message says what and where."""

    exit_code = 2


class WeightsError(UsageError):
    """A weights file that cannot be used: unreadable, unsafe, or not matching the model."""
