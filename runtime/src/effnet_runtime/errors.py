"""The one error the runtime's commands turn into a one-line message and exit code 2."""


class RuntimeUsageError(Exception):
    """A file, an argument or an image that cannot be used, named in the message."""
