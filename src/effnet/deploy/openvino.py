"""OpenVINO: the second CPU engine, beside ONNX Runtime, behind the same ``ExportedModel``
interface, so ``predict``, ``eval``, ``bench``, the latency search and the compression pipeline
run it without knowing which engine they hold.

An effnet IR is our checked ONNX export converted by OpenVINO's own ``convert_model`` and saved
as ``.xml`` + ``.bin`` with the effnet metadata in the model's ``rt_info`` (section ``effnet``,
the same keys and values as the ONNX file's metadata properties). OpenVINO also reads our
``.onnx`` files (fp32 or int8 QDQ) directly.

Precision: on CPUs with bf16 units (AMX, AVX512-BF16) OpenVINO runs fp32 models in bf16 unless
told otherwise, ~3 significant digits. effnet compiles with ``INFERENCE_PRECISION_HINT=f32`` so
that an engine switch never changes a prediction beyond float noise; ``precision="bf16"`` asks
for the fast path explicitly (benchmarks/openvino/latency.py measures its error beside its speed).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from effnet.core.errors import UsageError, WeightsError, first_line
from effnet.core.extras import require
from effnet.core.fileio import atomic_write
from effnet.deploy.choices import OPENVINO_HINTS, OPENVINO_PRECISIONS
from effnet.deploy.runtime import ExportedModel, float_array, onnx_metadata, read_onnx

SECTION = "effnet"  # the rt_info section that holds effnet's metadata


def write_ir(onnx_path: str | os.PathLike, xml_path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Convert an ONNX file to OpenVINO IR at ``xml_path`` (and its ``.bin``) with ``metadata``
    in rt_info. Weights stay fp32 (``compress_to_fp16=False``): the IR must equal the ONNX."""
    require("openvino")
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(str(value), [SECTION, key])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def publish_ir(tmp: Path, path: Path) -> None:
    """The .bin first, then the .xml that names it: an .xml on disk always has its weights. If the
    .xml cannot be written, the new .bin goes too."""
    bin_path = path.with_suffix(".bin")
    atomic_write(bin_path, lambda f: f.write(tmp.with_suffix(".bin").read_bytes()))
    try:
        atomic_write(path, lambda f: f.write(tmp.read_bytes()))
    except BaseException:
        bin_path.unlink(missing_ok=True)
        raise


def ir_metadata(model) -> dict[str, str]:
    """The effnet section of an OpenVINO model's rt_info (empty when it has none)."""
    if not model.has_rt_info([SECTION]):
        return {}
    return {str(k): str(v) for k, v in model.get_rt_info(SECTION).value.items()}


def compile_properties(threads: int | None, hint: str, precision: str, cache_dir: str | None) -> dict:
    if hint not in OPENVINO_HINTS:
        raise UsageError(f"--ov-hint must be one of {', '.join(OPENVINO_HINTS)}, got {hint!r}")
    if precision not in OPENVINO_PRECISIONS:
        raise UsageError(f"--ov-precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    threads = threads or torch.get_num_threads()
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    properties = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": hint.upper(),
        "INFERENCE_PRECISION_HINT": precision,
    }
    if cache_dir:
        properties["CACHE_DIR"] = str(cache_dir)  # compiled blobs: a second start skips compilation
    return properties


def new_core():
    """An OpenVINO Core that reads weights into memory instead of mapping the file
    (``ENABLE_MMAP`` off, a Core property; used for compiling too, for blobs from ``cache_dir``). With the map,
    a ``.bin`` overwritten in place while a model runs changes its weights under it (a server then
    answers with a mix of two models), and a truncated one kills the process with SIGBUS. The cost
    is one copy of the weights in memory, tens of MB for an EfficientNet."""
    import openvino as ov

    ov_core = ov.Core()
    ov_core.set_property({ov.properties.enable_mmap: False})
    return ov_core


def read_model(path: str | os.PathLike):
    """An OpenVINO model from an ``.xml`` IR (its ``.bin`` beside it) or an ``.onnx`` file, with a
    one-line error for a missing, damaged or truncated file. The weights are read, not mapped
    (``new_core``): the model keeps them if the file changes afterwards."""
    require("openvino")

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise WeightsError(f"{path}: its weights {path.with_suffix('.bin').name} are missing beside it")
    try:
        return new_core().read_model(str(path))
    except RuntimeError as exc:
        raise WeightsError(f"{path}: not a readable OpenVINO model ({first_line(exc)})") from None


