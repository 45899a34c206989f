"""Verification pairs in LFW's format: ``people/<name>/<name>_0001.jpg`` and a ``pairs.txt`` whose
first line is "<folds> <pairs per fold>", then per fold that many matched lines ("name n1 n2")
and as many mismatched ones ("name1 n1 name2 n2"). Every named image must exist."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from effnet.core.errors import UsageError

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Pairs:
    first: list[Path]
    second: list[Path]
    same: list[bool]
    fold: list[int]

    def __len__(self) -> int:
        return len(self.same)


def person_image(people: Path, name: str, number: int, where: str) -> Path:
    folder = people / name
    if not folder.is_dir():
        raise UsageError(f"{where}: no person {name!r} in {people}")
    for suffix in SUFFIXES:
        path = folder / f"{name}_{number:04d}{suffix}"
        if path.is_file():
            return path
    raise UsageError(f"{where}: {folder}/{name}_{number:04d}.jpg does not exist")


def _int(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not an image number") from None
    if value < 1:
        raise UsageError(f"{where}: image numbers start at 1, got {value}")
    return value


def read_pairs(pairs_file: str | os.PathLike, people: str | os.PathLike | None = None) -> Pairs:
    """The pairs of ``pairs_file``; images are looked up in ``people`` (default: the ``people/``
    folder beside the pairs file)."""
    path = Path(pairs_file)
    people = Path(people) if people else path.parent / "people"
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--pairs {path}: unreadable ({exc})") from None
    if not lines:
        raise UsageError(f"--pairs {path}: empty")
    header = lines[0]
    if len(header) == 2 and all(v.lstrip("+-").isdigit() for v in header):
        folds, per_fold = int(header[0]), int(header[1])
        if folds < 1 or per_fold < 1:
            raise UsageError(f"--pairs {path}:1: the header {' '.join(header)!r} must be two positive integers "
                             "(folds, pairs per fold), as in LFW's '10 300'")  # fmt: skip
        body = lines[1:]
        if len(body) != folds * 2 * per_fold:
            raise UsageError(f"--pairs {path}: the header promises {folds} x 2 x {per_fold} pairs, found {len(body)}")
    else:
        folds, per_fold, body = 1, len(lines), lines  # no header: one fold
    pairs = Pairs([], [], [], [])
    for i, fields in enumerate(body):
        where = f"{path}:{i + 2 if body is not lines else i + 1}"
        if len(fields) == 3:
            name, a, b = fields
            first, second = (person_image(people, name, _int(n, where), where) for n in (a, b))
            same = True
        elif len(fields) == 4:
            first = person_image(people, fields[0], _int(fields[1], where), where)
            second = person_image(people, fields[2], _int(fields[3], where), where)
            same = fields[0] == fields[2]
        else:
            raise UsageError(f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(fields)!r}")
        pairs.first.append(first)
        pairs.second.append(second)
        pairs.same.append(same)
        pairs.fold.append(min(i // (2 * per_fold), folds - 1))
    return pairs
