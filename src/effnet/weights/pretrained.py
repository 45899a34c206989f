"""Pretrained weights by tag: fetched once, checked, converted to effnet's format and cached.

``load_pretrained("efficientnet_b3.tf_ns_jft_in1k")`` downloads the published file on first use
(a progress bar), checks its sha256, renames its keys (``convert``), builds the model the way
the weights need (padding, BN eps, classes, the publisher's eval transform) and saves it as an
effnet safetensors file whose metadata says where it came from (URL, hashes, licence, published
accuracy). Every later use loads that file: no network, no conversion.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from torch import nn

from effnet.core.errors import UsageError, WeightsError
from effnet.models.efficientdet_detector import create_efficientdet
from effnet.models.registry import build_model
from effnet.models.registry import create_model as build
from effnet.weights import cache
from effnet.weights.catalog import METRICS_FROM, WeightsEntry, get_entry
from effnet.weights.convert import convert_state_dict
from effnet.weights.download import check_file, discard, fetch_source
from effnet.weights.effdet import check_efficientdet_fits, convert_effdet_state_dict
from effnet.weights.io import load, load_weights, read_metadata, read_state_dict, save


def imagenet_classes() -> list[str]:
    text = resources.files("effnet").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


def coco_classes() -> list[str]:
    """COCO's 90 category ids' names, in id order ("N/A" for the 10 ids the data never uses)."""
    text = resources.files("effnet").joinpath("data/coco_classes.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


def class_names(entry: WeightsEntry) -> list[str]:
    if entry.classes == "imagenet-1k":
        return imagenet_classes()
    if entry.classes == "coco-90":
        return coco_classes()
    try:  # Google's ImageNet-21k label order, as timm publishes it with its 21k heads
        from timm.data import ImageNetInfo
    except ImportError:
        raise UsageError(
            f"{entry.tag} has an ImageNet-21k head, whose class names come with timm: pip install timm"
        ) from None
    info = ImageNetInfo("imagenet-21k-goog")
    return [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]


@dataclass(frozen=True)
class Fetched:
    tag: str
    path: Path
    downloaded: bool  # False: it was in the cache already


def fetch(name: str, *, force: bool = False) -> Fetched:
    """Make sure the cache holds ``name`` (a tag, alias or member name); download if needed."""
    entry = get_entry(name)
    if not force and (path := cache.cached(entry.tag)):
        return Fetched(entry.tag, path, False)
    with cache.lock(entry.tag):
        if not force and (path := cache.cached(entry.tag)):  # another process fetched it meanwhile
            return Fetched(entry.tag, path, False)
        workdir = cache.download_dir(entry.tag)
        with cache.writable():
            source, origin = fetch_source(entry, workdir)  # a cut-off download stays in workdir, to resume
            try:
                path = _convert_into_cache(entry, source, origin, previous=cache.read_record(entry.tag))
            finally:  # converted, or refused (a wrong hash): the download is not kept either way
                if entry.kind != "package":
                    discard(workdir)
        return Fetched(entry.tag, path, True)


def import_file(name: str, file: str | os.PathLike) -> Fetched:
    """The air-gapped path: a file downloaded elsewhere, checked and converted into the cache.
    It may be the published file (hash-checked where a hash is known) or, for a hub tag, timm's
    older release file (its name's hash prefix is checked)."""
    entry = get_entry(name)
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"{file}: no such file to import as {entry.tag}")
    expected = None
    if entry.kind == "hub" and file.suffix != ".safetensors":
        if entry.release_url is None:
            raise UsageError(f"{file}: {entry.tag} is published only as the hub's model.safetensors ({entry.url})")
        expected = entry.release_url.rsplit("-", 1)[1].split(".")[0]
    with cache.lock(entry.tag), cache.writable():
        return Fetched(entry.tag, _convert_into_cache(entry, file, str(file.resolve()), expected=expected), True)


