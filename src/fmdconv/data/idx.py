"""Reading gzip-compressed IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimension sizes, then the values in row-major order. Only the unsigned-byte type (``0x08``) is
read here, which is what (Fashion-)MNIST uses.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fmdconv.data.errors import DatasetFormatError

UNSIGNED_BYTE_TYPE = 0x08


def read_idx_ubyte(path: Path, ndim: int) -> Tensor:
    """Read a gzip-compressed unsigned-byte IDX file holding an ``ndim``-dimensional array.

    Args:
        path: the ``.gz`` file.
        ndim: the number of dimensions the file must declare (1 for labels, 3 for images).

    Returns:
        A uint8 tensor with the shape the file's header declares.

    Raises:
        DatasetFormatError: the file is not valid gzip, is truncated, has a wrong magic number,
            declares another element type or number of dimensions, or its payload size does not
            match the declared dimensions.
    """
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFormatError(path, f"not a readable gzip file ({error})") from error
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetFormatError(
            path, f"truncated: {len(raw)} bytes, shorter than the {header_size}-byte IDX header"
        )
    expected_magic = bytes((0, 0, UNSIGNED_BYTE_TYPE, ndim))
    if raw[:4] != expected_magic:
        raise DatasetFormatError(
            path, f"bad IDX magic number 0x{raw[:4].hex()}, expected 0x{expected_magic.hex()}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected_size = math.prod(shape)
    payload = raw[header_size:]
    if len(payload) != expected_size:
        problem = "truncated" if len(payload) < expected_size else "has trailing bytes"
        raise DatasetFormatError(
            path,
            f"{problem}: header declares shape {shape} ({expected_size} bytes) "
            f"but the file holds {len(payload)} bytes of data",
        )
    return torch.from_numpy(np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy())
