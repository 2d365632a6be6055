"""Inference requests as the servicer hands them over (wire shapes in domain
types, nothing decoded yet), and their validation into handler parameters.

Every check names the field it refuses, in the wire's own names
(``image_generation.width``), so a client can fix its request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidArgumentError
from ..handlers.schedulers import check_scheduler
from ..model_entry import ModelManifest, Task
from ..settings import Limits
from ..task_params import EmbeddingParams, ImageGenerationParams, TensorParams


@dataclass(frozen=True)
class ImageGenerationInput:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    images_per_prompt: int | None = None
    scheduler: str = ""
    strength: float | None = None
    init_image: bytes = b""
    mask_image: bytes = b""


@dataclass(frozen=True)
class TextEmbeddingInput:
    texts: tuple[str, ...] = ()
    normalize: bool = False
    token_ids: tuple[tuple[int, ...], ...] = ()
    dimensions: int | None = None


@dataclass(frozen=True)
class WireTensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class TensorInput:
    inputs: Mapping[str, WireTensor] = field(default_factory=dict)


@dataclass(frozen=True)
class PostprocessInput:
    image: bytes = b""
    source_output: str = ""
    scale: int | None = None
    adjustments: Mapping[str, float] = field(default_factory=dict)


Input = ImageGenerationInput | TextEmbeddingInput | TensorInput | PostprocessInput


@dataclass(frozen=True)
class InferenceRequest:
    job_id: str
    model: str
    task: Task | None
    device_id: str
    dtype: str
    input: Input | None
    # The job runs to its end when its caller goes away (AttachJob follows it).
    keep_running_on_disconnect: bool = False


# Which input each task takes, and its wire name for messages.
TASK_INPUTS: dict[Task, tuple[type, str]] = {
    Task.TEXT_TO_IMAGE: (ImageGenerationInput, "image_generation"),
    Task.IMAGE_TO_IMAGE: (ImageGenerationInput, "image_generation"),
    Task.INPAINTING: (ImageGenerationInput, "image_generation"),
    Task.TEXT_EMBEDDING: (TextEmbeddingInput, "text_embedding"),
    Task.TENSOR: (TensorInput, "tensor"),
    Task.UPSCALE: (PostprocessInput, "postprocess"),
    Task.ENHANCE: (PostprocessInput, "postprocess"),
}

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SIDE = 512
DEFAULT_STRENGTH = 0.75
MIN_SIDE = 64
MAX_GUIDANCE = 30.0

# Wire dtype names → numpy dtypes accepted for tensor inputs.
TENSOR_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "float16": np.dtype("<f2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}


def check_input_matches_task(request: InferenceRequest) -> Task:
    if request.task is None:
        raise InvalidArgumentError("task: is required")
    expected, wire_name = TASK_INPUTS[request.task]
    if not isinstance(request.input, expected):
        raise InvalidArgumentError(f"input: task {request.task.value} takes `{wire_name}` parameters")
    return request.task


def _check_text(field_name: str, text: str, limits: Limits, *, required: bool) -> None:
    if required and not text.strip():
        raise InvalidArgumentError(f"{field_name}: must not be empty")
    if len(text) > limits.max_text_chars:
        raise InvalidArgumentError(f"{field_name}: {len(text)} characters exceed the limit of {limits.max_text_chars}")


def _in_range(field_name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidArgumentError(f"{field_name}: {value:g} is outside {low:g}..{high:g}")


def _side(field_name: str, value: int, limits: Limits) -> int:
    if value % 8 != 0:
        raise InvalidArgumentError(f"{field_name}: {value} is not a multiple of 8")
    if not MIN_SIDE <= value <= limits.max_image_side:
        raise InvalidArgumentError(f"{field_name}: {value} is outside {MIN_SIDE}..{limits.max_image_side}")
    return value


def validate_image_generation(
    task: Task, raw: ImageGenerationInput, limits: Limits, init_image: object | None, mask_image: object | None
) -> ImageGenerationParams:
    """Validate diffusion parameters. Images are decoded by the caller (and
    their presence checked here against the task)."""
    prefix = "image_generation"
    _check_text(f"{prefix}.prompt", raw.prompt, limits, required=True)
    _check_text(f"{prefix}.negative_prompt", raw.negative_prompt, limits, required=False)
    needs_image = task in (Task.IMAGE_TO_IMAGE, Task.INPAINTING)
    if needs_image and init_image is None:
        raise InvalidArgumentError(f"{prefix}.init_image: {task.value} needs an input image")
    if not needs_image and raw.init_image:
        raise InvalidArgumentError(f"{prefix}.init_image: only image-to-image and inpainting take an input image")
    if task is Task.INPAINTING and mask_image is None:
        raise InvalidArgumentError(f"{prefix}.mask_image: inpainting needs a mask")
    if task is not Task.INPAINTING and raw.mask_image:
        raise InvalidArgumentError(f"{prefix}.mask_image: only inpainting takes a mask")

    steps = DEFAULT_STEPS if raw.steps is None else raw.steps
    _in_range(f"{prefix}.steps", steps, 1, limits.max_steps)
    guidance = DEFAULT_GUIDANCE if raw.guidance_scale is None else raw.guidance_scale
    _in_range(f"{prefix}.guidance_scale", guidance, 0, MAX_GUIDANCE)
    count = 1 if raw.images_per_prompt is None else raw.images_per_prompt
    _in_range(f"{prefix}.images_per_prompt", count, 1, limits.max_images_per_prompt)
    strength = DEFAULT_STRENGTH if raw.strength is None else raw.strength
    if needs_image:
        if not (math.isfinite(strength) and 0 < strength <= 1):
            raise InvalidArgumentError(f"{prefix}.strength: {strength:g} must be above 0 and at most 1")
    elif raw.strength is not None:
        raise InvalidArgumentError(f"{prefix}.strength: only image-to-image and inpainting take a strength")

    default_w = default_h = DEFAULT_SIDE
    if init_image is not None:
        w, h = init_image.size  # type: ignore[attr-defined]
        default_w, default_h = max(MIN_SIDE, w - w % 8), max(MIN_SIDE, h - h % 8)
    width = _side(f"{prefix}.width", default_w if raw.width is None else raw.width, limits)
    height = _side(f"{prefix}.height", default_h if raw.height is None else raw.height, limits)
    check_scheduler(raw.scheduler or None)
    seed = raw.seed if raw.seed is not None else random.SystemRandom().randrange(2**32)
    if not 0 <= seed < 2**63:
        raise InvalidArgumentError(f"{prefix}.seed: must be below 2^63")
    return ImageGenerationParams(
        prompt=raw.prompt,
        negative_prompt=raw.negative_prompt,
        steps=int(steps),
        guidance_scale=float(guidance),
        seed=int(seed),
        width=width,
        height=height,
        images_per_prompt=int(count),
        scheduler=raw.scheduler or None,
        strength=float(strength),
        init_image=init_image,
        mask_image=mask_image,
    )


def validate_text_embedding(raw: TextEmbeddingInput, limits: Limits) -> EmbeddingParams:
    """Exactly one of texts and token ids, within the limits. Token ids are
    checked against the model itself (vocabulary, maximum length) once it is
    loaded, and ``dimensions`` against the model's dimension then too."""
    if raw.texts and raw.token_ids:
        raise InvalidArgumentError("text_embedding: set either texts or token_ids, not both")
    entries = raw.texts or raw.token_ids
    name = "token_ids" if raw.token_ids else "texts"
    if not entries:
        raise InvalidArgumentError("text_embedding.texts: at least one text (or token_ids entry) is required")
    if len(entries) > limits.max_embedding_texts:
        raise InvalidArgumentError(
            f"text_embedding.{name}: {len(entries)} inputs exceed the limit of {limits.max_embedding_texts}"
        )
    for index, text in enumerate(raw.texts):
        _check_text(f"text_embedding.texts[{index}]", text, limits, required=True)
    for index, ids in enumerate(raw.token_ids):
        if not ids:
            raise InvalidArgumentError(f"text_embedding.token_ids[{index}]: must hold at least one token id")
        if len(ids) > limits.max_tokens_per_text:
            raise InvalidArgumentError(
                f"text_embedding.token_ids[{index}]: {len(ids)} tokens exceed the limit of {limits.max_tokens_per_text}"
            )
    # Which lengths the model allows needs its own dimension: checked once it is loaded.
    if raw.dimensions is not None and raw.dimensions < 1:
        raise InvalidArgumentError("text_embedding.dimensions: must be at least 1")
    return EmbeddingParams(
        texts=tuple(raw.texts),
        normalize=raw.normalize,
        token_ids=tuple(tuple(ids) for ids in raw.token_ids),
        dimensions=raw.dimensions,
    )


