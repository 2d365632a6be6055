"""A strict reader of safetensors headers, independent of the safetensors library.

The library's own errors do not say which tensor or which bound was wrong;
validation reports need one clear reason per file, so the header is checked
here with the same rules the library's loader enforces.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

# Bits per element. Sub-byte types (F4, F6) exist since safetensors 0.6.
DTYPE_BITS: dict[str, int] = {
    "F64": 64,
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "I64": 64,
    "I32": 32,
    "I16": 16,
    "I8": 8,
    "U64": 64,
    "U32": 32,
    "U16": 16,
    "U8": 8,
    "BOOL": 8,
    "C64": 64,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F4": 4,
}

# Real headers are kilobytes; a huge length is corruption or an attempt to
# make the worker allocate memory.
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsHeaderError(ValueError):
    """The file is not a well-formed safetensors file; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    header_bytes: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]

    @property
    def dtypes(self) -> set[str]:
        return {tensor.dtype for tensor in self.tensors}


def read_header(stream: BinaryIO, file_size: int) -> SafetensorsHeader:
    """Parse and check the header of an open safetensors file of ``file_size`` bytes."""
    length = _header_length(stream, file_size)
    raw = stream.read(length)
    if len(raw) != length:
        raise SafetensorsHeaderError("file ends inside the header")
    document = _parse_json(raw)
    metadata = _metadata(document.pop("__metadata__", None))
    tensors = tuple(_tensor(name, value) for name, value in document.items())
    _check_layout(tensors, file_size - 8 - length)
    return SafetensorsHeader(header_bytes=length, tensors=tensors, metadata=metadata)


def _header_length(stream: BinaryIO, file_size: int) -> int:
    prefix = stream.read(8)
    if len(prefix) != 8:
        raise SafetensorsHeaderError("file is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise SafetensorsHeaderError(f"header length {length} exceeds {MAX_HEADER_BYTES} bytes")
    if 8 + length > file_size:
        raise SafetensorsHeaderError(f"header length {length} runs past the end of the file")
    return int(length)


def _parse_json(raw: bytes) -> dict[str, object]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsHeaderError(f"header is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise SafetensorsHeaderError("header is not a JSON object")
    return document


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SafetensorsHeaderError("__metadata__ is not an object of strings")
    return dict(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor(name: str, value: object) -> TensorInfo:
    if not isinstance(value, dict):
        raise SafetensorsHeaderError(f"tensor {name!r} is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise SafetensorsHeaderError(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise SafetensorsHeaderError(f"tensor {name!r} has a shape that is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise SafetensorsHeaderError(f"tensor {name!r} has data_offsets that are not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise SafetensorsHeaderError(f"tensor {name!r} has data_offsets [{begin}, {end}] out of order")
    _check_byte_count(name, dtype, shape, end - begin)
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_byte_count(name: str, dtype: str, shape: list[int], actual: int) -> None:
    elements = 1
    for dim in shape:
        elements *= dim
    bits = elements * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != actual:
        raise SafetensorsHeaderError(f"tensor {name!r} spans {actual} bytes but {dtype} {shape} needs {bits / 8:g}")


def _check_layout(tensors: tuple[TensorInfo, ...], data_bytes: int) -> None:
    # The loader requires the tensors to tile the data area exactly: no gaps,
    # no overlaps, nothing after the last one.
    position = 0
    for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if tensor.begin != position:
            raise SafetensorsHeaderError(
                f"tensor {tensor.name!r} starts at byte {tensor.begin}, expected {position} (gap or overlap)"
            )
        position = tensor.end
    if position != data_bytes:
        raise SafetensorsHeaderError(
            f"tensor data ends at byte {position} but the file holds {data_bytes} data bytes"
            + (" (truncated file?)" if position > data_bytes else "")
        )
