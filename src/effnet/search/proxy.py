"""One recipe for every candidate of a search or scaling study: same data, same budget.

The paper ranks (alpha, beta, gamma) by training each scaled baseline; what makes such a
comparison fair is that nothing but the architecture changes between candidates. ``Proxy``
holds everything else (data, baseline, recipe, epochs) and trains one candidate from its
width, depth and resolution.

The CLI builds ``effnet search``'s options from this dataclass before torch is loaded (so that
``effnet --help`` is instant); the model, training and evaluation layers are therefore imported
inside the methods that use them, the one place outside the CLI where effnet does that.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from effnet.core.errors import UsageError


@dataclass(frozen=True)
class Shape:
    """A candidate architecture: the baseline's multipliers times the scaling."""

    width: float
    depth: float
    resolution: int


@dataclass(frozen=True)
class Proxy:
    data: str = "digits"
    data_dir: str | None = None
    base: str = "efficientnet_b0"
    # The baseline's own multipliers (default: the named model's). A down-scaled baseline,
    # e.g. width 0.5, depth 0.5 at 32 px, is what makes a search affordable on a CPU.
    base_width: float | None = None
    base_depth: float | None = None
    image_size: int | None = None  # the baseline's input side (default: the named model's)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.004
    limit_train: int | None = None
    # The short-run recipe (training.recipe.SHORT_RUN): the paper's RMSprop schedule and a
    # 0.9999 EMA need hundreds of epochs; with a few, they only add noise to the ranking.
    opt: str = "adamw"
    weight_decay: float = 0.01
    augment: str = "light"

    def __post_init__(self):
        from effnet.models.registry import resolve_config

        base = resolve_config(self.base)  # unknown names fail here, before any training
        object.__setattr__(self, "base_width", base.width if self.base_width is None else self.base_width)
        object.__setattr__(self, "base_depth", base.depth if self.base_depth is None else self.base_depth)
        object.__setattr__(self, "image_size", base.resolution if self.image_size is None else self.image_size)
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        for name in ("base_width", "base_depth"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.05 <= value <= 16):
                raise UsageError(f"--{name.replace('_', '-')} must be in [0.05, 16], got {value}")

    def to_dict(self) -> dict:
        return asdict(self)

    def scaled(self, width: float = 1.0, depth: float = 1.0, resolution: float = 1.0) -> Shape:
        """The baseline with its width, depth and input side multiplied."""
        return Shape(
            width=round(self.base_width * width, 6),
            depth=round(self.base_depth * depth, 6),
            resolution=max(8, round(self.image_size * resolution)),
        )

    def compound(self, alpha: float, beta: float, gamma: float, phi: float) -> Shape:
        """The paper's rule applied to this baseline: depth alpha^phi, width beta^phi, side gamma^phi."""
        return self.scaled(width=beta**phi, depth=alpha**phi, resolution=gamma**phi)

    def config(self, shape: Shape, num_classes: int = 1000):
        from effnet.models.registry import resolve_config

        return resolve_config(
            self.base, width=shape.width, depth=shape.depth, resolution=shape.resolution, num_classes=num_classes
        )

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (Proxy is frozen; MAC counts are pure)
    def cost(self, shape: Shape) -> dict:
        """Params and MACs of a candidate (10 classes: the count barely moves either)."""
        from effnet.models.flops import count_macs, count_params

        config = self.config(shape, num_classes=10)
        return {"params": count_params(config), "macs": count_macs(config)}

    def train(self, shape: Shape, run: str | Path, seed: int = 0, test: bool = False) -> dict:
        """Train one candidate into ``run`` (continuing it if it holds an unfinished run).

        Returns the best validation top-1 (the figure a search may select on) and, with
        ``test``, the test top-1 of those weights (the figure a study reports)."""
        from effnet.deploy.evaluate import evaluate
        from effnet.training.classify import ClassificationTrainer
        from effnet.training.config import SHORT_RUN, TrainConfig

        cfg = TrainConfig(
            model=self.base,
            width=shape.width,
            depth=shape.depth,
            image_size=shape.resolution,
            data=self.data,
            data_dir=self.data_dir,
            limit_train=self.limit_train,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=seed,
            **{**SHORT_RUN, "opt": self.opt, "weight_decay": self.weight_decay, "augment": self.augment},
            lr=self.lr,
        )
        run = Path(run)
        start = time.perf_counter()
        trainer = ClassificationTrainer(cfg, run, resume=(run / "config.json").is_file(), quiet=True)
        trainer.fit()
        result = {"val_top1": trainer.best_top1, "train_seconds": round(time.perf_counter() - start, 1)}
        if test and "test" in trainer.data.splits:
            metrics = evaluate(str(run / "best.safetensors"), split="test")
            result["test_top1"] = metrics["top1"]
        return result
