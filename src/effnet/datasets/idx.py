"""The IDX format of MNIST and Fashion-MNIST: a magic number, dimensions, raw bytes."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from effnet.core.errors import UsageError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (possibly gzipped) IDX file into an array of its declared shape and type."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UsageError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UsageError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UsageError(
            f"{path}: truncated or padded IDX file ({len(data) - header} bytes of data, expected {expected})"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
