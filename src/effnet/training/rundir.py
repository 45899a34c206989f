"""The run directory: what makes a folder a run, who may write to it, and what is in it.

A folder becomes a run when its ``config.json`` is written, and that happens last, after the
first resume state: a run killed (or out of disk) while starting leaves no ``config.json``, so
the same ``effnet train`` simply starts it again, and ``--resume`` can never find a config
without a state to resume. One process at a time writes to a run (a lock file, released by the
kernel even after ``kill -9``), and temporary files left by a killed save are removed when the
next process takes the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from effnet.core.errors import UsageError
from effnet.core.fileio import atomic_write

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


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
        if not resume and self.is_run():
            raise UsageError(f"{self.path} already holds a run; use --resume to continue it or another --out")

    def lock(self) -> None:
        """Take the run for this process, or say which process has it; then sweep up the
        temporary files that saves killed midway left behind."""
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the process's life)
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
        for stale in self.path.glob(".*.tmp"):  # atomic_write's temporaries (see core.fileio)
            stale.unlink(missing_ok=True)

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
