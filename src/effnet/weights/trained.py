"""A trained file and what it was trained on: the one way every command opens a model to
evaluate, fine-tune, prune, quantize or distil from.

``effnet train`` writes its settings into each weights file (safetensors metadata ``training``,
copied into ONNX exports); the provenance read back from there decides which data, data
directory, validation split and seed ``eval``, ``quantize`` and the other commands use when the
user does not say otherwise. Before this module there were four drifted copies of that logic, and
two of them forgot the data directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from effnet.core.errors import UsageError, WeightsError
from effnet.weights.catalog import DEFAULTS, get_entry, is_tag, suggest
from effnet.weights.io import PICKLE_SUFFIXES, load, read_metadata
from effnet.weights.pretrained import load_pretrained


@dataclass(frozen=True)
class Provenance:
    """What a file's model was trained on; empty for peers' checkpoints and pretrained tags."""

    data: str | None = None
    data_dir: str | None = None
    val_split: float = 0.1
    seed: int = 0
    training: dict = field(default_factory=dict)  # the whole run configuration, as written

    @classmethod
    def from_training(cls, training: dict, origin: str = "weights") -> Provenance:
        if not isinstance(training, dict):
            raise WeightsError(f"{origin}: its 'training' metadata is not a JSON object")
        return cls(
            data=training.get("data"),
            data_dir=training.get("data_dir"),
            val_split=training.get("val_split", 0.1),
            seed=training.get("seed", 0),
            training=dict(training),
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], origin: str) -> Provenance:
        text = metadata.get("training")
        if not text:
            return cls()
        try:
            return cls.from_training(json.loads(text), origin)
        except ValueError as exc:
            raise WeightsError(f"{origin}: its 'training' metadata is not valid JSON ({exc})") from None

    def data_options(
        self,
        data: str | None = None,
        *,
        data_dir: str | None = None,
        val_split: float | None = None,
        seed: int | None = None,
        origin: str = "the weights",
    ) -> dict:
        """``load_data`` keyword arguments: what the caller gave, else what the run used.

        A data directory is only taken from the run when the data is the run's too: a
        different dataset named by the caller would otherwise be looked for in the wrong place."""
        name = data or self.data
        if name is None:
            raise UsageError(f"{origin} does not say what it was trained on; pass --data")
        same_data = data is None or data == self.data
        return {
            "data": name,
            "data_dir": data_dir if data_dir is not None else (self.data_dir if same_data else None),
            "val_split": val_split if val_split is not None else self.val_split,
            "seed": seed if seed is not None else self.seed,
        }


@dataclass
class Trained:
    """A model opened from a file, and where it came from."""

    model: nn.Module
    provenance: Provenance
    path: str


def require_model_file(weights: str | os.PathLike) -> None:
    """Commands that change a model (prune, quantize, compress) start from an effnet file or a
    pretrained tag, not from an export or a peer's checkpoint."""
    weights = str(weights)
    if weights.endswith(".safetensors") or is_tag(weights) or weights in DEFAULTS:
        return
    if os.path.exists(weights) or os.sep in weights or Path(weights).suffix in (".onnx", ".xml", *PICKLE_SUFFIXES):
        raise UsageError(f"--weights {weights}: give an effnet .safetensors file or a pretrained tag")
    raise UsageError(f"--weights {weights!r} is neither a .safetensors file nor a pretrained tag{suggest(weights)}")


def load_trained(weights: str | os.PathLike, model: str | None = None, **create_kwargs) -> Trained:
    """Open a pretrained tag (``efficientnet_b0.tv_in1k``, ``lite0``, or a member's name for its
    default tag), an effnet ``.safetensors`` file or a peer's checkpoint
    (``model`` names the architecture then), with its provenance. The model is in eval mode."""
    weights = str(weights)
    if is_tag(weights) or (weights in DEFAULTS and not os.path.exists(weights)):
        net = load_pretrained(weights)
        if model is not None and model != net.config.name:
            raise UsageError(f"--weights {weights} holds {net.config.name}, not {model}")
        return Trained(net, Provenance(), get_entry(weights).tag)
    if not os.path.exists(weights):
        if os.sep in weights or weights.endswith((".safetensors", ".onnx", ".xml", *PICKLE_SUFFIXES)):
            raise UsageError(f"--weights {weights}: no such file")
        raise UsageError(f"--weights {weights!r} is neither a file nor a pretrained tag{suggest(weights)}")
    net = load(weights, model=model, **create_kwargs)
    metadata = read_metadata(weights) if weights.endswith(".safetensors") else {}
    return Trained(net, Provenance.from_metadata(metadata, weights), weights)
