"""Post-training int8 for OpenVINO with NNCF, its own quantizer: FakeQuantize nodes that the CPU
plugin turns into int8 kernels (VNNI, AMX-INT8 where present), saved as an IR with the effnet
metadata.

Why quantize OpenVINO's converted model and not the ONNX graph: an ONNX export spells SiLU as
``x * Sigmoid(x)``, and NNCF quantizes both inputs of every Multiply, so each SiLU is cut off from
its convolution and runs as separate Sigmoid and FakeQuantize passes over the expanded feature
maps (3 of B0's 5 ms at batch 1, measured with OpenVINO's per-node counters). ``convert_model``
first fuses the pair into one ``Swish`` op, which NNCF leaves alone and the plugin fuses into the
convolution, so only the convolutions' inputs are quantized.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from effnet.compress.calibration import check_calibration
from effnet.core.errors import UsageError, first_line
from effnet.core.extras import require
from effnet.deploy.export import publish_ir
from effnet.deploy.openvino import SECTION
from effnet.deploy.runtime import onnx_metadata, read_onnx


def quantize_openvino(fp32: str | Path, out: str | Path, batches: list[np.ndarray], *, quiet: bool = True) -> None:
    """Quantize an effnet fp32 ONNX file to an int8 OpenVINO IR at ``out`` (``.xml`` and its
    ``.bin``) with ``batches`` (NCHW float arrays) as calibration data; the effnet metadata is
    carried over."""
    require("openvino", modules=("openvino", "nncf"))
    import nncf
    import openvino as ov

    source = read_onnx(fp32)
    meta = onnx_metadata(source)
    check_calibration(source, meta, batches)
    if len(source.graph.input[0].type.tensor_type.shape.dim) == 3:
        raise UsageError(f"{fp32}: a detector (one image per run) quantizes to ONNX only (an --out .onnx file)")
    # one image per item: NNCF's statistics (and its bias correction) assume batch 1
    images = [image[None] for batch in batches for image in batch]
    model = ov.convert_model(str(fp32))  # fuses x * sigmoid(x) into Swish (see the module doc)
    nncf.set_log_level(logging.ERROR if quiet else logging.WARNING)
    # NNCF's progress bars write to stdout, where --json output goes: stderr, or nowhere when quiet
    progress = contextlib.redirect_stdout(io.StringIO() if quiet else sys.stderr)
    try:
        with progress:
            # full bias correction: on Lite0 (real weights, 400 photo crops) top-1 agreement with
            # fp32 0.80 against 0.75 with the fast variant, for seconds more per model
            int8 = nncf.quantize(model, nncf.Dataset(images), subset_size=len(images), fast_bias_correction=False)
    except Exception as exc:  # NNCF raises plain exceptions from deep inside
        raise UsageError(f"{fp32}: NNCF could not quantize it ({first_line(exc)})") from None
    for key, value in meta.items():
        int8.set_rt_info(str(value), [SECTION, key])
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as scratch:
        tmp = Path(scratch) / "int8.xml"
        ov.save_model(int8, str(tmp), compress_to_fp16=False)
        publish_ir(tmp, Path(out))
