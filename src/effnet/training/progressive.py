"""Progressive learning with adaptive regularization (Tan & Le, "EfficientNetV2", 2021, Algorithm 1).

Small images learn the coarse features fast and cheaply, large ones the fine details; weak
regularization suits the small images (the model has little capacity to overfit them), strong
the large. So the run is cut into M stages of equal epochs, and stage i trains at

    size_i = size_0 + (size_e - size_0) * i / (M - 1)

with every regularization strength (dropout, RandAugment magnitude) interpolated the same way.
The stage is a function of the epoch alone, so a resumed run is in the stage it was killed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Stage:
    index: int
    image_size: int
    dropout: float
    randaug: int | None  # RandAugment magnitude; None: the augmentation's own (or none)

    def to_row(self) -> dict:
        """The columns metrics.csv records for every epoch."""
        return {f"stage_{k}" if k == "index" else k: v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Progression:
    stages: int
    epochs: int
    size: tuple[int, int]  # (first stage, last stage): the last is the evaluation size
    dropout: tuple[float, float]
    randaug: tuple[int, int] | None = None

    def stage_of(self, epoch: int) -> int:
        """Equal shares of the epochs, earlier stages first: 10 epochs in 4 stages are 3+2+3+2."""
        return min(self.stages - 1, epoch * self.stages // self.epochs)

    def at(self, epoch: int) -> Stage:
        index = self.stage_of(epoch)
        t = index / (self.stages - 1) if self.stages > 1 else 1.0

        def lerp(pair):
            return pair[0] + (pair[1] - pair[0]) * t

        return Stage(
            index=index,
            image_size=round(lerp(self.size)),
            dropout=round(lerp(self.dropout), 6),
            randaug=round(lerp(self.randaug)) if self.randaug else None,
        )


class StagedTransform:
    """A training transform that follows the stage: ``build(stage)`` makes each stage's transform
    (its image size and RandAugment magnitude) once; ``set_stage`` switches to it. The trainer
    switches before it creates the epoch's loader, so loader workers start with the right one."""

    def __init__(self, build):
        self.build, self.transforms, self.current = build, {}, None

    def set_stage(self, stage: Stage) -> None:
        if stage.index not in self.transforms:
            self.transforms[stage.index] = self.build(stage)
        self.current = self.transforms[stage.index]

    def __call__(self, image):
        return self.current(image)
