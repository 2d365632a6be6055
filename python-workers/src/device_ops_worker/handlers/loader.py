"""Turning a ModelEntry into a LoadedModel, and sizing it before it is loaded."""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import math
import pickletools
import re
import struct
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from ..errors import FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError, WorkerError
from ..types import ModelEntry, ModelFormat, Task
from .base import LoadedModel

logger = logging.getLogger(__name__)

Loader = Callable[[ModelEntry, torch.device, torch.dtype, bool], LoadedModel]

DTYPES_BY_NAME: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}

# Non-persistent buffers (position ids, rotary caches) are not in the weight
# files but are resident once loaded; the margin keeps the estimate above them.
_MARGIN_FRACTION = 0.02
_MARGIN_BYTES = 64 * 1024
_MAX_REASON_CHARS = 200

_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}
_SAFETENSORS_FLOATS = {"F64", "F32", "F16", "BF16"}
# Legacy storage class names torch writes into pickles: element size, floating?
_PICKLE_STORAGES: dict[str, tuple[int, bool]] = {
    "DoubleStorage": (8, True), "FloatStorage": (4, True), "HalfStorage": (2, True),
    "BFloat16Storage": (2, True), "LongStorage": (8, False), "IntStorage": (4, False),
    "ShortStorage": (2, False), "CharStorage": (1, False), "ByteStorage": (1, False),
    "BoolStorage": (1, False), "ComplexFloatStorage": (8, False), "ComplexDoubleStorage": (16, False),
}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


# ---------------------------------------------------------------- dtypes


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES_BY_NAME[name]
    except KeyError:
        raise InvalidArgumentError(f"dtype: must be one of {', '.join(DTYPES_BY_NAME)}, not '{name}'") from None


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES_BY_NAME.items() if value == dtype)


def supported_dtypes(device: torch.device) -> list[torch.dtype]:
    if device.type != "cuda":
        # float16 matmuls on CPU are slow or unimplemented for many ops.
        return [torch.float32, torch.bfloat16]
    dtypes = [torch.float16, torch.float32]
    with torch.cuda.device(device):
        if torch.cuda.is_bf16_supported():
            dtypes.append(torch.bfloat16)
    return dtypes


# ---------------------------------------------------------------- schedulers

_SCHEDULER_NAMES = (
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
)


def scheduler_names() -> tuple[str, ...]:
    """Diffusion schedulers a request may name. Kept here, free of diffusers,
    so requests can be checked before any model (or diffusers) is loaded."""
    # diffusers' LMSDiscreteScheduler is a placeholder that fails on use without scipy.
    if importlib.util.find_spec("scipy") is not None:
        return (*_SCHEDULER_NAMES, "LMSDiscreteScheduler")
    return _SCHEDULER_NAMES


def check_scheduler(name: str | None) -> None:
    if name is not None and name not in scheduler_names():
        raise InvalidArgumentError(f"scheduler: '{name}' is not one of {', '.join(sorted(scheduler_names()))}")


# ---------------------------------------------------------------- loading


def load_model(entry: ModelEntry, device: torch.device, dtype: torch.dtype, allow_pickle: bool) -> LoadedModel:
    """Load `entry` onto `device` in `dtype`. On failure nothing stays allocated."""
    loader = _loader_for(entry)
    result = _try_load(loader, entry, device, dtype, allow_pickle)
    if isinstance(result, LoadedModel):
        logger.info("model %s loaded on %s as %s", entry.name, device, dtype)
        return result
    release_cached_memory(device)
    raise result


def _try_load(
    loader: Loader, entry: ModelEntry, device: torch.device, dtype: torch.dtype, allow_pickle: bool
) -> LoadedModel | Exception:
    """The model, or an error to raise once the failed attempt's frames are gone.

    The error is built fresh (no traceback, no context) because a traceback
    keeps the loader's frames, and with them the half-loaded weights, alive.
    """
    try:
        return loader(entry, device, dtype, allow_pickle)
    except WorkerError as exc:
        return type(exc)(exc.message)
    except Exception as exc:  # noqa: BLE001 - every library raises its own types here
        memory = _exhausted_memory(exc)
        if memory == "device":
            # Re-raised as the torch type, unwrapped, so that callers that size
            # loads can tell it apart and report free memory.
            logger.warning("model %s: out of device memory while loading", entry.name)
            return torch.OutOfMemoryError(f"model '{entry.name}': out of device memory while loading")
        if memory == "host":
            logger.warning("model %s: out of host memory while loading", entry.name)
            return ResourceExhaustedError(f"model '{entry.name}': out of host memory while loading")
        reason = short_reason(exc, entry.path)
        # The traceback goes in as text: a handler that keeps records (pytest's,
        # a buffering one) would otherwise keep the half-loaded weights alive.
        details = "".join(traceback.format_exception(exc))
        logger.warning("model %s: weights could not be loaded: %s", entry.name, reason, extra={"traceback": details})
        return FailedPreconditionError(f"model '{entry.name}': weights could not be loaded: {reason}")


