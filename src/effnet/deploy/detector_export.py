"""Detectors exported whole, one image per run: torchvision's (resize, normalisation, heads, box
decoding and NMS in the graph) and EfficientDet's (the network, decoding and NMS in the graph; the
letterbox outside it, shared with eager)."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from effnet.core.errors import UsageError
from effnet.core.fileio import atomic_write
from effnet.deploy.export_checks import TOLERANCE, ExportError, ExportResult, blocks_image
from effnet.deploy.openvino import OpenVinoModel, publish_ir, write_ir
from effnet.deploy.runtime import OnnxModel
from effnet.models.efficientdet_detector import DetectionGraph, EfficientDet
from effnet.models.fuse import fuse_batchnorm


def inference_form(model: nn.Module) -> nn.Module:
    """BN folded, eval mode, no gradients, weights in the default memory layout: the module that
    gets exported (a model fresh from training is channels-last, and torch.export then fixes
    the batch dimension of its graph)."""
    return fuse_batchnorm(model).eval().requires_grad_(False).to(memory_format=torch.contiguous_format)


def _write_detector(graph: nn.Module, args: tuple, path: Path, opset: int, metadata: dict, inputs: list[str],
                    outputs: list[str]) -> None:  # fmt: skip
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=max(opset, 11), input_names=inputs,
                          output_names=outputs)  # fmt: skip
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))


class _Graph:
    """What one detector exports: the module, its example arguments and names, the metadata, and
    how to set the score threshold of the graph and of the eager model it is checked against."""

    def __init__(self, model: nn.Module, image: torch.Tensor, image_size: int, metadata: dict):
        self.fused = inference_form(model)
        if isinstance(self.fused, EfficientDet):
            side = self.fused.config.scale.image_size
            if image_size != side:
                raise UsageError(f"{self.fused.config.name} is built for {side} px inputs (its BiFPN resizes to "
                                 f"fixed sizes): export it with --image-size {side}")  # fmt: skip
            # The letterbox stays outside the graph (the runner applies it with eager's own code)
            # and the score threshold is an input: one trace, checked at 0 as it is written.
            self.module = DetectionGraph(self.fused).eval()
            batch, _, extents = self.fused.letterbox([image])
            self.args, self.inputs = (batch, extents[0], torch.tensor(0.0)), ["image", "extent", "score_thresh"]
            self.outputs = ["boxes", "labels", "scores"]
            shape = {**json.loads(metadata["input"]), "letterbox": True, "score_thresh": self.fused.score_thresh}
            self.metadata = {**metadata, "input": json.dumps(shape)}
            self.owners, self.eager, self.probe = [self.fused], self.fused, False
        else:
            self.module = self.fused.net
            self.args, self.inputs, self.metadata = ([image],), ["image"], metadata
            with torch.no_grad():
                self.outputs = list(self.module([image])[0])  # the heads differ in the order of their output dict
            self.owners = [self.module.roi_heads if hasattr(self.module, "roi_heads") else self.module]
            self.eager = self.module  # what the graph is checked against: images in, detections out
            self.probe = True  # the threshold is a constant of the graph: a second one at 0 is checked

    def threshold(self, value: float) -> list[float]:
        old = [owner.score_thresh for owner in self.owners]
        for owner in self.owners:
            owner.score_thresh = value
        return old

    def restore(self, old: list[float]) -> None:
        for owner, value in zip(self.owners, old, strict=True):
            owner.score_thresh = value

    def write(self, path: Path, opset: int) -> None:
        _write_detector(self.module, self.args, path, opset, self.metadata, self.inputs, self.outputs)


def letterboxed(model: nn.Module) -> bool:
    """Whether ``model`` exports as a graph on letterboxed images (EfficientDet), which OpenVINO
    runs too; torchvision's detectors export whole, for ONNX Runtime."""
    return isinstance(model, EfficientDet)


def export_detector(model: nn.Module, path: Path, image_size: int, opset: int, metadata: dict, *,
                    format: str = "onnx") -> ExportResult:  # fmt: skip
    """A detector as one graph per image: torchvision's whole (resize, normalisation, heads, box
    decoding, NMS), taking one [0, 1] image (3, H, W); EfficientDet's network, decoding and NMS,
    taking the letterboxed image and its extent (the runner letterboxes with eager's own code).
    torch.export cannot trace the data-dependent NMS; the TorchScript-based exporter, for which
    torchvision keeps ONNX symbolics of NMS and RoIAlign, can.

    The check must not depend on the model finding something in a made-up image, so a graph with
    the score threshold at 0 (torchvision's: a second graph, the same but for that constant;
    EfficientDet's: the graph itself) is compared with eager at the same threshold
    (``_detection_diff``). An OpenVINO IR is converted from the
    checked ONNX graph and checked in turn."""
    image = blocks_image(image_size)
    graph = _Graph(model, image, image_size, metadata)
    with tempfile.TemporaryDirectory(prefix="effnet-export-") as scratch:
        tmp, probe = Path(scratch) / "graph.onnx", Path(scratch) / "probe.onnx"
        graph.write(tmp, opset)
        kept = graph.threshold(0.0)
        try:
            if graph.probe:
                graph.write(probe, opset)
            else:
                probe = tmp
            with torch.no_grad():
                expected = graph.eager([image])[0]
        finally:
            graph.restore(kept)
        if format == "openvino":
            write_ir(tmp, tmp.with_suffix(".xml"), graph.metadata)
            if probe != tmp:
                write_ir(probe, probe.with_suffix(".xml"), graph.metadata)
            got = OpenVinoModel(probe.with_suffix(".xml")).detect(image.numpy(), score_thresh=0.0)
        else:
            got = OnnxModel(probe).detect(image.numpy(), score_thresh=0.0)
        diff = _detection_diff(expected, got, image_size)
        scale = float(image_size)
        if not diff <= TOLERANCE * scale:
            raise ExportError(f"{path}: the exported detector's boxes or scores differ from eager by {diff:.3g} "
                              f"pixels; nothing was written")  # fmt: skip
        if format == "openvino":
            publish_ir(tmp.with_suffix(".xml"), path)
        else:
            atomic_write(path, lambda f: f.write(tmp.read_bytes()))
    return ExportResult(path, format, image_size, 1, diff, scale)


def _detection_diff(expected: dict, got: dict, side: int, top: int = 20) -> float:
    """How far apart two detectors' outputs are, in pixels: the ``top`` best scores (sorted, so
    ties may be ordered either way; scaled by ``side``) and the box of each of those detections
    whose score no other one shares, found among the export's with the same label."""
    if len(got["scores"]) < min(top, len(expected["scores"])):
        return float("inf")
    k = min(top, len(expected["scores"]))
    diff = ((got["scores"][:k].sort().values - expected["scores"][:k].sort().values).abs().max().item() * side
            if k else 0.0)  # fmt: skip
    scores = expected["scores"]
    for i in range(k):
        if ((scores - scores[i]).abs() < 1e-5).sum() > 1:
            continue  # a tie: either detection may come first
        same = got["labels"] == expected["labels"][i]
        if not same.any():
            return float("inf")
        diff = max(diff, (got["boxes"][same] - expected["boxes"][i]).abs().max(1).values.min().item())
    return diff