def _convert_into_cache(entry, source: Path, origin: str, *, expected=None, previous=None) -> Path:
    published = expected is not None or entry.hash_known
    source_sha = check_file(entry, source, origin, expected)
    if not published and previous is not None and previous.source_sha256 != source_sha:
        raise WeightsError(
            f"{origin}: sha256 {source_sha} differs from {previous.source_sha256}, recorded when {entry.tag} "
            f"was first downloaded ({previous.created}); if the publisher changed the file, "
            f"run `effnet weights remove {entry.tag}` and fetch it again"
        )
    model = convert(entry, source, origin)
    provenance = {
        "tag": entry.tag,
        "url": entry.url,
        "downloaded_from": origin,
        "source_sha256": source_sha,
        "source_hash_published": published,
        "licence": entry.licence,
        "top1": entry.top1,
        "top5": entry.top5,
        "coco_map": entry.coco_map,
        "metrics_from": METRICS_FROM[entry.kind],
    }
    path = cache.weights_file(entry.tag)
    save(model, path, extra_metadata={"pretrained": json.dumps(provenance, sort_keys=True)})
    cache.Record(
        tag=entry.tag,
        size=path.stat().st_size,
        sha256=cache.sha256_of(path),
        source_url=origin,
        source_sha256=source_sha,
        source_hash_published=published,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    ).write()  # last: a file without its record is an interrupted conversion, never trusted
    return path


def convert(entry: WeightsEntry, source: Path, origin: str) -> nn.Module:
    """The published file as an effnet model built the way its weights need."""
    try:
        if entry.layout == "effdet":
            state = convert_effdet_state_dict(read_state_dict(source))
        else:
            state = convert_state_dict(read_state_dict(source), entry.layout)
    except WeightsError as exc:
        raise WeightsError(f"{origin}: {exc} (is this the file of {entry.tag}?)") from None
    if entry.task == "detection":
        model = create_efficientdet(entry.model, num_classes=entry.num_classes, class_names=class_names(entry),
                                    image_size=entry.preprocessing.resolution)  # fmt: skip
        # a file saved without BN's batch counters (they count training steps, not what it computes)
        state = {**{k: v for k, v in model.net.state_dict().items() if k.endswith("num_batches_tracked")}, **state}
        try:
            check_efficientdet_fits(state, model.net, entry.model)
        except WeightsError as exc:
            raise WeightsError(f"{origin}: {exc} (is this the file of {entry.tag}?)") from None
    else:
        model = build(entry.model, class_names=class_names(entry), **entry.build_kwargs)
    model.preprocessing = entry.preprocessing
    target = model.net if entry.task == "detection" else model  # a detector's file holds its network's keys
    load_weights(target, state, origin=f"{origin} ({entry.tag})")
    return model.eval()


def load_pretrained(name: str) -> nn.Module:
    """The model of a tag (``efficientnet_b3.tf_ns_jft_in1k``), alias (``lite0``) or member
    name (its default tag), in eval mode, with class names and its publisher's eval transform."""
    return load(fetch(name).path)


def pretrained_info(path: str | os.PathLike) -> dict | None:
    """The provenance a converted file carries (None for other files)."""
    text = read_metadata(path).get("pretrained")
    return json.loads(text) if text else None


def create_model(name: str | None = None, *, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """``effnet.create_model``: as ``effnet.models.create_model``, plus ``pretrained``: True for
    the member's default tag, or a tag. With a ``num_classes`` other than the weights', the
    classifier starts fresh (as timm does); the model is in train mode, ready to fine-tune."""
    if not pretrained:
        return build(name, **kwargs)
    tag = name if pretrained is True else pretrained
    if tag is None:
        raise UsageError("pretrained=True needs a model name")
    entry = get_entry(tag)
    if name is not None and name != entry.model:
        raise UsageError(f"pretrained weights {entry.tag} are for {entry.model}, not {name}")
    model = load_pretrained(entry.tag)
    allowed = {"num_classes", "class_names", "drop_path_rate", "dropout", "bn_momentum"}
    if unknown := sorted(set(kwargs) - allowed):
        raise UsageError(
            f"with pretrained weights the architecture is the weights' own; cannot also set {', '.join(unknown)}"
        )
    num_classes = kwargs.pop("num_classes", None)
    names = kwargs.pop("class_names", None)
    if num_classes is not None and num_classes != model.config.num_classes or names is not None:
        model.reset_classifier(num_classes or len(names), names)
    if kwargs:
        model = _with_regularisation(model, **kwargs)
    return model.train()


def _with_regularisation(model: nn.Module, **kwargs) -> nn.Module:
    """The same weights in a model rebuilt with other dropout / drop-path / BN momentum."""
    config = replace(model.config, **kwargs)
    fresh = build_model(config, class_names=model.class_names, preprocessing=model.preprocessing)
    return load_weights(fresh, model.state_dict(), origin="pretrained weights")