class Runner:
    """A compiled model run on arrays: one request for a single chunk, an ``AsyncInferQueue`` over
    the compiled model's streams for several (what the THROUGHPUT hint is for).

    An infer request runs one inference at a time ("Infer Request is busy" otherwise), so every
    calling thread gets its own: ``effnet serve --workers 2`` calls the engine from two threads."""

    def __init__(self, model, properties: dict, origin: str | os.PathLike):
        self.origin = origin
        core = new_core()
        self.compiled = self._compile(core, model, properties)
        # A second compile with the batch fixed at 1 runs single images: OpenVINO picks faster
        # kernels for a static shape (batch-1 B0 at 224 px: 13-16% faster in every precision,
        # benchmarks/precision/int8.json), for 0.2-0.3 s more start-up and a second copy of the weights.
        self.single = None
        shape = model.input(0).get_partial_shape()
        latency = properties.get("PERFORMANCE_HINT") == "LATENCY"  # single images; THROUGHPUT runs batches
        if latency and shape.rank.is_static and shape[0].is_dynamic and all(d.is_static for d in list(shape)[1:]):
            single = model.clone()
            single.reshape({0: [1, *(d.get_length() for d in list(shape)[1:])]})
            self.single = self._compile(core, single, properties)
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.local = threading.local()

    def _compile(self, core, model, properties: dict):
        try:
            return core.compile_model(model, "CPU", properties)
        except RuntimeError as exc:
            raise WeightsError(f"{self.origin}: OpenVINO cannot compile it ({first_line(exc)})") from None

    def run(self, array: np.ndarray) -> np.ndarray:
        single = self.single is not None and len(array) == 1
        slot = "single_request" if single else "request"
        request = getattr(self.local, slot, None)
        if request is None:
            request = (self.single if single else self.compiled).create_infer_request()
            setattr(self.local, slot, request)
        try:
            request.infer({0: array})
        except RuntimeError as exc:
            raise WeightsError(f"{self.origin}: OpenVINO failed to run it ({first_line(exc)})") from None
        return request.get_output_tensor(0).data.copy()  # the request reuses its buffer

    def run_named(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name, for inputs by name (a detector's graph: several of each, and
        outputs whose size depends on the input, e.g. after NMS)."""
        request = getattr(self.local, "named_request", None)
        if request is None:
            request = self.local.named_request = self.compiled.create_infer_request()
        try:
            request.infer({k: float_array(v) for k, v in feeds.items()})
        except RuntimeError as exc:
            raise WeightsError(f"{self.origin}: OpenVINO failed to run it ({first_line(exc)})") from None
        return {out.get_any_name(): request.get_tensor(out).data.copy() for out in self.compiled.outputs}

    def run_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        if self.streams < 2 or len(chunks) < 2:
            return [self.run(chunk) for chunk in chunks]
        outputs: list[np.ndarray | None] = [None] * len(chunks)
        queue = self._queue()
        for index, chunk in enumerate(chunks):
            queue.start_async({0: chunk}, (outputs, index))
        queue.wait_all()
        return outputs

    def _queue(self):
        """This thread's AsyncInferQueue, made once: a server calls run_chunks on every batch, and
        a new queue would create ``streams`` infer requests each time."""
        queue = getattr(self.local, "queue", None)
        if queue is None:
            import openvino as ov

            queue = self.local.queue = ov.AsyncInferQueue(self.compiled, self.streams)
            queue.set_callback(_store_output)
        return queue

    def run_batch(self, array: np.ndarray) -> np.ndarray:
        """A whole batch (dynamic-batch graph): split over the streams when there are several."""
        if self.streams < 2 or len(array) < 2 * self.streams:
            return self.run(array)
        parts = [np.ascontiguousarray(p) for p in np.array_split(array, self.streams)]
        return np.concatenate(self.run_chunks(parts))


def _store_output(request, slot) -> None:
    outputs, index = slot
    outputs[index] = request.get_output_tensor(0).data.copy()  # the request reuses its buffer


class OpenVinoModel(ExportedModel):
    """An effnet export (``.xml`` IR or ``.onnx``) compiled by OpenVINO for the CPU.

    ``hint="latency"`` runs one request on all ``threads``; ``"throughput"`` lets OpenVINO pick
    several streams and a batch is split across them (``AsyncInferQueue``), which pays for batch
    work. ``cache_dir`` keeps compiled blobs between starts."""

    kind = "OpenVINO"
    engine = "openvino"  # what --engine names it, and --json reports

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        *,
        hint: str = "latency",
        precision: str = "f32",
        cache_dir: str | os.PathLike | None = None,
    ):
        require("openvino")
        self.path = Path(path)
        properties = compile_properties(threads, hint, precision, cache_dir)
        if self.path.suffix.lower() == ".onnx":
            self._read_metadata(onnx_metadata(read_onnx(self.path)))  # read_onnx: the clear error for non-ONNX
            model = read_model(self.path)
        else:
            model = read_model(self.path)
            self._read_metadata(ir_metadata(model))
        self.runner = Runner(model, properties, self.path)
        self.hint, self.precision, self.threads = hint, precision, properties["INFERENCE_NUM_THREADS"]

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.runner.run(array)

    def _run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.runner.run_named(feeds).items()}

    def _run_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        return self.runner.run_chunks(chunks)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.input["batch_size"] is not None:
            return super().__call__(x)  # a static graph: chunks of its batch, over the streams
        self.check_input(tuple(x.shape))
        return torch.from_numpy(self.runner.run_batch(np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)))
