"""Models as the repository describes them: the tasks they run, their
format, their manifest, their entry and their validation report. No grpc,
no protobuf, no torch: the servicer converts wire messages into these, and
the engine, the repository and the handlers speak them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


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
    # Text-embedding models trained for truncation (Matryoshka): the vector
    # lengths a request may truncate to, besides the model's own.
    dimensions: tuple[int, ...] = ()


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
