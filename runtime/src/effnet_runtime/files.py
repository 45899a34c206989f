"""Opening an exported effnet classifier on its runtime, without torch: the metadata effnet wrote
into the file (name, class names, preprocessing, input) and a ``run`` on NCHW float32 batches.

Where each format keeps the metadata (as ``effnet export`` writes it): ONNX in the model's
metadata properties (read through ONNX Runtime, so the ``onnx`` package is not needed); LiteRT
in a flatbuffer metadata entry named ``effnet`` holding JSON; OpenVINO in the ``effnet`` section
of the IR's rt_info.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from effnet_runtime.errors import RuntimeUsageError


def _parse(meta: dict[str, str], path: Path) -> dict:
    if meta.get("format") != "effnet":
        raise RuntimeUsageError(
            f"{path}: no effnet metadata (not written by `effnet export`): its preprocessing and class names are "
            "unknown; open it with effnet itself (effnet predict --model NAME)"
        )
    try:
        parsed = {
            "model_name": meta["model_name"],
            "task": meta.get("task") or "classification",
            "preprocessing": json.loads(meta["preprocessing"]),
            "class_names": json.loads(meta.get("class_names", "null")),
            "input": json.loads(meta["input"]),
            "quantization": json.loads(meta.get("quantization", "null")),
        }
        for key in ("resolution", "resize", "interpolation", "mean", "std"):
            parsed["preprocessing"][key]  # noqa: B018 - every one is needed
    except (KeyError, ValueError, TypeError) as exc:
        raise RuntimeUsageError(f"{path}: effnet metadata is damaged ({exc})") from None
    if parsed["task"] != "classification":
        raise RuntimeUsageError(f"{path}: a {parsed['task']} model; effnet-runtime runs classifiers (use effnet)")
    return parsed


class Model:
    """An exported classifier: ``metadata``, ``engine``, and ``run`` on an NCHW float32 batch of
    any size (a file exported for a fixed batch runs it in chunks, the last one padded)."""

    engine = ""
    kind = ""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise RuntimeUsageError(f"{self.path}: no such file")
        self.threads = threads or min(os.cpu_count() or 1, 4)
        self.metadata = _parse(self._open(), self.path)
        self.name = self.metadata["model_name"]
        self.class_names = self.metadata["class_names"]
        self.preprocessing = self.metadata["preprocessing"]

    def _open(self) -> dict[str, str]:
        raise NotImplementedError

    def _run(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> np.ndarray:
        want = self.metadata["input"]
        side, channels, fixed = want["image_size"], want["channels"], want["batch_size"]
        if batch.ndim != 4 or batch.shape[1:] != (channels, side, side):
            raise RuntimeUsageError(f"{self.path}: takes (N, {channels}, {side}, {side}) batches, got {batch.shape}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if fixed is None or len(batch) == fixed:
            return self._run(batch)
        outputs = []
        for start in range(0, len(batch), fixed):
            chunk = batch[start : start + fixed]
            pad = fixed - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            outputs.append(self._run(chunk)[: fixed - pad])
        return np.concatenate(outputs)

    def predict(self, images, top_k: int = 5) -> list[dict]:
        """Top-k classes of each image (paths, bytes or PIL images) with their probabilities."""
        from effnet_runtime.preprocess import load, preprocess

        batch = np.stack([preprocess(load(image), self.preprocessing) for image in images])
        return [top(logits, self.class_names, top_k) for logits in self.run(batch)]


def top(logits: np.ndarray, names: list[str] | None, k: int) -> dict:
    shifted = np.exp(logits - logits.max())
    probs = shifted / shifted.sum()
    order = np.argsort(-probs, kind="stable")[: min(k, len(probs))]
    return {"top": [{"label": names[i] if names else str(i), "index": int(i), "prob": float(probs[i])} for i in order]}


class LiteRTModel(Model):
    engine, kind = "litert", "LiteRT"

    def _open(self) -> dict[str, str]:
        from ai_edge_litert import schema_py_generated as schema

        self.content = self.path.read_bytes()
        if len(self.content) < 8 or self.content[4:8] != b"TFL3":
            raise RuntimeUsageError(f"{self.path}: not a LiteRT (.tflite) file")
        self.local = threading.local()  # an interpreter runs one call at a time: one per thread
        self._interpreter()
        try:
            model = schema.Model.GetRootAs(self.content, 0)
            for i in range(model.MetadataLength()):
                entry = model.Metadata(i)
                if entry.Name() == b"effnet":
                    return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode())
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise RuntimeUsageError(f"{self.path}: damaged LiteRT file ({exc})") from None
        return {}

    def _interpreter(self):
        interpreter = getattr(self.local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            try:
                interpreter = Interpreter(model_content=self.content, num_threads=self.threads)
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise RuntimeUsageError(f"{self.path}: LiteRT cannot load it ({exc})") from None
            self.local.interpreter = interpreter
            self.local.details = (interpreter.get_input_details()[0], interpreter.get_output_details()[0])
        return interpreter

    def _run(self, array: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter()
        detail, out = self.local.details  # read once per interpreter, not on every call
        if detail["dtype"] != np.float32:  # a PT2E int8 file: int8 in and out, on the graph's own scales
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            array = np.clip(np.round(array / scale) + zero, info.min, info.max).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])
        if result.dtype != np.float32:
            scale, zero = out["quantization"]
            return (result.astype(np.float32) - zero) * scale
        return result.copy()


class OnnxModel(Model):
    engine, kind = "onnxruntime", "ONNX"

    def _open(self) -> dict[str, str]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise RuntimeUsageError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: array})[0]


class OpenVinoModel(Model):
    engine, kind = "openvino", "OpenVINO"

    def _open(self) -> dict[str, str]:
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeUsageError(
                f"{self.path}: an OpenVINO IR needs openvino: pip install 'effnet-runtime[openvino]'"
            ) from None
        if not self.path.with_suffix(".bin").is_file():
            raise RuntimeUsageError(f"{self.path}: its weights {self.path.with_suffix('.bin').name} are missing")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(
                model, "CPU", {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": "f32"}
            )
        except RuntimeError as exc:
            raise RuntimeUsageError(f"{self.path}: OpenVINO cannot load it ({str(exc).splitlines()[0]})") from None
        self.lock = threading.Lock()
        self.request = self.compiled.create_infer_request()
        if not model.has_rt_info(["effnet"]):
            return {}
        return {str(k): str(v) for k, v in model.get_rt_info("effnet").value.items()}

    def _run(self, array: np.ndarray) -> np.ndarray:
        with self.lock:  # one infer request, one call at a time
            return self.request.infer({0: array})[self.compiled.output(0)].copy()


ENGINES = {".tflite": LiteRTModel, ".onnx": OnnxModel, ".xml": OpenVinoModel}


def open_model(path: str | os.PathLike, threads: int | None = None) -> Model:
    """The exported classifier at ``path`` on the runtime its suffix names."""
    engine = ENGINES.get(Path(path).suffix.lower())
    if engine is None:
        raise RuntimeUsageError(f"{path}: give a .tflite, .onnx or OpenVINO .xml file (effnet export writes them)")
    return engine(path, threads)
