"""Resume state, written so that a crash at any moment leaves the previous state intact."""

from __future__ import annotations

from pathlib import Path

import torch

from effnet.core.errors import UsageError, first_line
from effnet.core.fileio import atomic_write
from effnet.training.rundir import STATE_FILE


def save_state(run: Path, state: dict) -> None:
    atomic_write(run / STATE_FILE, lambda f: torch.save(state, f))


def load_state(run: Path) -> dict:
    path = run / STATE_FILE
    if not path.is_file():
        raise UsageError(f"{run}: nothing to resume (no {STATE_FILE}); run without --resume to start")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path}: unreadable resume state ({first_line(exc)})") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
