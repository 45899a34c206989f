"""PNG figures, written atomically like every other output."""

from __future__ import annotations

import io
from pathlib import Path

from effnet.core.errors import UsageError
from effnet.core.fileio import atomic_write


def pyplot():
    """matplotlib's pyplot on the Agg backend: no display is needed (or wanted) to write PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Render a matplotlib figure to PNG and write it atomically; closes the figure.

    The PNG is rendered before the target is touched, so a directory or an unwritable path
    fails with a clear error and nothing half-written."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))


def check_writable(path: str | Path, flag: str) -> None:
    """Fail before long work, not after it, when ``path`` cannot be written as a file."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {target} is a directory; give a file name")
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{flag} {target}: {parent} is not a directory")
