"""Diffusers pipelines: text-to-image, image-to-image and inpainting from one set of weights."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline, PNDMScheduler
from diffusers.utils import is_accelerate_available
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers.utils import logging as transformers_logging

from ..errors import FailedPreconditionError, InvalidArgumentError
from ..model_entry import ModelEntry, Task
from ..task_params import ImageGenerationParams
from .base import DiffusionModel, LoadOptions, ProgressCallback
from .schedulers import check_scheduler, scheduler_names
from .torch_support import release_cached_memory, weight_file_preferences

logger = logging.getLogger(__name__)

# Latent sizes of Stable Diffusion–style VAEs are image / 8.
SIZE_MULTIPLE = 8


def _allowed_schedulers() -> dict[str, type]:
    import diffusers

    return {name: getattr(diffusers, name) for name in scheduler_names()}


SCHEDULERS: dict[str, type] = _allowed_schedulers()


class DiffusersModel(DiffusionModel):
    """One pipeline's weights serving three tasks.

    Not thread-safe: a pipeline keeps per-call state (scheduler timesteps,
    guidance settings), so calls on one instance must be serialised.
    """

    def __init__(self, entry: ModelEntry, device: torch.device, dtype: torch.dtype, pipeline: Any) -> None:
        super().__init__(entry, device, dtype)
        self._pipelines: dict[Task, Any] = {Task.TEXT_TO_IMAGE: pipeline}
        siblings = ((Task.IMAGE_TO_IMAGE, AutoPipelineForImage2Image), (Task.INPAINTING, AutoPipelineForInpainting))
        for task, auto_class in siblings:
            derived = _derive_pipeline(auto_class, pipeline)
            if derived is not None:
                self._pipelines[task] = derived
        # Kept apart from any pipeline so that a per-call swap can never leak.
        self._default_scheduler = pipeline.scheduler

    @classmethod
    def load(cls, entry: ModelEntry, device: torch.device, dtype: torch.dtype, options: LoadOptions) -> DiffusersModel:
        # Loading bars from both libraries would interleave with the worker's JSON logs.
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        pipeline = DiffusionPipeline.from_pretrained(
            str(entry.path),
            dtype=dtype,
            local_files_only=True,
            use_safetensors=weight_file_preferences(options.allow_pickle),
            safety_checker=None,
            requires_safety_checker=False,
            # Without accelerate diffusers falls back anyway, with a warning.
            low_cpu_mem_usage=is_accelerate_available(),
        )
        pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return cls(entry, device, dtype, pipeline)

    @property
    def tasks(self) -> frozenset[Task]:
        return frozenset(self._pipelines)

    def modules(self) -> list[torch.nn.Module]:
        pipeline = self._pipelines.get(Task.TEXT_TO_IMAGE)
        if pipeline is None:
            return []
        return [c for c in pipeline.components.values() if isinstance(c, torch.nn.Module)]

    def close(self) -> None:
        self._pipelines.clear()
        self._default_scheduler = None
        release_cached_memory(self.device)

    def generate(self, task: Task, params: ImageGenerationParams, on_step: ProgressCallback) -> list[Any]:
        pipeline = self._pipeline_for(task)
        reporter = _StepReporter(on_step)
        arguments = self._call_arguments(task, params, reporter)
        pipeline.scheduler = self._scheduler(params.scheduler)
        try:
            with torch.inference_mode():
                return list(pipeline(**arguments).images)
        except BaseException as exc:
            if exc is not reporter.raised and not isinstance(exc, torch.OutOfMemoryError):
                raise
            stopped = exc
        finally:
            pipeline.scheduler = self._default_scheduler
        raise self._without_denoising_frames(stopped)

    def _without_denoising_frames(self, error: BaseException) -> BaseException:
        """The engine's cancellation (raised from on_step) and out-of-memory
        errors carry a traceback through the denoising loop, whose frames hold
        the latents; dropping it frees them now, not whenever the engine lets
        go of the exception. Other errors keep their traceback for the log."""
        error.__traceback__ = None
        release_cached_memory(self.device)
        return error

    def _pipeline_for(self, task: Task) -> Any:
        if self._default_scheduler is None:
            raise FailedPreconditionError(f"model '{self.entry.name}': unloaded")
        pipeline = self._pipelines.get(task)
        if pipeline is None:
            raise FailedPreconditionError(f"model '{self.entry.name}': does not support {task.value}")
        return pipeline

    def _scheduler(self, name: str | None) -> Any:
        """A fresh scheduler for one call: schedulers hold per-call state, and a
        fresh one makes equal seeds give equal pixels whatever ran before."""
        default = self._default_scheduler
        if name is None:
            return type(default).from_config(default.config)
        check_scheduler(name)
        scheduler_class = SCHEDULERS[name]
        if scheduler_class is not type(default) and scheduler_class not in default.compatibles:
            raise InvalidArgumentError(f"scheduler: '{name}' does not work with model '{self.entry.name}'")
        overrides = {}
        if scheduler_class is PNDMScheduler and "skip_prk_steps" not in default.config:
            # Stable Diffusion's PNDM setting: without it "4 steps" runs 13 UNet passes.
            overrides["skip_prk_steps"] = True
        return scheduler_class.from_config(default.config, **overrides)

    def _call_arguments(self, task: Task, params: ImageGenerationParams, reporter: _StepReporter) -> dict[str, Any]:
        _check_params(task, params)
        arguments: dict[str, Any] = {
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt or None,
            "num_inference_steps": params.steps,
            "guidance_scale": params.guidance_scale,
            "num_images_per_prompt": params.images_per_prompt,
            "generator": self._generator(params.seed),
            "output_type": "pil",
            "callback_on_step_end": reporter,
        }
        if task is Task.TEXT_TO_IMAGE:
            arguments.update(width=params.width, height=params.height)
            return arguments
        # One init image per output image: diffusers deprecates repeating a
        # single image across num_images_per_prompt. Image-to-image output
        # takes the input's size, so the input is brought to the requested one.
        size, count = (params.width, params.height), params.images_per_prompt
        arguments.update(image=[_resized(params.init_image, size, "RGB")] * count, strength=params.strength)
        if task is Task.INPAINTING:
            arguments.update(
                mask_image=[_resized(params.mask_image, size, "L")] * count, width=params.width, height=params.height
            )
        return arguments

    def _generator(self, seed: int) -> torch.Generator:
        # A CUDA generator draws different numbers from a CPU one; seeds are
        # only promised to reproduce on the same device type.
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.Generator(device=device).manual_seed(seed)


def _derive_pipeline(auto_class: Any, pipeline: Any) -> Any | None:
    """The img2img / inpaint sibling sharing `pipeline`'s modules (no weight copies)."""
    try:
        derived = auto_class.from_pipe(pipeline, requires_safety_checker=False)
    except (ValueError, TypeError, KeyError) as exc:
        logger.info("%s has no %s counterpart: %s", type(pipeline).__name__, auto_class.__name__, exc)
        return None
    derived.set_progress_bar_config(disable=True)
    return derived


