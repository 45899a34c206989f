"""LiteRT (TensorFlow Lite's runtime, ``.tflite``): what Android, iOS and microcontroller-class
boards run. ``litert-torch`` converts the inference form to a flatbuffer; ``ai-edge-litert``'s
interpreter (with its XNNPACK delegate) runs it, here and in the torch-free runtime.

The effnet metadata goes where TFLite keeps model metadata: an entry of the flatbuffer's
``metadata`` list (name ``effnet``) pointing at a buffer holding the metadata as JSON, the same
keys and values as an ONNX file's metadata properties. The interpreter ignores entries it does
not know, so the file runs anywhere a .tflite runs.

The graph keeps PyTorch's NCHW input (the converter inserts the transposes); a peer's file,
exported from TensorFlow, takes NHWC, which ``LiteRTModel`` handles by the input's shape. A PT2E
int8 file takes and gives int8 tensors: ``LiteRTModel`` quantizes the float input and
dequantizes the output with the graph's own scale and zero point, so callers pass floats.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import RunError, WeightsError, first_line
from effnet.core.extras import require
from effnet.core.quiet import native_output_captured
from effnet.deploy.runtime import ExportedModel

METADATA_NAME = "effnet"  # the flatbuffer metadata entry holding effnet's metadata (JSON)


def convert(net: torch.nn.Module, example: torch.Tensor, *, quantizer=None):
    """A ``litert_torch`` model of ``net`` (already quantized by PT2E when ``quantizer`` is the
    PT2E quantizer it was prepared with), converted quietly: the converter narrates its progress
    on stdout and logs from C++."""
    require("litert")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    with native_output_captured():  # its import logs TensorFlow's and torch's warnings too
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig

        options = {} if quantizer is None else {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}
        try:
            return litert_torch.convert(net, (example.contiguous(),), **options).model_content()
        except Exception as exc:  # the converter raises whatever the failing pass raised
            raise RunError(f"LiteRT could not convert the model ({first_line(exc)})") from None


def with_metadata(content: bytes, metadata: dict[str, str]) -> bytes:
    """``content`` with effnet's metadata as a flatbuffer metadata entry (replacing an older one)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def read_metadata(content: bytes, origin) -> dict[str, str]:
    """effnet's metadata in a .tflite (empty when it has none); a file that is not a TFLite
    flatbuffer is a WeightsError."""
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or content[4:8] != b"TFL3":
        raise WeightsError(f"{origin}: not a LiteRT (.tflite) file")
    try:
        model = schema.Model.GetRootAs(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) == METADATA_NAME:
                return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode())
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{origin}: damaged LiteRT file ({first_line(exc)})") from None
    return {}


def write_tflite(net, example, path: Path, metadata: dict[str, str], *, quantizer=None) -> None:
    """Convert ``net`` (traced on ``example``, contiguous) and write it with ``metadata``."""
    Path(path).write_bytes(with_metadata(convert(net, example, quantizer=quantizer), metadata))


class LiteRTModel(ExportedModel):
    """An effnet ``.tflite`` served by LiteRT's interpreter (XNNPACK) on ``threads`` threads. A
    file without effnet metadata (a peer's) needs ``model``, the architecture it holds."""

    kind = "LiteRT"
    engine = "litert"  # what --engine names it, and --json reports

    def __init__(self, path: str | os.PathLike, threads: int | None = None, model: str | None = None):
        require("litert", modules=("ai_edge_litert",))
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such LiteRT file")
        self.content = self.path.read_bytes()
        meta = read_metadata(self.content, self.path)
        self.threads = threads or torch.get_num_threads()
        self.local = threading.local()  # an interpreter runs one call at a time: one per thread
        probe = self._interpreter()
        (self.input_detail,), self.output_details = probe.get_input_details(), probe.get_output_details()
        shape = [int(v) for v in self.input_detail["shape"]]
        self.nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
        channels, side = (shape[3], shape[1]) if self.nhwc else (shape[1], shape[2])
        outputs = int(np.prod(self.output_details[0]["shape"][1:]))
        graph = {"channels": channels, "image_size": side, "batch_size": shape[0], "num_classes": outputs}
        self._read_metadata(meta, model, graph)

    def _interpreter(self):
        interpreter = getattr(self.local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            with native_output_captured():  # "INFO: Created TensorFlow Lite XNNPACK delegate" on stderr
                try:
                    interpreter = Interpreter(model_content=self.content, num_threads=self.threads)
                    interpreter.allocate_tensors()
                except (ValueError, RuntimeError) as exc:
                    raise WeightsError(f"{self.path}: LiteRT cannot load it ({first_line(exc)})") from None
            self.local.interpreter = interpreter
        return interpreter

    def _run(self, array: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter()
        detail = self.input_detail
        if self.nhwc:
            array = array.transpose(0, 2, 3, 1)
        interpreter.set_tensor(detail["index"], _quantized(np.ascontiguousarray(array), detail))
        interpreter.invoke()
        out = self.output_details[0]
        return _dequantized(interpreter.get_tensor(out["index"]), out)


def _quantized(array: np.ndarray, detail: dict) -> np.ndarray:
    """A float array as the graph's input type: int8/uint8 inputs with the graph's scale and zero point."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return array.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale) + zero, info.min, info.max).astype(dtype)


def _dequantized(array: np.ndarray, detail: dict) -> np.ndarray:
    if array.dtype == np.float32:
        return array.copy()
    scale, zero = detail["quantization"]
    return ((array.astype(np.float32) - zero) * scale).astype(np.float32)
