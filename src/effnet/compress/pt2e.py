"""int8 for the mobile runtimes with PyTorch's PT2E quantization: the inference form is captured
by ``torch.export``, the runtime's own quantizer annotates it (LiteRT's ``PT2EQuantizer``,
ExecuTorch's ``XNNPACKQuantizer``: symmetric int8, one scale per output channel for weights),
observers see the calibration images, and ``convert_pt2e`` leaves quantize/dequantize pairs
that the converter (LiteRT) or the XNNPACK delegate (ExecuTorch) turns into integer kernels.

Both quantizers fuse a convolution with a following ReLU but not with ReLU6 (``hardtanh``), which
they give the convolution's own quantization: the unclamped convolution output then sets the scale
(the Lite stem's spans ±90, so ReLU6's 0..6 got eight levels and the real ImageNet Lite0 kept its
top-1 on 5 of 16 photos). ``_FusedClamp`` moves the output quantization from such a convolution to
the clamp, as both runtimes fuse the pair into one kernel with a clamped output.

``dynamic`` (LiteRT only): int8 weights and activations quantized on the fly from their
observed range at run time, so no calibration images; the input and output stay float.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import UsageError
from effnet.core.extras import require
from effnet.core.quiet import native_output_captured
from effnet.deploy.export import check_batch, export_metadata, inference_form, input_spec
from effnet.deploy.litert import convert as litert_convert
from effnet.deploy.litert import with_metadata
from effnet.deploy.pte import lower


def _quantizer(format: str, dynamic: bool):
    if format == "litert":
        with native_output_captured():  # importing litert_torch logs TensorFlow's and torch's warnings
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

        return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    if dynamic:
        raise UsageError("--method dynamic is LiteRT's (--format litert); ExecuTorch's int8 is calibrated (ptq)")
    with native_output_captured():  # importing executorch logs torch warnings
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


class _FusedClamp:
    """``base`` (a PT2E quantizer) with each ``conv → hardtanh`` pair annotated like ``conv → relu``:
    no quantization between them, the clamp's output observed on its own."""

    def __init__(self, base):
        self.base = base

    def transform_for_annotation(self, model):
        return self.base.transform_for_annotation(model)

    def annotate(self, model):
        from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec

        model = self.base.annotate(model)
        clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
        for node in model.graph.nodes:
            conv = node.args[0] if node.op == "call_function" and node.target in clamps else None
            if conv is None or conv.target != torch.ops.aten.conv2d.default or len(conv.users) != 1:
                continue
            conv_notes = conv.meta.get("quantization_annotation")
            if conv_notes is None or not isinstance(conv_notes.output_qspec, QuantizationSpec):
                continue
            node.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=conv_notes.output_qspec,
                                                                          _annotated=True)  # fmt: skip
            conv_notes.output_qspec = None
        return model

    def validate(self, model):
        self.base.validate(model)

    def prepare_obs_or_fq_callback(self, model, edge_or_node_to_obs_or_fq):
        self.base.prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)


def quantized_graph(model, format: str, batches: list[np.ndarray], *, dynamic: bool = False, image_size=None):
    """The PT2E int8 graph of ``model``'s inference form (batch 1) and its quantizer, calibrated
    on ``batches`` one image at a time (the graph's batch is fixed at 1, as on the device)."""
    require(format)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    channels, side = input_spec(model)
    side = image_size or side
    example = check_batch(model, 1, channels, side)
    quantizer = _quantizer(format, dynamic)
    net = inference_form(model)
    with torch.no_grad():
        graph = prepare_pt2e(torch.export.export(net, (example,)).module(), _FusedClamp(quantizer))
        images = [b[i : i + 1] for b in batches for i in range(len(b))]
        if not dynamic and not images:
            raise UsageError("no calibration images")
        if dynamic:  # no data, but the weights' observers still need one pass to have seen them
            images = [example.numpy()]
        for image in images:
            graph(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
        graph = convert_pt2e(graph, fold_quantize=format == "executorch")
    return graph, quantizer, example


def write_int8(model, path: Path, format: str, batches: list[np.ndarray], *, dynamic: bool = False,
               extra_metadata: dict[str, str] | None = None) -> None:  # fmt: skip
    """Write ``model`` as a PT2E int8 ``.tflite`` or ``.pte`` (batch 1) with effnet's metadata."""
    graph, quantizer, example = quantized_graph(model, format, batches, dynamic=dynamic)
    metadata = export_metadata(model, example.shape[-1], 1, extra_metadata)
    metadata["quantization"] = json.dumps({"method": "dynamic" if dynamic else "ptq", "scheme": "pt2e"})
    if format == "litert":
        content = with_metadata(litert_convert(graph, example, quantizer=quantizer), metadata)
    else:
        with torch.no_grad():
            content = lower(torch.export.export(graph, (example,)), metadata)
    Path(path).write_bytes(content)
