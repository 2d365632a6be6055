"""What the engine needs from a loaded model. Torch only; no grpc here.

Every method is blocking and runs on the device's worker thread. Progress
callbacks may raise (the engine raises its cancellation exception from them
to stop a job at a step boundary); handlers must let such exceptions
propagate after releasing per-job memory.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..model_entry import ModelEntry, Task
from ..task_params import ImageGenerationParams

# (current, total) after each unit of work: a denoising step, a batch chunk.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class LoadOptions:
    """How models are loaded, from the worker's settings."""

    # Pickle-based weight files may be opened (ALLOW_PICKLE_MODELS).
    allow_pickle: bool
    # Embedding models on CUDA replay small passes from CUDA graphs (EMBEDDING_CUDA_GRAPHS).
    cuda_graphs: bool


class LoadedModel(abc.ABC):
    """A model resident on one device in one dtype."""

    def __init__(self, entry: ModelEntry, device: torch.device, dtype: torch.dtype) -> None:
        self.entry = entry
        self.device = device
        self.dtype = dtype

    @abc.abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules holding the weights (for footprint accounting)."""

    def parameter_bytes(self) -> int:
        """Bytes of every parameter and buffer, each storage counted once."""
        seen: set[int] = set()
        total = 0
        for module in self.modules():
            for tensor in [*module.parameters(), *module.buffers()]:
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += storage.nbytes()
        return total

    def close(self) -> None:
        """Drop references to weights so their memory can be freed."""


class DiffusionModel(LoadedModel):
    @abc.abstractmethod
    def generate(self, task: Task, params: ImageGenerationParams, on_step: ProgressCallback) -> list[Any]:
        """Run text-to-image, image-to-image or inpainting; returns PIL images
        (params.images_per_prompt of them). The same params (seed included) on
        the same device and dtype give the same pixels."""


class EmbeddingModel(LoadedModel):
    @property
    @abc.abstractmethod
    def dimension(self) -> int:
        """Length of each vector."""

    @abc.abstractmethod
    def embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        """float32 array [len(texts), dimension]; row i belongs to texts[i]."""

    def tokenize(self, texts: list[str]) -> Any | None:
        """Texts prepared for ``embed_prepared``, or None when this model
        cannot prepare them. Thread-safe: the engine calls it off the device
        thread so that tokenizing one request overlaps the device's work on
        another."""
        return None

    def embed_prepared(self, prepared: list[Any]) -> np.ndarray:
        """Unnormalized float32 vectors of several ``tokenize`` (or
        ``prepare_ids``) results, rows in order (the rows of prepared[0] first)."""
        raise NotImplementedError(f"{type(self).__name__} does not prepare texts")

    def prepare_ids(self, token_ids: list[tuple[int, ...]]) -> Any:
        """Pre-tokenized inputs prepared for ``embed_prepared``, each checked
        against the model (INVALID_ARGUMENT naming ``text_embedding.token_ids[i]``)."""
        raise InvalidArgumentError(f"text_embedding.token_ids: model '{self.entry.name}' takes texts only")


class TensorModel(LoadedModel):
    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs → named outputs, per the manifest's specs."""


class UpscalerModel(LoadedModel):
    @property
    @abc.abstractmethod
    def scale(self) -> int:
        """Factor the model enlarges by."""

    @abc.abstractmethod
    def upscale(self, image: Any) -> Any:
        """PIL image → PIL image `scale` times larger."""
