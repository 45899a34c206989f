"""One row of the weights catalog: where a published checkpoint is, how to check it, how its keys
are laid out, under which licence, what it scores, how images must be prepared for it and how the
model must be built to hold it; and the parameter counts those models have (known without
building anything; tests recount them)."""

from __future__ import annotations

from dataclasses import dataclass

from effnet.models.preprocessing import Preprocessing

# Parameters of each member with the 1k head the files carry (and with a 21k head): the size a
# download will have, known without building anything. A test recounts them on the meta device.
PARAMS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet_b8": 87_413_142,
    "efficientnet_l2": 480_309_308,
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568,
    "efficientnetv2_b0": 7_139_704,
    "efficientnetv2_b1": 8_141_052,
    "efficientnetv2_b2": 10_096_086,
    "efficientnetv2_b3": 14_358_406,
    "efficientnetv2_s": 21_458_488,
    "efficientnetv2_m": 54_139_356,
    "efficientnetv2_l": 118_515_272,
    "efficientnetv2_xl": 208_119_808,
    # EfficientDet with COCO's 90-class head (effdet's README: D0 3.88 M ... D7x 77.1 M)
    "efficientdet_d0": 3_880_067,
    "efficientdet_d1": 6_625_898,
    "efficientdet_d2": 8_097_039,
    "efficientdet_d3": 12_032_296,
    "efficientdet_d4": 20_723_675,
    "efficientdet_d5": 33_653_315,
    "efficientdet_d6": 51_871_782,
    "efficientdet_d7": 51_871_782,
    "efficientdet_d7x": 77_147_166,
    "efficientdet_lite0": 3_243_470,
    "efficientdet_lite1": 4_248_318,
    "efficientdet_lite2": 5_252_334,
    "efficientdet_lite3": 8_350_862,
    "efficientdet_lite4": 15_130_894,
}
PARAMS_21K = {
    "efficientnetv2_b3": 46_394_097,
    "efficientnetv2_s": 48_158_371,
    "efficientnetv2_m": 80_839_239,
    "efficientnetv2_l": 145_215_155,
    "efficientnetv2_xl": 234_819_691,
}


@dataclass(frozen=True)
class WeightsEntry:
    tag: str
    model: str  # effnet's registry name
    # "torchvision" or "release" (a plain URL: torchvision's, or a GitHub release), "hub" (a Hugging
    # Face repo file) or "package" (in a pip package)
    kind: str
    url: str  # where the file is published (for a package: a pseudo-URL naming it)
    layout: str  # the key layout, for convert_state_dict ("effdet": an EfficientDet of the effdet port)
    licence: str
    preprocessing: Preprocessing  # the publisher's exact eval transform
    top1: float | None  # published ImageNet-1k accuracy at that transform; None for 21k heads
    top5: float | None
    padding: str = "symmetric"  # "same": TF's asymmetric padding, which TF-trained weights need
    bn_eps: float = 1e-3
    classes: str = "imagenet-1k"  # or "imagenet-21k" (timm's Google 21k label order), "coco-90" (detection)
    coco_map: float | None = None  # detection: published COCO val2017 mAP (IoU 0.50:0.95)
    # sha256: the full hash, or the prefix a file name carries; None when the publisher gives no
    # hash (hub files): effnet records the hash of the first download and checks it from then on.
    sha256: str | None = None
    hub_repo: str | None = None
    hub_file: str = "model.safetensors"
    release_url: str | None = None  # timm's older release file (a .pth with a hash prefix), for import
    package: str | None = None  # the pip distribution, its import name and the file inside it
    module: str | None = None
    filename: str | None = None
    aliases: tuple[str, ...] = ()
    default: bool = False

    @property
    def num_classes(self) -> int:
        return {"imagenet-21k": 21843, "coco-90": 90}.get(self.classes, 1000)

    @property
    def task(self) -> str:
        return "detection" if self.classes == "coco-90" else "classification"

    @property
    def params(self) -> int:
        return (PARAMS_21K if self.classes == "imagenet-21k" else PARAMS)[self.model]

    @property
    def build_kwargs(self) -> dict:
        """How the model must be built to hold these weights and score what they score."""
        return {
            "padding": self.padding,
            "bn_eps": self.bn_eps,
            "num_classes": self.num_classes,
            "resolution": self.preprocessing.resolution,
        }

    @property
    def hash_known(self) -> bool:
        return self.sha256 is not None
