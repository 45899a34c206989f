"""Serving an exported file behind the same interface as a model: ``ExportedModel`` is that
interface, ``OnnxModel(path)`` its ONNX Runtime engine (OpenVINO's is ``effnet.deploy.openvino``).

An exported model has what ``effnet.predict`` needs from a model (``preprocessing``,
``class_names``, ``config``, call on a batch), so the torch and exported engines share
the preprocessing and labels. Inputs are checked against what the graph accepts before they
reach the runtime, whose own shape errors are long and name internal nodes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import UsageError, WeightsError, first_line
from effnet.core.extras import require
from effnet.models.efficientdet_detector import letterbox
from effnet.tasks.registry import DEFAULT_TASK, get_task
from effnet.weights.io import parse_metadata


def session_options(threads: int | None = None):
    """Graph optimisations on, and worker threads that sleep instead of spinning when idle:
    spinning pools of two sessions measured side by side steal the cores from each other."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def read_onnx(path: str | os.PathLike):
    """The ModelProto, or a clear error for a file that is not ONNX."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as exc:
        raise WeightsError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
    return proto


def onnx_metadata(proto) -> dict[str, str]:
    """The file's metadata properties (effnet writes its model metadata there)."""
    return {p.key: p.value for p in proto.metadata_props}


def float_array(value) -> np.ndarray:
    """A C-contiguous float32 array of ``value``, keeping its shape (``np.ascontiguousarray`` turns a
    0-d scalar, a detector graph's score threshold, into shape (1,), which the engines refuse)."""
    array = np.asarray(value, dtype=np.float32)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def open_session(proto, threads: int | None = None):
    """An ONNX Runtime CPU session on ``proto`` with effnet's session options."""
    import onnxruntime as ort

    return ort.InferenceSession(
        proto.SerializeToString(), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
    )


def peer_metadata(model: str, *, channels: int, image_size: int, batch_size: int | None, num_classes: int,
                  origin) -> dict[str, str]:  # fmt: skip
    """effnet's metadata for a graph exported elsewhere, from the architecture's name and the
    graph's own shapes: the family's default preprocessing at the graph's image size, ImageNet's
    class names for a 1000-class head (else numbered classes)."""
    from effnet.models.preprocessing import Preprocessing
    from effnet.models.registry import resolve_config
    from effnet.weights.pretrained import imagenet_classes

    config = resolve_config(model, resolution=image_size, num_classes=num_classes, in_chans=channels)
    names = imagenet_classes() if num_classes == 1000 else None
    if num_classes < 1:
        raise WeightsError(f"{origin}: its output of {num_classes} values is not a classifier's")
    return {
        "format": "effnet",
        "model_name": config.name,
        "config": json.dumps(config.to_dict()),
        "preprocessing": json.dumps(Preprocessing.for_model(config.family, image_size).to_dict()),
        "class_names": json.dumps(names),
        "input": json.dumps(
            {"name": "image", "channels": channels, "image_size": image_size, "batch_size": batch_size}
        ),
    }


