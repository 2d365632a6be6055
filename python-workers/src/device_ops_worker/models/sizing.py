"""What a model weighs: bytes resident once loaded, estimated from file
headers before anything is allocated, and its weight files on disk.

Safetensors headers are read with the same strict reader validation uses;
torch.save archives through their pickled storage records. No torch here:
a dtype is only asked for its element size.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..model_entry import ModelEntry, ModelFormat
from .pickle_storages import archive_storages
from .safetensors_header import SafetensorsHeader, read_header
from .validation import open_regular

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Non-persistent buffers (position ids, rotary caches) are not in the weight
# files but are resident once loaded; the margin keeps the estimate above them.
_MARGIN_FRACTION = 0.02
_MARGIN_BYTES = 64 * 1024
# Loaders cast these to the model's dtype; other tensors keep their own.
_SAFETENSORS_FLOATS = {"F64", "F32", "F16", "BF16"}


def estimate_load_bytes(entry: ModelEntry, dtype: torch.dtype) -> int:
    """Resident bytes once `entry` is loaded in `dtype`, read from file headers only."""
    weight_files = entry.weight_files
    if entry.format is ModelFormat.DIFFUSERS:
        # Pipelines are loaded with safety_checker=None: its weights never load.
        weight_files = tuple(p for p in weight_files if p.parent.name != "safety_checker")
    files = list(_files_in_use(weight_files))
    if not files:
        return entry.size_bytes + _MARGIN_BYTES
    total = sum(_estimate_file(path, dtype.itemsize) for path in files)
    return int(total * (1 + _MARGIN_FRACTION)) + _MARGIN_BYTES


def weights_bytes(entry: ModelEntry) -> int:
    """Bytes of the entry's weight files on disk (each file once); an estimate
    of what loading reads, not of device memory (dtype casts change that)."""
    sizes: dict[str, int] = {}
    for path in entry.weight_files:
        try:
            sizes[os.path.realpath(path)] = os.stat(path).st_size
        except OSError:
            continue
    return sum(sizes.values())


def safetensors_dtypes(path: Path) -> set[str]:
    """Dtype names ("F16", "BF16", "F32", ...) of the tensors in a safetensors
    file, from its header only. Raises SafetensorsHeaderError or OSError."""
    return _safetensors_header(path).dtypes


def _safetensors_header(path: Path) -> SafetensorsHeader:
    with open_regular(Path(os.path.realpath(path))) as stream:
        return read_header(stream, os.fstat(stream.fileno()).st_size)


def _files_in_use(weight_files: Iterable[Path]) -> Iterator[Path]:
    """The files a loader would actually read: per folder, safetensors over
    pickles, and the default weights over variants like `*.fp16.safetensors`."""
    by_folder: dict[Path, list[Path]] = {}
    for path in weight_files:
        by_folder.setdefault(path.parent, []).append(path)
    for paths in by_folder.values():
        safetensors = [p for p in paths if p.suffix == ".safetensors"]
        chosen = safetensors or paths
        plain = [p for p in chosen if len(p.name.split(".")) <= 2]
        yield from plain or chosen


def _estimate_file(path: Path, target_element_size: int) -> int:
    try:
        if path.suffix == ".safetensors":
            return _safetensors_bytes(path, target_element_size)
        if zipfile.is_zipfile(path):
            return _archive_bytes(path, target_element_size)
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile) as exc:
        logger.debug("sizing %s from its header failed (%s); using its file size", path.name, exc)
    return _file_size_bytes(path, target_element_size)


def _file_size_bytes(path: Path, target_element_size: int) -> int:
    # Unknown layout: assume half-precision storage, the worst case for upcasting.
    size = path.stat().st_size if path.exists() else 0
    return size * max(1, math.ceil(target_element_size / 2))


def _safetensors_bytes(path: Path, target_element_size: int) -> int:
    total = 0
    for tensor in _safetensors_header(path).tensors:
        if tensor.dtype in _SAFETENSORS_FLOATS:
            total += math.prod(tensor.shape) * target_element_size
        else:
            total += tensor.end - tensor.begin
    return total


def _archive_bytes(path: Path, target_element_size: int) -> int:
    return sum(
        numel * (target_element_size if floating else element_size)
        for numel, element_size, floating in archive_storages(path)
    )
