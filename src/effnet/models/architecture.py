"""The unscaled stage tables and the one pure function that scales them.

The baseline is EfficientNet-B0 (paper, Table 1). Every other member of the family is this
table plus a width and a depth multiplier; Lite differs only in the family switches below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from effnet.core.errors import UsageError
from effnet.models.scaling import round_channels, round_repeats


@dataclass(frozen=True)
class StageSpec:
    """One row of the paper's Table 1: ``repeats`` MBConv blocks with the same shape."""

    expand_ratio: int  # hidden channels = input channels * expand_ratio (MBConv1 vs MBConv6)
    kernel_size: int  # depthwise kernel
    stride: int  # applied by the first block of the stage only
    out_channels: int  # before width scaling
    repeats: int  # before depth scaling


B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, out_channels=16, repeats=1),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=24, repeats=2),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, out_channels=40, repeats=2),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, out_channels=80, repeats=3),
    StageSpec(expand_ratio=6, kernel_size=5, stride=1, out_channels=112, repeats=3),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, out_channels=192, repeats=4),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, out_channels=320, repeats=1),
)


@dataclass(frozen=True)
class Family:
    """What distinguishes EfficientNet from EfficientNet-Lite; the stages are shared."""

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


EFFICIENTNET = Family(name="efficientnet", stages=B0_STAGES, activation="silu", se_ratio=0.25)
LITE = Family(
    name="lite",
    stages=B0_STAGES,
    activation="relu6",
    se_ratio=None,  # SE's sigmoid and global pool are poorly supported by int8 accelerators
    scale_stem_head=False,
    scale_first_last_repeats=False,
)
FAMILIES = {f.name: f for f in (EFFICIENTNET, LITE)}


@dataclass(frozen=True)
class BlockArgs:
    """One fully resolved MBConv block: everything the module needs, nothing to compute."""

    stage: int
    in_channels: int
    out_channels: int
    expand_ratio: int
    kernel_size: int
    stride: int
    se_channels: int  # 0 = no squeeze-and-excitation
    drop_path: float
    hidden: int | None = None  # expansion channels left by structured pruning (None: the ratio's)

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
    stem = round_channels(family.stem_channels, width) if family.scale_stem_head else family.stem_channels
    head = round_channels(family.head_channels, width) if family.scale_stem_head else family.head_channels

    last = len(family.stages) - 1
    repeats = [
        s.repeats if (not family.scale_first_last_repeats and i in (0, last)) else round_repeats(s.repeats, depth)
        for i, s in enumerate(family.stages)
    ]
    total = sum(repeats)

    blocks: list[BlockArgs] = []
    in_ch = stem
    for stage_idx, (spec, n) in enumerate(zip(family.stages, repeats, strict=True)):
        out_ch = round_channels(spec.out_channels, width)
        for i in range(n):
            se = 0 if family.se_ratio is None else max(1, int(in_ch * family.se_ratio))
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
