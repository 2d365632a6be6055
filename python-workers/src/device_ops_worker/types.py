"""Domain types shared by the worker's layers. No grpc, no protobuf, no torch.

The servicer converts wire messages into these; the engine, the model
repository and the model handlers speak only these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Task(enum.Enum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINTING = "inpainting"
    TEXT_EMBEDDING = "text-embedding"
    TENSOR = "tensor"
    UPSCALE = "upscale"
    ENHANCE = "enhance"


DIFFUSION_TASKS = frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING})


class ModelFormat(enum.Enum):
    DIFFUSERS = "diffusers"
    TRANSFORMERS = "transformers"
    TORCHSCRIPT = "torchscript"


class ValidationState(enum.Enum):
    UNKNOWN = "unknown"
    VALID = "valid"
    INVALID = "invalid"


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor a TorchScript model takes or returns. -1 in shape: any size."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelManifest:
    """Optional description of a model (``manifest.json`` in a model folder,
    ``<file>.manifest.json`` beside a single-file model). Every field is optional."""

    name: str | None = None
    task: Task | None = None
    format: ModelFormat | None = None
    # Preferred dtype name ("float16", "bfloat16", "float32").
    dtype: str | None = None
    # Relative path (POSIX, from the model folder; or the file name for a
    # single-file model) → lowercase hex sha256.
    files: Mapping[str, str] = field(default_factory=dict)
    # TorchScript: declared inputs and outputs.
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    # TorchScript: dimension along which requests can be concatenated for
    # dynamic batching; None means the model cannot be batched.
    batch_dim: int | None = None
    # Upscaler models: the factor they enlarge by.
    scale: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One model found in the repository."""

    name: str
    # Resolved absolute path of the model folder or file, inside the repository.
    path: Path
    format: ModelFormat
    # Tasks the model can run (a text-to-image diffusers pipeline also runs
    # image-to-image and inpainting).
    tasks: frozenset[Task]
    # Bytes on disk, all files included.
    size_bytes: int
    manifest: ModelManifest | None
    # Files holding weights (safetensors, TorchScript archive, or pickle files).
    weight_files: tuple[Path, ...]

    @property
    def primary_task(self) -> Task:
        """The task reported for the model (manifest's, or the format's first)."""
        if self.manifest and self.manifest.task:
            return self.manifest.task
        order = [Task.TEXT_TO_IMAGE, Task.TEXT_EMBEDDING, Task.UPSCALE, Task.TENSOR]
        return next(task for task in order + list(self.tasks) if task in self.tasks)


@dataclass(frozen=True)
class ValidationReport:
    model: str
    valid: bool
    # One sentence per problem, naming the file or field.
    problems: tuple[str, ...]


# ---------------------------------------------------------------- inference inputs


@dataclass(frozen=True)
class ImageGenerationParams:
    """Validated parameters of the diffusion tasks. Images are decoded already."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int
    width: int
    height: int
    images_per_prompt: int
    # Scheduler class name from the allow-list; None keeps the pipeline's own.
    scheduler: str | None
    # Image-to-image and inpainting: 0 < strength <= 1.
    strength: float
    # PIL.Image.Image for image-to-image and inpainting, else None.
    init_image: Any = None
    # PIL.Image.Image for inpainting (white = repaint), else None.
    mask_image: Any = None


@dataclass(frozen=True)
class EmbeddingParams:
    texts: tuple[str, ...]
    normalize: bool


@dataclass(frozen=True)
class TensorParams:
    # numpy arrays by input name, dtype and shape already checked against the wire.
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class PostprocessParams:
    # Decoded PIL.Image.Image.
    image: Any
    # Upscale factor (2 or 4).
    scale: int
    # Enhance: adjustment name → factor (1.0 unchanged).
    adjustments: Mapping[str, float]


Params = ImageGenerationParams | EmbeddingParams | TensorParams | PostprocessParams


# ---------------------------------------------------------------- inference outputs


@dataclass(frozen=True)
class OutputFile:
    # Relative to OUTPUT_DIRECTORY: "<job id>/<file>".
    path: str
    media_type: str
    size_bytes: int
    sha256: str
    width: int
    height: int
