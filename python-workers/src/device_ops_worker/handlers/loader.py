"""The format → handler table, and turning a failed load into the right error.

Handler modules are imported on first use: diffusers and transformers take
seconds to import, and a worker may never load such a model. This module
imports the handlers it registers; handlers never import it.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import FailedPreconditionError, ResourceExhaustedError, WorkerError
from ..model_entry import ModelEntry, ModelFormat, Task
from .base import LoadedModel, LoadOptions
from .torch_support import release_cached_memory

logger = logging.getLogger(__name__)

Loader = Callable[[ModelEntry, torch.device, torch.dtype, LoadOptions], LoadedModel]

_MAX_REASON_CHARS = 200


def load_model(entry: ModelEntry, device: torch.device, dtype: torch.dtype, options: LoadOptions) -> LoadedModel:
    """Load `entry` onto `device` in `dtype`. On failure nothing stays allocated."""
    loader = _loader_for(entry)
    result = _try_load(loader, entry, device, dtype, options)
    if isinstance(result, LoadedModel):
        logger.info("model %s loaded on %s as %s", entry.name, device, dtype)
        return result
    release_cached_memory(device)
    raise result


def _loader_for(entry: ModelEntry) -> Loader:
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


def _try_load(
    loader: Loader, entry: ModelEntry, device: torch.device, dtype: torch.dtype, options: LoadOptions
) -> LoadedModel | Exception:
    """The model, or an error to raise once the failed attempt's frames are gone.

    The error is built fresh (no traceback, no context) because a traceback
    keeps the loader's frames, and with them the half-loaded weights, alive.
    """
    try:
        return loader(entry, device, dtype, options)
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


def short_reason(exc: BaseException, model_path: Path) -> str:
    """One line naming what went wrong, without internal paths."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.replace(str(model_path), "<model>")
    text = re.sub(r"(?<![\w<>])/[^\s'\"]+", "<path>", text)
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return reason[:_MAX_REASON_CHARS]
