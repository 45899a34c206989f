"""The unscaled stage tables and the one pure function that scales them.

V1's baseline is EfficientNet-B0 (paper, Table 1). Every other V1 member is this table plus a
width and a depth multiplier; Lite differs only in the family switches below. V2 (Tan & Le,
2021) adds Fused-MBConv stages and five released tables: B0 (scaled to B1-B3 by multipliers,
as V1), and S, M, L, XL, each released as its own table rather than scaled from S.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from effnet.core.errors import UsageError
from effnet.models.scaling import round_channels, round_repeats

BLOCKS = ("mbconv", "fused")


@dataclass(frozen=True)
class StageSpec:
    """One row of a stage table (V1 Table 1, V2 Table 4): ``repeats`` blocks of the same shape."""

    expand_ratio: int  # hidden channels = input channels * expand_ratio (MBConv1 vs MBConv6)
    kernel_size: int  # the depthwise kernel (MBConv), the one dense kernel (Fused-MBConv)
    stride: int  # applied by the first block of the stage only
    out_channels: int  # before width scaling
    repeats: int  # before depth scaling
    # "mbconv": 1x1 expand, kxk depthwise, SE, 1x1 project. "fused" (V2): one kxk conv does the
    # expansion and the spatial mixing, then 1x1 project, no SE: faster on accelerators in
    # early stages, where depthwise convs underuse the hardware (V2 paper, section 3.2).
    block: str = "mbconv"


B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=16, repeats=1),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=24, repeats=2),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, out_channels=40, repeats=2),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=80, repeats=3),
    StageSpec(expand_ratio=6, kernel_size=5, stride=1, out_channels=112, repeats=3),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, out_channels=192, repeats=4),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=320, repeats=1),
)


# EfficientNetV2. B0 is the released baseline that B1-B3 scale (automl's efficientnetv2-b0,
# timm's tf_efficientnetv2_b*); the paper tables only S. Every V2 kernel is 3x3.
V2_B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=16, repeats=1, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=32, repeats=2, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=48, repeats=2, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=96, repeats=3, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=112, repeats=5, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=192, repeats=8, block="mbconv"),
)
# The V2 paper's Table 4.
V2_S_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=24, repeats=2, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=48, repeats=4, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=64, repeats=4, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=128, repeats=6, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=160, repeats=9, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=256, repeats=15, block="mbconv"),
)
# M, L and XL as released (automl effnetv2_configs.py): a seventh stage, and depths and widths
# that are not S times a multiplier, so they are tables rather than a scaled S.
V2_M_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=24, repeats=3, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=48, repeats=5, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=80, repeats=5, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=160, repeats=7, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=176, repeats=14, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=304, repeats=18, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=512, repeats=5, block="mbconv"),
)
V2_L_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=32, repeats=4, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=64, repeats=7, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=96, repeats=7, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=192, repeats=10, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=224, repeats=19, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=384, repeats=25, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=640, repeats=7, block="mbconv"),
)
V2_XL_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=32, repeats=4, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=64, repeats=8, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=96, repeats=8, block="fused"),
    StageSpec(expand_ratio=4, kernel_size=3, stride=2, out_channels=192, repeats=16, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=256, repeats=24, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=512, repeats=32, block="mbconv"),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=640, repeats=8, block="mbconv"),
)


@dataclass(frozen=True)
class Family:
    """One stage table and the switches that say how it is built and what scales."""

    name: str
    stages: tuple[StageSpec, ...]
    activation: str  # "silu" (swish) or "relu6"
    se_ratio: float | None  # squeeze width as a fraction of the block's *input* channels
    stem_channels: int = 32
    head_channels: int = 1280
    # Lite keeps stem/head and the first/last stage's repeats fixed: they are cheap in
    # accuracy but expensive on mobile accelerators, and int8 kernels prefer fixed shapes.
    scale_stem_head: bool = True
    scale_first_last_repeats: bool = True
    # V1's channel rounding never drops more than 10% below the scaled width; V2's reference
    # rounds to the nearest multiple of 8 with no such floor (B3's first stage: 16, not 24).
    round_limit: float = 0.9


EFFICIENTNET = Family(name="efficientnet", stages=B0_STAGES, activation="silu", se_ratio=0.25)
LITE = Family(
    name="lite",
    stages=B0_STAGES,
    activation="relu6",
    se_ratio=None,  # SE's sigmoid and global pool are poorly supported by int8 accelerators
    scale_stem_head=False,
    scale_first_last_repeats=False,
)
# V2's SE squeezes to a quarter of the block's input channels, as V1's; Fused-MBConv has none.
V2_FAMILIES = tuple(
    Family(name=name, stages=stages, activation="silu", se_ratio=0.25, stem_channels=stem, round_limit=0.0)
    for name, stages, stem in (
        ("efficientnetv2", V2_B0_STAGES, 32),
        ("efficientnetv2_s", V2_S_STAGES, 24),
        ("efficientnetv2_m", V2_M_STAGES, 24),
        ("efficientnetv2_l", V2_L_STAGES, 32),
        ("efficientnetv2_xl", V2_XL_STAGES, 32),
    )
)
FAMILIES = {f.name: f for f in (EFFICIENTNET, LITE, *V2_FAMILIES)}


def is_v2(family: str) -> bool:
    return family.startswith("efficientnetv2")


@dataclass(frozen=True)
class BlockArgs:
    """One fully resolved block: everything the module needs, nothing to compute."""

    stage: int
    in_channels: int
    out_channels: int
    expand_ratio: int
    kernel_size: int
    stride: int
    se_channels: int  # 0 = no squeeze-and-excitation
    drop_path: float
    hidden: int | None = None  # expansion channels left by structured pruning (None: the ratio's)
    block: str = "mbconv"  # "mbconv" or "fused", from the stage table

    @property
    def hidden_channels(self) -> int:
        return self.hidden if self.hidden is not None else self.in_channels * self.expand_ratio


@dataclass(frozen=True)
class ResolvedArch:
    stem_channels: int
    blocks: tuple[BlockArgs, ...]
    head_channels: int
    activation: str

    @property
    def stage_depths(self) -> tuple[int, ...]:
        depths: dict[int, int] = {}
        for b in self.blocks:
            depths[b.stage] = depths.get(b.stage, 0) + 1
        return tuple(depths[s] for s in sorted(depths))


def scale_stages(
    family: Family, width: float, depth: float, drop_path_rate: float, hidden_channels: tuple[int, ...] | None = None
) -> ResolvedArch:
    """Apply width/depth multipliers to the family's table; the single place scaling happens.

    ``hidden_channels`` (one per block) replaces the blocks' expansion widths: what a pruned
    model keeps, so that it is rebuilt from its config alone."""

    def channels(c: int) -> int:
        return round_channels(c, width, round_limit=family.round_limit)

    stem = channels(family.stem_channels) if family.scale_stem_head else family.stem_channels
    head = channels(family.head_channels) if family.scale_stem_head else family.head_channels

    last = len(family.stages) - 1
    repeats = [
        s.repeats if (not family.scale_first_last_repeats and i in (0, last)) else round_repeats(s.repeats, depth)
        for i, s in enumerate(family.stages)
    ]
    total = sum(repeats)

    blocks: list[BlockArgs] = []
    in_ch = stem
    for stage_idx, (spec, n) in enumerate(zip(family.stages, repeats, strict=True)):
        out_ch = channels(spec.out_channels)
        for i in range(n):
            no_se = family.se_ratio is None or spec.block == "fused"
            se = 0 if no_se else max(1, int(in_ch * family.se_ratio))
            blocks.append(
                BlockArgs(
                    stage=stage_idx,
                    in_channels=in_ch,
                    out_channels=out_ch,
                    expand_ratio=spec.expand_ratio,
                    kernel_size=spec.kernel_size,
                    stride=spec.stride if i == 0 else 1,
                    se_channels=se,
                    # Stochastic depth grows linearly from 0 at the first block (paper's recipe,
                    # from Huang et al. 2016) so early, general features are rarely dropped.
                    drop_path=drop_path_rate * len(blocks) / total,
                    block=spec.block,
                )
            )
            in_ch = out_ch
    if hidden_channels is not None:
        if len(hidden_channels) != len(blocks):
            raise UsageError(f"hidden_channels has {len(hidden_channels)} entries for {len(blocks)} blocks")
        blocks = [
            b if b.expand_ratio == 1 or h == b.hidden_channels else replace(b, hidden=int(h))
            for b, h in zip(blocks, hidden_channels, strict=True)
        ]
    return ResolvedArch(stem_channels=stem, blocks=tuple(blocks), head_channels=head, activation=family.activation)