def decode_tensor(field_name: str, wire: WireTensor) -> np.ndarray:
    dtype = TENSOR_DTYPES.get(wire.dtype)
    if dtype is None:
        raise InvalidArgumentError(f"{field_name}.dtype: '{wire.dtype}' is not one of {', '.join(TENSOR_DTYPES)}")
    if any(dim < 0 for dim in wire.shape):
        raise InvalidArgumentError(f"{field_name}.shape: dimensions must not be negative")
    expected = math.prod(wire.shape) * dtype.itemsize
    if len(wire.data) != expected:
        raise InvalidArgumentError(
            f"{field_name}.data: {len(wire.data)} bytes, but dtype {wire.dtype} and shape {list(wire.shape)} need {expected}"
        )
    array = np.frombuffer(wire.data, dtype=dtype).reshape(wire.shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "infinity"
        raise InvalidArgumentError(f"{field_name}: contains {bad}")
    return array


def _shape_matches(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(declared) == len(actual) and all(d == -1 or d == a for d, a in zip(declared, actual, strict=True))


def validate_tensor(raw: TensorInput, manifest: ModelManifest | None) -> TensorParams:
    if not raw.inputs:
        raise InvalidArgumentError("tensor.inputs: at least one input is required")
    arrays = {name: decode_tensor(f"tensor.inputs.{name}", wire) for name, wire in raw.inputs.items()}
    specs = manifest.inputs if manifest else ()
    if specs:
        declared = {spec.name: spec for spec in specs}
        for name in arrays:
            if name not in declared:
                raise InvalidArgumentError(f"tensor.inputs.{name}: the model takes no such input ({', '.join(declared)})")
        for spec in specs:
            array = arrays.get(spec.name)
            if array is None:
                raise InvalidArgumentError(f"tensor.inputs.{spec.name}: is required by the model")
            wire_dtype = raw.inputs[spec.name].dtype
            if wire_dtype != spec.dtype:
                raise InvalidArgumentError(f"tensor.inputs.{spec.name}.dtype: {wire_dtype}, but the model takes {spec.dtype}")
            if not _shape_matches(spec.shape, array.shape):
                raise InvalidArgumentError(
                    f"tensor.inputs.{spec.name}.shape: {list(array.shape)} does not match the model's {list(spec.shape)}"
                )
    return TensorParams(inputs=arrays)


def batch_rows(params: TensorParams, batch_dim: int | None) -> int | None:
    """Rows along the batch dimension when every input has the same count, else None."""
    if batch_dim is None:
        return None
    counts = {array.shape[batch_dim] for array in params.inputs.values() if array.ndim > batch_dim}
    if len(counts) != 1 or any(array.ndim <= batch_dim for array in params.inputs.values()):
        return None
    return counts.pop()
