"""Writing files so that readers, and a run resumed after kill -9, never see half of one."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's files are owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C (SIGINT) waits until the block is done, then takes effect as usual.

    An interrupt in the middle of a writer such as torch.save's zip writer does not just stop
    it: the writer's own clean-up then fails and replaces the KeyboardInterrupt with an error of
    its own. Deferring the signal for the few milliseconds of a save keeps Ctrl-C a clean stop."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread, which is where SIGINT lands
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if previous is signal.default_int_handler or previous is None:
                raise KeyboardInterrupt
            if previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
            elif callable(previous):
                previous(signal.SIGINT, None)


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename over ``path``.

    rename is atomic on POSIX, so readers (and a resumed run after ``kill -9``) see either the
    old file or the new one, never half of each."""
    with interrupts_deferred():
        _write_and_rename(path, write)


def _write_and_rename(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
