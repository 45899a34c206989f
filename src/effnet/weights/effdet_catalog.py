"""EfficientDet's COCO checkpoints: Google's TF models (google/automl) as ported by effdet and
published on its GitHub releases, one per effnet detector. Each file name ends in the first 8 hex
digits of its sha256, which the download is checked against; the mAP is effdet's own COCO
val2017 evaluation of the port. A test checks every row against effdet's config table (URL,
input size, mean/std); the table itself needs no effdet.
"""

from __future__ import annotations

from effnet.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, Preprocessing
from effnet.weights.entry import WeightsEntry

EFFDET_RELEASES = "https://github.com/rwightman/efficientdet-pytorch/releases/download/v0.1/"


def _effdet(model: str, file: str, coco_map: float, side: int, *, lite: bool = False) -> WeightsEntry:
    mean, std = (LITE_MEAN, LITE_STD) if lite else (IMAGENET_MEAN, IMAGENET_STD)  # Lite: inputs in [-1, 1]
    return WeightsEntry(
        tag=f"{model}.tf_coco",
        model=model,
        kind="release",
        url=EFFDET_RELEASES + file,
        layout="effdet",
        licence="Apache-2.0",
        # letterboxed to side x side (bilinear), as effdet evaluates them
        preprocessing=Preprocessing(side, side, "bilinear", mean, std),
        top1=None,
        top5=None,
        padding="same",
        bn_eps=1e-3,
        classes="coco-90",
        coco_map=coco_map,
        sha256=file.rsplit("-", 1)[1].split(".")[0],
        default=True,
    )


EFFDET_ROWS = [
    _effdet("efficientdet_d0", "tf_efficientdet_d0_34-f153e0cf.pth", 34.2, 512),
    _effdet("efficientdet_d1", "tf_efficientdet_d1_40-a30f94af.pth", 40.1, 640),
    _effdet("efficientdet_d2", "tf_efficientdet_d2_43-8107aa99.pth", 43.4, 768),
    _effdet("efficientdet_d3", "tf_efficientdet_d3_47-0b525f35.pth", 47.1, 896),
    _effdet("efficientdet_d4", "tf_efficientdet_d4_49-f56376d9.pth", 49.2, 1024),
    _effdet("efficientdet_d5", "tf_efficientdet_d5_51-c79f9be6.pth", 51.2, 1280),
    _effdet("efficientdet_d6", "tf_efficientdet_d6_52-4eda3773.pth", 52.0, 1280),
    _effdet("efficientdet_d7", "tf_efficientdet_d7_53-6d1d7a95.pth", 53.1, 1536),
    _effdet("efficientdet_d7x", "tf_efficientdet_d7x-f390b87c.pth", 54.3, 1536),
    _effdet("efficientdet_lite0", "tf_efficientdet_lite0-dfacfc78.pth", 27.1, 320, lite=True),
    _effdet("efficientdet_lite1", "tf_efficientdet_lite1-6dc7ab30.pth", 32.2, 384, lite=True),
    _effdet("efficientdet_lite2", "tf_efficientdet_lite2-86c5d55b.pth", 35.9, 448, lite=True),
    _effdet("efficientdet_lite3", "tf_efficientdet_lite3-506852cb.pth", 39.6, 512, lite=True),
    _effdet("efficientdet_lite4", "tf_efficientdet_lite4-391ddabc.pth", 44.2, 640, lite=True),
]
