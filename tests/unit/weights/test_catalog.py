"""The weights catalog against its oracles: torchvision's Weights enums and timm's pretrained
configs, row by row, and complete (every checkpoint they publish for an effnet member is a tag)."""

import math
import re

import pytest
import timm
import torchvision
from timm.data import create_transform, resolve_data_config
from timm.models import get_pretrained_cfg

import effnet
from effnet.models.efficientdet_specs import PUBLISHED
from effnet.models.flops import count_params
from effnet.models.registry import list_models, resolve_config
from effnet.weights.catalog import ALIASES, CATALOG, DEFAULTS, get_entry

TV_ENUMS = {
    name: getattr(torchvision.models, name)
    for name in dir(torchvision.models)
    if name.startswith("EfficientNet_") and name.endswith("_Weights")
}


def _tv_model(enum_name: str) -> str:
    # EfficientNet_B3_Weights -> efficientnet_b3; EfficientNet_V2_S_Weights -> efficientnetv2_s
    member = enum_name.removeprefix("EfficientNet_").removesuffix("_Weights").lower()
    return f"efficientnetv2_{member[3:]}" if member.startswith("v2_") else f"efficientnet_{member}"


TV_WEIGHTS = [(enum_name, w) for enum_name, enum in TV_ENUMS.items() for w in enum]


@pytest.mark.parametrize("enum_name, weights", TV_WEIGHTS, ids=[f"{n}.{w.name}" for n, w in TV_WEIGHTS])
def test_every_torchvision_file_is_a_tag_equal_to_its_enum(enum_name, weights):
    suffix = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}[weights.name]
    entry = CATALOG[f"{_tv_model(enum_name)}.{suffix}"]
    assert entry.url == weights.url
    assert re.search(rf"-{entry.sha256}\.pth$", weights.url), "the hash checked is the prefix in the file name"
    transform = weights.transforms()
    p = entry.preprocessing
    assert (p.resolution, p.resize) == (transform.crop_size[0], transform.resize_size[0])
    assert p.interpolation == transform.interpolation.value
    assert list(p.mean) == list(transform.mean) and list(p.std) == list(transform.std)
    metrics = weights.meta["_metrics"]["ImageNet-1K"]
    assert (entry.top1, entry.top5) == (metrics["acc@1"], metrics["acc@5"])
    assert entry.params == weights.meta["num_params"]
    assert entry.num_classes == len(weights.meta["categories"])


def _timm_tags() -> list[str]:
    """timm's TF ports of effnet's members (CondConv and EdgeTPU variants are other networks)."""
    ours = set(list_models())
    return [n for n in timm.list_pretrained("tf_efficientnet*") if n.split(".")[0].removeprefix("tf_") in ours]


TIMM_TAGS = _timm_tags()


def test_the_timm_oracle_is_the_expected_size():
    assert len(TIMM_TAGS) == 58  # timm 1.0.x: 64 tf_efficientnet* tags less 3 CondConv, 3 EdgeTPU


@pytest.mark.parametrize("timm_name", TIMM_TAGS)
def test_every_timm_tf_port_is_a_tag_equal_to_its_pretrained_cfg(timm_name):
    arch, tag = timm_name.split(".")
    entry = CATALOG[f"{arch.removeprefix('tf_')}.tf_{tag}"]
    cfg = get_pretrained_cfg(timm_name).to_dict()
    assert entry.hub_repo == cfg["hf_hub_id"] == f"timm/{timm_name}"
    assert entry.licence.lower() == cfg["license"]
    assert entry.num_classes == cfg["num_classes"]
    side = cfg.get("test_input_size", cfg["input_size"])[1]
    p = entry.preprocessing
    assert p.resolution == side
    assert p.resize == math.floor(side / cfg["crop_pct"])
    assert p.interpolation == cfg["interpolation"]
    assert p.mean == tuple(cfg["mean"]) and p.std == tuple(cfg["std"])
    if cfg.get("url"):
        assert entry.release_url == cfg["url"]
    assert (entry.padding, entry.bn_eps) == ("same", 1e-3)  # TF's SAME padding and BN eps


