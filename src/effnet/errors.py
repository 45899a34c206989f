"""Errors that describe bad input. The CLI prints them without a traceback and exits 2."""


class UsageError(ValueError):
    """Bad input from the user: an argument, a file, a name. The message says what and where."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries' messages can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WeightsError(UsageError):
    """A weights file that cannot be used: unreadable, unsafe, or not matching the model."""
