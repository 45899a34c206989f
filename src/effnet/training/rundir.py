"""The run directory: what makes a folder a run, who may write to it, and what is in it.

A folder becomes a run when its ``config.json`` is written, and that happens last, after the
first resume state: a run killed (or out of disk) while starting leaves no ``config.json``, so
the same ``effnet train`` simply starts it again, and ``--resume`` can never find a config
without a state to resume. One process at a time writes to a run (a lock file, released by the
kernel even after ``kill -9``), and temporary files left by a killed save are removed when the
next process takes the lock: only the run's own (``.state.pt.x1y2z3w4.tmp``), and only in a
folder that is a run, that held a run's lock, or that this process created.

A folder with a ``config.json`` but no ``state.pt`` (the state removed, or a run from a version
that wrote its settings first) never reached its first checkpoint: a plain start restarts it and
``--resume`` starts it from scratch with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import sys
from pathlib import Path

from effnet.core.errors import UsageError
from effnet.core.fileio import atomic_write

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
STATE_FILE = "state.pt"  # training.checkpoint's resume state
# What a run writes with atomic_write, whose temporaries are ".NAME.RANDOM.tmp" (see core.fileio).
RUN_FILES = (CONFIG_FILE, STATE_FILE, "best.safetensors", "last.safetensors", "metrics.csv", "curves.png",
             "skipped_images.json", "teacher_logits.safetensors")  # fmt: skip
STALE_TEMPORARY = re.compile(r"\.(" + "|".join(map(re.escape, RUN_FILES)) + r")\.[a-z0-9_]+\.tmp")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = None
        self._created = False  # this process made the folder: a failed start removes it again

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def never_checkpointed(self) -> bool:
        """A run's settings without a resume state: a run that never reached its first checkpoint."""
        return self.is_run() and not (self.path / STATE_FILE).is_file()

    def read_config(self) -> dict:
        try:
            saved = json.loads(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{self.config_path}: unreadable run settings ({exc})") from None
        if not isinstance(saved, dict):
            raise UsageError(f"{self.config_path}: not a JSON object of run settings")
        return saved

    def check(self, resume: bool) -> None:
        """A new run needs a folder that holds none; a resumed one needs a run."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path} is a file, not a run directory")
        if resume and not self.is_run():
            raise UsageError(f"{self.path}: nothing to resume (no {CONFIG_FILE}); run without --resume to start")
        if not resume and self.is_run() and not self.never_checkpointed():
            raise UsageError(f"{self.path} already holds a run; use --resume to continue it or another --out")

    def lock(self) -> None:
        """Take the run for this process, or say which process has it; then sweep up the
        temporary files that saves killed midway left behind."""
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILE
        ours = self._created or self.is_run() or lock_path.exists()  # a run's folder, not any folder
        handle = self._open_lock(lock_path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UsageError(f"{self.path} is in use by {owner}; wait for it to finish or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"effnet process {os.getpid()}")
        handle.flush()
        self._lock = handle
        if ours:
            for stale in self.path.iterdir():
                if STALE_TEMPORARY.fullmatch(stale.name):
                    stale.unlink(missing_ok=True)

    @staticmethod
    def _open_lock(path: Path):
        """The lock file, opened without following a link: a symlink or a hard link there would
        have another file truncated, and a FIFO would block."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            kind = "a symbolic link" if path.is_symlink() else f"not usable ({exc.strerror})"
            raise UsageError(f"{path} is {kind}; the run's lock must be a plain file: remove it") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)
            kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a plain file"
            raise UsageError(f"{path} is {kind}; the run's lock must be a plain file: remove it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "r+")  # noqa: SIM115 (held open for the process's life)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    def abandon(self) -> None:
        """A start that failed before the run existed leaves nothing behind: the lock, and the
        folder too when this process created it and nothing else was written."""
        if self._lock is None or self.is_run():
            self.unlock()
            return
        self.unlock()
        (self.path / LOCK_FILE).unlink(missing_ok=True)
        if self._created and not any(self.path.iterdir()):
            self.path.rmdir()

    def write_json(self, name: str, payload) -> None:
        text = json.dumps(payload, indent=2).encode()
        atomic_write(self.path / name, lambda f: f.write(text))

    def write_config(self, config: dict) -> None:
        self.write_json(CONFIG_FILE, config)

    def report_skipped(self, skipped: list[dict]) -> None:
        if not skipped:
            return
        self.write_json("skipped_images.json", skipped)
        first = skipped[0]
        print(
            f"effnet: skipping {len(skipped)} unusable images (first: {first['path']}: {first['reason']}); "
            f"the list is in {self.path / 'skipped_images.json'}",
            file=sys.stderr,
        )