def _exhausted_memory(exc: BaseException) -> str | None:
    """Which memory ran out ("device" or "host") if that caused `exc`;
    libraries often re-raise it wrapped in their own error types."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.OutOfMemoryError):
            return "device"
        if isinstance(current, MemoryError):
            return "host"
        current = current.__cause__ or current.__context__
    return None


def _loader_for(entry: ModelEntry) -> Loader:
    # Handler modules are imported on first use: diffusers and transformers
    # take seconds to import, and a worker may never load such a model.
    if entry.format is ModelFormat.DIFFUSERS:
        from .diffusion import DiffusersModel

        return DiffusersModel.load
    if entry.format is ModelFormat.TRANSFORMERS:
        if Task.TEXT_EMBEDDING not in entry.tasks:
            raise FailedPreconditionError(
                f"model '{entry.name}': transformers models are served for text-embedding only"
            )
        from .embedding import TransformerEmbeddingModel

        return TransformerEmbeddingModel.load
    if entry.format is ModelFormat.TORCHSCRIPT:
        from .torchscript import TorchScriptTensorModel, TorchScriptUpscaler

        return TorchScriptUpscaler.load if Task.UPSCALE in entry.tasks else TorchScriptTensorModel.load
    raise FailedPreconditionError(f"model '{entry.name}': unsupported format {entry.format}")


def release_cached_memory(device: torch.device) -> None:
    """Collect unreachable tensors and hand the CUDA cache back to the driver."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


def short_reason(exc: BaseException, model_path: Path) -> str:
    """One line naming what went wrong, without internal paths."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.replace(str(model_path), "<model>")
    text = re.sub(r"(?<![\w<>])/[^\s'\"]+", "<path>", text)
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return reason[:_MAX_REASON_CHARS]


def weight_file_preferences(allow_pickle: bool) -> bool | None:
    """`use_safetensors` for diffusers and transformers: True forbids pickle
    files outright; None prefers safetensors but accepts pickles (which both
    libraries open with torch.load(weights_only=True))."""
    return None if allow_pickle else True


# ---------------------------------------------------------------- sizing


def estimate_load_bytes(entry: ModelEntry, dtype: torch.dtype) -> int:
    """Resident bytes once `entry` is loaded in `dtype`, read from file headers only."""
    weight_files = entry.weight_files
    if entry.format is ModelFormat.DIFFUSERS:
        # Pipelines are loaded with safety_checker=None: its weights never load.
        weight_files = tuple(p for p in weight_files if p.parent.name != "safety_checker")
    files = list(_files_in_use(weight_files))
    if not files:
        return entry.size_bytes + _MARGIN_BYTES
    target = torch.empty((), dtype=dtype).element_size()
    total = sum(_estimate_file(path, target) for path in files)
    return int(total * (1 + _MARGIN_FRACTION)) + _MARGIN_BYTES


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
            return _zip_pickle_bytes(path, target_element_size)
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile) as exc:
        logger.debug("sizing %s from its header failed (%s); using its file size", path.name, exc)
    return _file_size_bytes(path, target_element_size)


def _file_size_bytes(path: Path, target_element_size: int) -> int:
    # Unknown layout: assume half-precision storage, the worst case for upcasting.
    size = path.stat().st_size if path.exists() else 0
    return size * max(1, math.ceil(target_element_size / 2))


def _safetensors_bytes(path: Path, target_element_size: int) -> int:
    with path.open("rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        if header_length > 100 * 1024 * 1024:
            raise ValueError("implausible safetensors header")
        header = json.loads(handle.read(header_length))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        numel = math.prod(info["shape"])
        kind = info["dtype"]
        if kind in _SAFETENSORS_FLOATS:
            total += numel * target_element_size
        else:
            start, end = info["data_offsets"]
            total += end - start
    return total


def _zip_pickle_bytes(path: Path, target_element_size: int) -> int:
    """Storages of a torch.save / torch.jit.save archive, read from its pickles
    with pickletools (which only parses; nothing is executed)."""
    storages: dict[tuple[str, str], tuple[int, int, bool]] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(("data.pkl", "constants.pkl")):
                for key, storage in _pickled_storages(archive.read(name)).items():
                    storages[(name, key)] = storage
    if not storages:
        raise ValueError("no storages found")
    total = 0
    for numel, element_size, floating in storages.values():
        total += numel * (target_element_size if floating else element_size)
    return total


def _pickled_storages(data: bytes) -> dict[str, tuple[int, int, bool]]:
    """storage key → (numel, element size, floating) from persistent ids
    ('storage', torch.<Kind>Storage, key, location, numel)."""
    values = _pickle_scalars(data)
    found: dict[str, tuple[int, int, bool]] = {}
    for index in range(len(values) - 4):
        marker, kind, key, _location, numel = values[index : index + 5]
        if marker != "storage" or not isinstance(kind, str) or not isinstance(numel, int):
            continue
        storage = _PICKLE_STORAGES.get(kind.rsplit(".", 1)[-1])
        if storage is not None and isinstance(key, str):
            found[key] = (numel, *storage)
    return found


_STRING_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING", "STRING"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}


def _pickle_scalars(data: bytes) -> list[object]:
    """The values pushed by a pickle, in order, with memo references resolved;
    anything that is not a string, an int or a global is None."""
    values: list[object] = []
    memo: dict[int, object] = {}
    last: object = None
    for opcode, arg, _position in pickletools.genops(data):
        name = opcode.name
        if name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = last
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = last
            continue
        if name in _STRING_OPS or name in _INT_OPS:
            last = arg
        elif name == "GLOBAL":
            last = str(arg).replace(" ", ".")
        elif name == "STACK_GLOBAL" and len(values) >= 2:
            last = f"{values.pop(-2)}.{values.pop()}"
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(int(arg))
        else:
            last = None
        values.append(last)
    return values