class _StepReporter:
    """diffusers' callback_on_step_end, forwarding to on_step and remembering
    what on_step raised so generate() can tell it from a pipeline failure."""

    def __init__(self, on_step: ProgressCallback) -> None:
        self._on_step = on_step
        self.raised: BaseException | None = None

    def __call__(self, pipeline: Any, step_index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        try:
            # num_timesteps is the length of this call's schedule (steps ×
            # strength for image-to-image), set once the pipeline has built it.
            self._on_step(step_index + 1, int(pipeline.num_timesteps))
        except BaseException as exc:
            self.raised = exc
            raise
        return tensors


def _check_params(task: Task, params: ImageGenerationParams) -> None:
    if params.steps < 1:
        raise InvalidArgumentError("steps: must be at least 1")
    if params.images_per_prompt < 1:
        raise InvalidArgumentError("images_per_prompt: must be at least 1")
    for field, value in (("width", params.width), ("height", params.height)):
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise InvalidArgumentError(f"{field}: must be a positive multiple of {SIZE_MULTIPLE}")
    if task is Task.TEXT_TO_IMAGE:
        return
    if params.init_image is None:
        raise InvalidArgumentError(f"init_image: required for {task.value}")
    if task is Task.INPAINTING and params.mask_image is None:
        raise InvalidArgumentError("mask_image: required for inpainting")
    if not 0.0 < params.strength <= 1.0:
        raise InvalidArgumentError("strength: must be greater than 0 and at most 1")
    if int(params.steps * params.strength) < 1:
        raise InvalidArgumentError("strength: steps × strength must leave at least one denoising step")


def _resized(image: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    image = image.convert(mode)
    if image.size == size:
        return image
    # Masks stay hard-edged; photos get the better filter.
    resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def bare_pipeline_seconds_per_step(
    model_path: Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    steps: int = 20,
    width: int = 512,
    height: int = 512,
    prompt: str = "a lighthouse on a cliff at sunset",
) -> float:
    """Seconds per denoising step of plain diffusers on the same folder: the
    baseline a benchmark compares the worker's text-to-image against."""
    pipeline = DiffusionPipeline.from_pretrained(
        str(model_path), dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipeline.set_progress_bar_config(disable=True)
    arguments = {"prompt": prompt, "width": width, "height": height, "output_type": "pil"}
    with torch.inference_mode():
        pipeline(num_inference_steps=1, **arguments)  # warm-up: kernels, allocator
        _synchronize(device)
        started = time.perf_counter()
        pipeline(num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(0), **arguments)
        _synchronize(device)
    return (time.perf_counter() - started) / steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
