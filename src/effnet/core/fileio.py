"""Writing files so that readers, and a run resumed after kill -9, never see half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path

from effnet.core.errors import RunError, UsageError


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


def refuse_overwrite(output: str | os.PathLike, inputs, what: str = "--out") -> None:
    """Refuse (UsageError) to write ``output`` when it is one of ``inputs``: the same path, the
    same file under another name (a hard link or a symbolic link), or one that resolves to it.
    ``inputs`` may hold None and names that are not files (a pretrained tag), which are skipped."""
    out = Path(output)
    for source in inputs:
        if source is None:
            continue
        try:
            same = os.path.samefile(out, source)
        except OSError:  # one of them does not exist (yet): compare where the names lead
            same = out.resolve() == Path(source).resolve()
        if same:
            raise UsageError(f"{what} {output} is the input {source}: writing it would destroy it; give another file")


def os_error_behind(exc: BaseException | None) -> OSError | None:
    """The OSError that ``exc`` is or replaced: torch.save's writer, for one, turns a full disk
    into a RuntimeError of its own whose context is the real error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk, the quota or the file-size limit is full


@contextlib.contextmanager
def write_failure_is_run_error(path: str | os.PathLike):
    """A write of ``path`` that fails on the file system (directly, or behind a library's own
    error) becomes a one-line RunError naming the file: "disk full while writing PATH"."""
    try:
        yield
    except Exception as exc:
        cause = os_error_behind(exc)
        if cause is None or isinstance(exc, UsageError | RunError):
            raise
        reason = "disk full" if cause.errno in NO_ROOM else "could not write"
        raise RunError(f"{reason} while writing {path} ({cause.strerror or cause})") from exc
