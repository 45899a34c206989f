"""The local cache of converted pretrained weights: where it is, what is in it, and whether a
cached file is still the one that was written.

Layout under ``EFFNET_HOME`` (default ``$XDG_CACHE_HOME/effnet``, else ``~/.cache/effnet``)::

    weights/<tag>.safetensors   the converted model (effnet's format, provenance in its metadata)
    weights/<tag>.json          its record: size and sha256 of that file, and of the source file
    downloads/<tag>/            a download in progress (huggingface_hub resumes from here)
    locks/<tag>.lock            held while a process fetches the tag (filelock)

A cached file is trusted only with its record beside it (the record is written last, so a file
without one is an interrupted conversion). Every load compares the file's size with the record,
which costs one ``stat``; ``effnet weights verify`` compares the sha256. torch.hub's cache never
looks at a file again once it is there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from effnet.core.errors import UsageError, WeightsError
from effnet.core.fileio import atomic_write
from effnet.weights.catalog import list_tags

HOME_ENV = "EFFNET_HOME"
# Errors that mean the cache folder cannot take files at all: a usage problem (exit 2), not a bug.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def home() -> Path:
    if value := os.environ.get(HOME_ENV):
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "effnet"


def weights_file(tag: str) -> Path:
    return home() / "weights" / f"{tag}.safetensors"


def record_file(tag: str) -> Path:
    return home() / "weights" / f"{tag}.json"


def download_dir(tag: str) -> Path:
    return home() / "downloads" / tag


@dataclass(frozen=True)
class Record:
    """What was written for a tag, so that a changed file is noticed."""

    tag: str
    size: int  # of the converted file
    sha256: str  # of the converted file
    source_url: str  # where the source file came from (a mirror's URL, or the imported file)
    source_sha256: str  # of the source file, as downloaded
    source_hash_published: bool  # False: no published hash existed; this one was recorded at first download
    created: str  # UTC, ISO 8601

    def write(self) -> None:
        text = json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"
        atomic_write(record_file(self.tag), lambda f: f.write(text.encode()))


def read_record(tag: str) -> Record | None:
    path = record_file(tag)
    try:
        return Record(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        hint = f"run `effnet weights fetch --force {tag}`"
        raise WeightsError(f"{path}: the cache record is damaged ({exc}); {hint}") from None


def cached(tag: str) -> Path | None:
    """The converted file of ``tag`` if the cache holds a complete one. Its size must be the
    recorded size: a file truncated or replaced after it was written is refused here."""
    record, path = read_record(tag), weights_file(tag)
    if record is None or not path.is_file():
        return None
    size = path.stat().st_size
    if size != record.size:
        raise WeightsError(
            f"{path}: the cached weights changed after they were written (size {size:,} bytes, recorded "
            f"{record.size:,}); run `effnet weights fetch --force {tag}`"
        )
    return path


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(tag: str) -> tuple[bool, str]:
    """(ok, what was found) for a cached tag: its sha256 against the record."""
    record, path = read_record(tag), weights_file(tag)
    if record is None or not path.is_file():
        return False, "not cached"
    found = sha256_of(path)
    if found != record.sha256:
        return False, f"sha256 {found[:16]}... differs from the recorded {record.sha256[:16]}...: the file was changed"
    return True, f"sha256 {found[:16]}... as recorded"


def remove(tag: str) -> bool:
    """Drop a tag's file and record; True if there was something to drop."""
    found = False
    for path in (record_file(tag), weights_file(tag)):  # the record first: a half-removed entry is "not cached"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            found = True
    return found


def cached_tags() -> list[str]:
    folder = home() / "weights"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


@contextlib.contextmanager
def writable(what: str = "the weights cache"):
    """An OSError that says the cache folder cannot take files becomes one line (exit 2)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in UNWRITABLE:
            raise
        reason = "it is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "it is not writable"
        raise UsageError(
            f"cannot write {what} in {home()}: {reason} ({exc.strerror}); "
            f"free space or set {HOME_ENV} to another folder"
        ) from None


@contextlib.contextmanager
def lock(tag: str):
    """One process at a time fetches a tag; the others wait, then find it cached."""
    from filelock import FileLock

    folder = home() / "locks"
    with writable():
        folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{tag}.lock")):
        yield


def describe(pattern: str | None = None) -> list[dict]:
    """One row per tag for ``effnet weights list``: what it is, what it scores, and what the cache
    holds of it. ``hash`` says whether the source file's sha256 is published ("published") or was
    recorded at its first download here ("recorded"), or neither yet ("unknown until fetched")."""
    rows = []
    for entry in list_tags(pattern):
        record = read_record(entry.tag)
        hash_state = "published" if entry.hash_known else "recorded" if record is not None else "unknown until fetched"
        rows.append(
            {
                "tag": entry.tag,
                "model": entry.model,
                "default": entry.default,
                "aliases": list(entry.aliases),
                "top1": entry.top1,
                "top5": entry.top5,
                "task": entry.task,
                "coco_map": entry.coco_map,
                "resolution": entry.preprocessing.resolution,
                "params": entry.params,
                "size_mb": round(4 * entry.params / 1e6, 1),  # float32
                "licence": entry.licence,
                "source": entry.kind,
                "url": entry.url,
                "hash": hash_state,
                "cached": record is not None and weights_file(entry.tag).is_file(),
            }
        )
    return rows
