"""Writing files so that readers, and a run resumed after kill -9, never see half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp's files are owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename over ``path``.

    rename is atomic on POSIX, so readers (and a resumed run after ``kill -9``) see either the
    old file or the new one, never half of each."""
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
