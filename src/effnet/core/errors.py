"""Errors that describe expected failures. The CLI prints them as one line without a traceback:
bad input exits 2, a run that failed after it started exits 1."""


class EffnetError(Exception):
    """An expected failure whose message says what and where; ``exit_code`` is the CLI's."""

    exit_code = 1


class UsageError(EffnetError, ValueError):
    """Bad input from the user: an argument, a file, a name. The message says what and where."""

    exit_code = 2


class RunError(EffnetError, RuntimeError):
    """Work that started and could not finish (diverged training, an export that does not
    reproduce the model, a full disk); nothing half-written is left behind."""

    exit_code = 1


class WeightsError(UsageError):
    """A weights file that cannot be used: unreadable, unsafe, or not matching the model."""


class MissingExtra(UsageError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, module: str):
        super().__init__(f"this needs {module}, which is not installed: pip install 'effnet[{extra}]'")
        self.extra, self.module = extra, module


class EffnetWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as one line)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries' messages can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
