"""Find every image file that cannot be used, with the reason, before training touches it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from effnet.datasets.folder import IMAGE_SUFFIXES
from effnet.images import ImageDecodeError, load_rgb


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
