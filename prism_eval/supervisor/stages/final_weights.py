"""Supervisor: read back the scored model's `final.safetensors` without trusting it.

The file was written in the worker (hostile). It is opened without following links, its
size is capped, and its header (8-byte little-endian length, then JSON) is parsed and
checked: known dtypes, shapes that match the byte ranges, ranges that tile the data exactly.
Nothing is unpickled; no tensor is loaded here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
from pathlib import Path

from prism_eval.errors import Failed
from prism_eval.supervisor.attest import Artifacts

DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024


def final_weights_cap(max_params: int) -> int:
    """The largest saved state a model under the parameter cap may leave: 8 bytes an element
    (float64) plus 64 MiB for the header and non-float buffers."""
    return 8 * max_params + (1 << 26)


def _bad(path: Path, why: str) -> Failed:
    return Failed("audit.bad_final_weights", f"{path.name} is not valid safetensors: {why}")


def read_final_weights(path: Path, max_bytes: int) -> Artifacts:
    """Check the saved weights file and summarize it (digest, tensors, elements)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise Failed(
            "audit.missing_final_weights",
            "the trainer did not leave final.safetensors: the scored model was not saved",
        ) from exc
    except OSError as exc:
        raise _bad(path, f"cannot open it ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _bad(path, "not a regular file")
        if info.st_size > max_bytes:
            raise _bad(path, f"{info.st_size:,} bytes, over the cap of {max_bytes:,}")
        digest = hashlib.sha256()
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise _bad(path, "shorter than its header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, info.st_size - 8):
            raise _bad(path, f"header length {header_len} is impossible")
        header_bytes = handle.read(header_len)
        digest.update(prefix)
        digest.update(header_bytes)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    tensors, elements = _check_header(path, header_bytes, info.st_size - 8 - header_len)
    return Artifacts(
        final_weights_sha256=digest.hexdigest(),
        final_weights_bytes=info.st_size,
        tensors=tensors,
        elements=elements,
    )


def _check_header(path: Path, header_bytes: bytes, data_bytes: int) -> tuple[int, int]:
    """Validate the JSON header against the data size; return (tensors, elements)."""
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise _bad(path, "its header is not JSON") from exc
    if not isinstance(header, dict):
        raise _bad(path, "its header is not an object")
    header.pop("__metadata__", None)
    ranges: list[tuple[int, int]] = []
    elements = 0
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if not isinstance(shape, list) or any(type(n) is not int or n < 0 for n in shape):
                raise ValueError("a shape is a list of non-negative integers")
            count = math.prod(shape)
            width = DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(path, f"tensor {name!r} has a malformed entry") from exc
        if not (isinstance(begin, int) and isinstance(end, int)) or end - begin != count * width:
            raise _bad(path, f"tensor {name!r}: byte range does not match its shape")
        ranges.append((begin, end))
        elements += count
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise _bad(path, "tensor byte ranges overlap or leave gaps")
        position = end
    if position != data_bytes:
        raise _bad(path, f"tensors cover {position} bytes of {data_bytes}")
    return len(ranges), elements
