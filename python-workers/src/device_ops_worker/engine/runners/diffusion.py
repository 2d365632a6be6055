"""Text-to-image, image-to-image and inpainting: one pipeline call per job,
progress at denoising steps, the images written as PNGs."""

from __future__ import annotations

import time
from typing import Any

from ... import imaging, outputs
from ...errors import FailedPreconditionError
from ...handlers.base import DiffusionModel
from ...handlers.torch_support import dtype_name
from ...model_entry import DIFFUSION_TASKS, ModelEntry, Task
from ...task_params import ImageGenerationParams
from ..device_queue import WorkItem
from ..jobs import Progress
from ..requests import ImageGenerationInput, validate_image_generation
from .base import Plan, TaskRunner


class DiffusionRunner(TaskRunner):
    tasks = DIFFUSION_TASKS
    checks_off_loop = True

    def params(self, task: Task, raw: Any, entry: ModelEntry | None) -> ImageGenerationParams:
        assert isinstance(raw, ImageGenerationInput)
        limits = self._context.limits
        init = imaging.decode_image(raw.init_image, "image_generation.init_image", limits.max_input_pixels) if raw.init_image else None
        mask = (
            imaging.decode_image(raw.mask_image, "image_generation.mask_image", limits.max_input_pixels, mode="L")
            if raw.mask_image
            else None
        )
        return validate_image_generation(task, raw, limits, init, mask)

    def run(self, items: list[WorkItem]) -> list[Any]:
        plan: Plan = items[0].payload
        started = time.perf_counter()
        self._begin(plan)
        model = self._acquire(plan)
        if not isinstance(model, DiffusionModel):
            raise FailedPreconditionError(f"model: '{plan.entry.name}' is not a diffusion pipeline")  # type: ignore[union-attr]
        job = plan.job
        interval = self._context.progress_interval_s
        last_sent = [-interval]

        def on_step(current: int, total: int) -> None:
            # Each event costs the device thread a hand-off to the event loop
            # and a gRPC write; at every step of a fast pipeline that was 15 %
            # of an SD 1.5 step on an H200. Throttled, the first and last step
            # still go out, so a client sees work begin and end.
            now = time.monotonic()
            if current <= 1 or current >= total or now - last_sent[0] >= interval:
                last_sent[0] = now
                job.emit(Progress(current, total))
            job.check_cancelled()

        params = plan.params
        images = model.generate(plan.task, params, on_step)
        job.check_cancelled()
        metadata = {
            "task": plan.task.value,
            "model": plan.entry.name,  # type: ignore[union-attr]
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "steps": params.steps,
            "guidance_scale": params.guidance_scale,
            "seed": params.seed,
            "width": params.width,
            "height": params.height,
            "scheduler": params.scheduler,
            "strength": params.strength if plan.task is not Task.TEXT_TO_IMAGE else None,
            "device": plan.device.id,
            "dtype": dtype_name(plan.dtype),  # type: ignore[arg-type]
        }
        output_root = self._context.output_root
        files = tuple(
            outputs.write_png(output_root, job.id, f"image-{index}.png", image, {**metadata, "index": index})
            for index, image in enumerate(images)
        )
        return [self._result(plan, started, files=files, seed=params.seed)]
