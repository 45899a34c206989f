"""Silencing libraries that write to the process's file descriptors from native code.

LiteRT's converter and ExecuTorch's runtime log from C++ (absl, cpuinfo) straight to file
descriptors 1 and 2, where Python's ``redirect_stdout`` cannot reach, and some bindings through
``sys.stderr``: the text would land in the middle of ``--json`` output on stdout.
``native_output_captured`` points both descriptors and both Python streams elsewhere for the
duration of a block; ``captured.text`` holds what was written, so an error can still show it."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading

# fds 1 and 2 belong to the whole process: two threads redirecting at once would each restore
# the other's redirection (a server's workers open engines from their own threads)
_LOCK = threading.RLock()


class Captured:
    text: str = ""


@contextlib.contextmanager
def native_output_captured():
    """Everything written to fds 1 and 2 inside the block goes to ``Captured.text`` instead."""
    python_level = io.StringIO()  # some bindings write through sys.stderr rather than fd 2
    with _LOCK, _redirected() as captured:
        with contextlib.redirect_stdout(python_level), contextlib.redirect_stderr(python_level):
            yield captured
    captured.text += python_level.getvalue()


@contextlib.contextmanager
def _redirected():
    captured = Captured()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
