"""ExecuTorch (``.pte``): PyTorch's own on-device runtime. The inference form is captured by
``torch.export``, lowered to the Edge dialect with every operator XNNPACK takes delegated to it
(on a phone or a board, XNNPACK is the CPU backend), and serialised as a program.

The effnet metadata travels as a constant method of the program, ``effnet_metadata``, that
returns it as a JSON string: ExecuTorch's own way of storing configuration in a program, read
back with the runtime alone.

Pitfall: an XNNPACK graph exported from a channels_last example fails at run time
(``xnn_status_invalid_parameter``); the example is made contiguous here whatever the caller's.
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

METADATA_METHOD = "effnet_metadata"
MAGIC = b"ET"  # a program's flatbuffer identifier is "ET" and two digits, at byte 4


def lower(program, metadata: dict[str, str] | None) -> bytes:
    """An exported program (``torch.export``) lowered to XNNPACK and serialised, with ``metadata``."""
    require("executorch")
    constants = {METADATA_METHOD: json.dumps(metadata, sort_keys=True)} if metadata is not None else None
    with native_output_captured():  # importing executorch logs torch warnings and cpuinfo's findings
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        try:
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=constants)
            return edge.to_executorch().buffer
        except Exception as exc:  # exir raises its own error types from every pass
            raise RunError(f"ExecuTorch could not lower the model ({first_line(exc)})") from None


def write_pte(net: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    """Export ``net`` (a plain module or a PT2E-converted graph) on a contiguous ``example``,
    lower it and write it with ``metadata``."""
    require("executorch")
    with torch.no_grad():
        program = torch.export.export(net, (example.contiguous(),))
    Path(path).write_bytes(lower(program, metadata))


def set_threads(threads: int) -> None:
    """ExecuTorch's XNNPACK threadpool is one per process; resize it only when it differs."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchModel(ExportedModel):
    """An effnet ``.pte`` run by ExecuTorch's runtime (XNNPACK). A file without effnet metadata
    needs ``model``, the architecture it holds. ``threads`` sets the process's XNNPACK pool."""

    kind = "ExecuTorch"
    engine = "executorch"  # what --engine names it, and --json reports

    def __init__(self, path: str | os.PathLike, threads: int | None = None, model: str | None = None):
        require("executorch")
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such ExecuTorch file")
        content = self.path.read_bytes()
        if content[4:6] != MAGIC:
            raise WeightsError(f"{self.path}: not an ExecuTorch (.pte) program")
        with native_output_captured() as captured:  # the runtime logs cpuinfo's findings from C++
            from executorch.runtime import Runtime

            set_threads(threads or torch.get_num_threads())
            try:
                self.program = Runtime.get().load_program(content)
                meta = {}
                if METADATA_METHOD in self.program.method_names:
                    meta = json.loads(self.program.load_method(METADATA_METHOD).execute([])[0])
                forward = self.program.load_method("forward")
            except (RuntimeError, ValueError) as exc:
                raise WeightsError(f"{self.path}: ExecuTorch cannot load it ({first_line(exc)})") from None
        if forward is None:
            raise WeightsError(f"{self.path}: the program has no forward method ({captured.text.strip()[:200]})")
        self.local = threading.local()  # a method runs one call at a time: one per thread
        self.local.forward = forward
        meta_in, meta_out = forward.metadata.input_tensor_meta(0), forward.metadata.output_tensor_meta(0)
        shape = [int(v) for v in meta_in.sizes()]
        graph = {"channels": shape[1], "image_size": shape[2], "batch_size": shape[0],
                 "num_classes": int(np.prod(meta_out.sizes()[1:]))}  # fmt: skip
        self._read_metadata(meta, model, graph)

    def _forward(self):
        forward = getattr(self.local, "forward", None)
        if forward is None:
            forward = self.local.forward = self.program.load_method("forward")
        return forward

    def _run(self, array: np.ndarray) -> np.ndarray:
        (out,) = self._forward().execute([torch.from_numpy(array)])
        return out.numpy().copy()