@pytest.mark.parametrize("timm_name", ["tf_efficientnet_b3.ns_jft_in1k", "tf_efficientnetv2_s.in21k_ft_in1k"])
def test_timm_transform_resizes_and_crops_as_the_entry_says(timm_name):
    # timm's own transform, as it evaluates: the Resize and CenterCrop sizes are the entry's.
    arch, tag = timm_name.split(".")
    entry = CATALOG[f"{arch.removeprefix('tf_')}.tf_{tag}"]
    config = resolve_data_config(pretrained_cfg=get_pretrained_cfg(timm_name).to_dict(), use_test_size=True)
    steps = create_transform(**config).transforms
    resize = next(t for t in steps if type(t).__name__ == "Resize")
    crop = next(t for t in steps if type(t).__name__ == "CenterCrop")
    assert resize.size == entry.preprocessing.resize
    assert crop.size == (entry.preprocessing.resolution,) * 2


@pytest.mark.slow
def test_parameter_counts_are_recounted():
    # EfficientDet's are recounted against effdet's own in tests/unit/models/test_efficientdet.py
    for model, classes in {(e.model, e.num_classes) for e in CATALOG.values() if e.task == "classification"}:
        entry = next(e for e in CATALOG.values() if e.model == model and e.num_classes == classes)
        assert entry.params == count_params(resolve_config(model, num_classes=classes)), entry.tag


def test_every_member_has_one_default_tag_and_aliases_resolve():
    classifiers = {e.model for e in CATALOG.values() if e.task == "classification"}
    members = [m for m in list_models() if m in classifiers]
    assert set(members) == set(DEFAULTS) - set(PUBLISHED) == classifiers
    assert {e.model for e in CATALOG.values() if e.task == "detection"} == set(PUBLISHED) <= set(DEFAULTS)
    assert len(DEFAULTS) == 23 + 14  # B0-B8, L2, Lite0-4, V2 B0-B3/S/M/L/XL; EfficientDet D0-D7x, Lite0-4
    assert get_entry("lite1").tag == ALIASES["lite1"] == "efficientnet_lite1.pypi_in1k"
    assert get_entry("efficientnet_b3").tag == "efficientnet_b3.tv_in1k"
    assert get_entry("efficientnet_b1").tag == "efficientnet_b1.tv2_in1k"  # the better of torchvision's two


def test_unknown_tags_get_suggestions():
    with pytest.raises(effnet.UsageError, match=r"did you mean efficientnet_b3\.tf_ns_jft_in1k"):
        get_entry("efficientnet_b3.tf_ns")
    with pytest.raises(effnet.UsageError, match="effnet weights list"):
        get_entry("resnet50")


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_every_efficientdet_checkpoint_is_effdets_own_row(name):
    """URL, input size and mean/std against effdet's config table (the effdet name is tf_<ours>)."""
    from effdet.config import get_efficientdet_config

    reference = get_efficientdet_config(f"tf_{name}")
    entry = get_entry(name)
    assert entry.tag == f"{name}.tf_coco" and entry.url == reference.url and entry.task == "detection"
    assert entry.preprocessing.resolution == reference.image_size[0] == PUBLISHED[name].image_size
    assert entry.preprocessing.mean == tuple(reference.get("mean", (0.485, 0.456, 0.406)))
    assert entry.preprocessing.std == tuple(reference.get("std", (0.229, 0.224, 0.225)))
    assert entry.url.endswith(f"-{entry.sha256}.pth") and entry.num_classes == reference.num_classes == 90


def test_coco_class_names_are_torchvisions():
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    from effnet.weights.pretrained import coco_classes

    assert coco_classes() == FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:]
