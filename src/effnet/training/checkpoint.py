"""Resume state, written so that a crash at any moment leaves the previous state intact."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from effnet.errors import UsageError

STATE_FILE = "state.pt"


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
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(run: Path, state: dict) -> None:
    atomic_write(run / STATE_FILE, lambda f: torch.save(state, f))


def load_state(run: Path) -> dict:
    path = run / STATE_FILE
    if not path.is_file():
        raise UsageError(f"{run}: nothing to resume (no {STATE_FILE}); run without --resume to start")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path}: unreadable resume state ({exc})") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