class ExportedModel:
    """What an exported graph on any runtime offers ``predict``, ``eval``, ``bench`` and the
    search: the metadata effnet wrote (``config``, ``preprocessing``, ``class_names``, the
    ``training`` provenance, the ``input`` it accepts), ``eval()``, and a call on an NCHW float
    batch of any size. Subclasses open the file and run one array (``_run``)."""

    path: Path
    input: dict
    kind = "exported"  # the file's kind, as error messages name it

    def _read_metadata(self, meta: dict[str, str], model: str | None = None, graph: dict | None = None) -> None:
        """Read effnet's metadata; a file without it (a peer's export) needs ``model``, the
        architecture it holds, and ``graph``, what its input and output look like
        (``peer_metadata``)."""
        if meta.get("format") != "effnet":
            if model is None or graph is None:
                raise WeightsError(
                    f"{self.path}: an {self.kind} file without effnet metadata (not made by `effnet export`); "
                    "its preprocessing and class names are unknown"
                    + (": give --model NAME, the architecture it holds" if graph is not None else "")
                )
            meta = peer_metadata(model, **graph, origin=self.path)
        self.config, self.preprocessing, self.class_names = parse_metadata(meta, self.path)
        self.task = meta.get("task") or DEFAULT_TASK
        try:
            self.training = json.loads(meta.get("training", "{}"))  # what it was trained on
            self.input = json.loads(meta["input"])
        except (KeyError, ValueError) as exc:
            raise WeightsError(f"{self.path}: effnet metadata is damaged ({exc})") from None

    def check_input(self, shape: tuple[int, ...]) -> None:
        want = self.input
        size, channels = want["image_size"], want["channels"]
        if len(shape) != 4:
            raise UsageError(f"{self.path}: expects a batch of shape (N, {channels}, {size}, {size}), got {shape}")
        if shape[1] != channels:
            raise UsageError(f"{self.path}: expects {channels} channels, got {shape[1]} (input shape {shape})")
        if tuple(shape[2:]) != (size, size):
            raise UsageError(
                f"{self.path}: exported for {size}x{size} images, got {shape[2]}x{shape[3]}; "
                f"export again with --image-size {shape[2]}"
            )
        if shape[0] < 1:
            raise UsageError(f"{self.path}: an empty batch (shape {shape})")

    def eval(self) -> ExportedModel:
        return self  # an exported graph is always in inference mode; evaluate() calls this

    def __call__(self, x):
        """Outputs for a batch of any size, as the torch model gives them: a static export runs it
        in chunks of its own batch size, the last one padded, so eval and quantize need no
        re-export. A detector's graph takes one [0, 1] image at a time: it is called with a list
        of them and gives a list of {"boxes", "labels", "scores"}."""
        if isinstance(x, list | tuple) or get_task(self.task).per_image:
            return [self.detect(image.detach().cpu().numpy()) for image in x]
        self.check_input(tuple(x.shape))
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        fixed = self.input["batch_size"]
        if fixed is None or len(array) == fixed:
            return torch.from_numpy(self._run(array))
        chunks, pads = [], []
        for start in range(0, len(array), fixed):
            chunk = array[start : start + fixed]
            pads.append(fixed - len(chunk))
            if pads[-1]:
                chunk = np.concatenate([chunk, np.zeros((pads[-1], *chunk.shape[1:]), dtype=np.float32)])
            chunks.append(chunk)
        outputs = self._run_chunks(chunks)
        return torch.from_numpy(np.concatenate([out[: fixed - pad] for out, pad in zip(outputs, pads, strict=True)]))

    def detect(self, image: np.ndarray, score_thresh: float | None = None) -> dict[str, torch.Tensor]:
        """An exported detector on one (3, H, W) [0, 1] image: {"boxes", "labels", "scores"}
        (``score_thresh``: another than the export's, where the graph leaves it to the runner)."""
        if self.task != "detection":
            raise UsageError(f"{self.path}: a {self.kind} file of a {self.task} model takes a batch, not a list of "
                             "images")  # fmt: skip
        if not self.input.get("letterbox"):
            return self._run_graph({"image": image})  # torchvision's: the whole detector is the graph
        # EfficientDet's graph takes the letterboxed image and its extent; boxes come back in its pixels
        batch, scales, extents = letterbox([torch.from_numpy(image)], self.input["image_size"], self.preprocessing.mean,
                                           self.preprocessing.std)  # fmt: skip
        threshold = np.array(self.input["score_thresh"] if score_thresh is None else score_thresh, np.float32)
        found = self._run_graph({"image": batch.numpy(), "extent": extents[0].numpy(), "score_thresh": threshold})
        kept = found["scores"] > 0  # the graph pads its output with zero rows
        found = {k: v[kept] for k, v in found.items()}
        found["boxes"] = found["boxes"] / scales[0]
        return found

    def _run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Every named output of the graph for named inputs (a detector's)."""
        raise UsageError(f"{self.path}: a {self.kind} file cannot run a detector")

    def _run(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _run_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        return [self._run(chunk) for chunk in chunks]


class OnnxModel(ExportedModel):
    """An effnet ONNX export served by ONNX Runtime; call it on an NCHW float batch."""

    kind = "ONNX"
    engine = "onnxruntime"  # what --engine names it, and --json reports

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        require("deploy")
        self.path = Path(path)
        proto = read_onnx(self.path)
        self._read_metadata(onnx_metadata(proto))
        try:
            self.session = open_session(proto, threads)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise WeightsError(f"{self.path}: ONNX Runtime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name

    def _run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        names = [o.name for o in self.session.get_outputs()]
        feeds = {k: float_array(v) for k, v in feeds.items()}
        return {k: torch.from_numpy(v) for k, v in zip(names, self.session.run(None, feeds), strict=True)}

    def _run(self, array: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: array})
        return logits
