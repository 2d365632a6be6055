"""Torch helpers the handlers and the engine share: dtypes by name, the
dtypes a device can load models in, handing freed memory back, and which
weight files the library loaders may open."""

from __future__ import annotations

import gc

import torch

from ..errors import InvalidArgumentError

DTYPES_BY_NAME: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}


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


def release_cached_memory(device: torch.device) -> None:
    """Collect unreachable tensors and hand the CUDA cache back to the driver."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


def weight_file_preferences(allow_pickle: bool) -> bool | None:
    """`use_safetensors` for diffusers and transformers: True forbids pickle
    files outright; None prefers safetensors but accepts pickles (which both
    libraries open with torch.load(weights_only=True))."""
    return None if allow_pickle else True
