"""Upscale: by an upscaler model when the request names one, else Lanczos."""

from __future__ import annotations

from typing import Any

from ... import imaging
from ...errors import FailedPreconditionError, InvalidArgumentError
from ...handlers.base import UpscalerModel
from ...model_entry import ModelEntry, Task
from ...task_params import PostprocessParams
from ..requests import PostprocessInput
from .base import ModelUse, Plan
from .postprocess import PostprocessRunner


class UpscaleRunner(PostprocessRunner):
    tasks = frozenset({Task.UPSCALE})
    model_use = ModelUse.OPTIONAL

    def _params(self, raw: PostprocessInput, image: Any, entry: ModelEntry | None) -> PostprocessParams:
        if raw.adjustments:
            raise InvalidArgumentError("postprocess.adjustments: upscale takes no adjustments")
        model_scale = entry.manifest.scale if entry and entry.manifest else None
        scale = raw.scale if raw.scale is not None else (model_scale or 2)
        if model_scale is not None and scale != model_scale:
            raise InvalidArgumentError(f"postprocess.scale: model '{entry.name}' upscales by {model_scale}, not {scale}")  # type: ignore[union-attr]
        imaging.check_scale(scale)
        width, height = image.size
        side = self._context.limits.max_image_side * 4
        if width * scale > side or height * scale > side:
            raise InvalidArgumentError(f"postprocess.scale: {width}x{height} × {scale} exceeds {side} pixels per side")
        return PostprocessParams(image=image, scale=scale, adjustments={})

    def _process(self, plan: Plan) -> tuple[Any, dict[str, object]]:
        params: PostprocessParams = plan.params
        if plan.entry is None:
            return imaging.lanczos_upscale(params.image, params.scale), {
                "task": "upscale",
                "method": "lanczos",
                "scale": params.scale,
            }
        model = self._acquire(plan)
        if not isinstance(model, UpscalerModel):
            raise FailedPreconditionError(f"model: '{plan.entry.name}' is not an upscaler")
        return model.upscale(params.image), {"task": "upscale", "model": plan.entry.name, "scale": model.scale}
