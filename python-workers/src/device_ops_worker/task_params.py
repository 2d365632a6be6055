"""Each task's parameters once validated, as the handlers take them
(images already decoded). No grpc, no protobuf, no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
    # Exactly one of texts and token_ids is non-empty.
    texts: tuple[str, ...]
    normalize: bool
    token_ids: tuple[tuple[int, ...], ...] = ()
    # Truncate each vector to this many components (None: the model's own).
    dimensions: int | None = None

    @property
    def count(self) -> int:
        return len(self.texts) or len(self.token_ids)


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
