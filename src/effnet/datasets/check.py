"""Find every image file that cannot be used, with the reason, before training touches it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from effnet.core.errors import UsageError
from effnet.datasets.folder import IGNORED_NAMES, IMAGE_SUFFIXES
from effnet.datasets.images import ImageDecodeError, load_rgb


@dataclass
class CheckReport:
    good: list[str] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)  # [{"path", "reason"}]

    def to_dict(self) -> dict:
        return {"bad": self.bad, "good": len(self.good)}


def check_files(paths: list[str], progress: bool = False) -> CheckReport:
    """Decode every file fully (truncation shows only then); sorts them into good and bad."""
    from tqdm import tqdm

    report = CheckReport()
    for path in tqdm(paths, desc="checking images", unit="img", disable=not progress, leave=False):
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in IMAGE_SUFFIXES:
            report.bad.append({"path": path, "reason": f"not an image file (suffix {suffix or 'none'!r})"})
            continue
        try:
            load_rgb(path)
        except ImageDecodeError as exc:
            report.bad.append({"path": path, "reason": exc.reason})
        else:
            report.good.append(path)
    return report


def _special_file_reason(path: str) -> str | None:
    """Why a path that is not a plain file cannot be read as an image (None for plain files)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)"
    except OSError as exc:  # ELOOP: a symbolic link loop; EACCES
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"is {kind}, not an image file"


def _empty_class_folders(root: Path) -> list[str]:
    """Class folders with no files: ``effnet train`` refuses them (class indices depend on them)."""
    trees = [root / name for name in ("train", "val", "test") if (root / name).is_dir()] or [root]
    empty = []
    for tree in trees:
        for folder in sorted(p for p in tree.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not any(f.is_file() for f in folder.rglob("*")):
                empty.append(str(folder))
    return empty


def check_tree(path: str | os.PathLike, progress: bool = False) -> CheckReport:
    """Every entry under ``path`` (or ``path`` itself): images that do not decode, files that are
    not images, broken or looping symbolic links, pipes and devices, and empty class folders,
    each with its reason. Symbolic links to directories are not followed (they could loop)."""
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise UsageError(f"{root}: no such file or directory")
    special: list[dict] = []
    files: list[str] = []
    entries = [str(root)] if not root.is_dir() else []
    if root.is_dir():
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in dirs:
                if os.path.islink(os.path.join(folder, name)):
                    special.append({"path": os.path.join(folder, name),
                                    "reason": "symbolic link to a directory, not followed"})  # fmt: skip
            entries.extend(os.path.join(folder, n) for n in sorted(names) if n not in IGNORED_NAMES)
    for entry in entries:
        reason = _special_file_reason(entry)
        if reason:
            special.append({"path": entry, "reason": reason})
        elif not os.path.basename(entry).startswith("."):
            files.append(entry)
    report = check_files(files, progress=progress)
    if root.is_dir():
        reason = "empty class folder; effnet train refuses it (class indices depend on it)"
        special.extend({"path": folder, "reason": reason} for folder in _empty_class_folders(root))
    report.bad = sorted(report.bad + special, key=lambda bad: bad["path"])
    return report
