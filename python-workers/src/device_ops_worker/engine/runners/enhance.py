"""Enhance: exposure, contrast, color and sharpness factors, without a model."""

from __future__ import annotations

from typing import Any

from ... import imaging
from ...errors import InvalidArgumentError
from ...model_entry import ModelEntry, Task
from ...task_params import PostprocessParams
from ..requests import PostprocessInput
from .base import ModelUse, Plan
from .postprocess import PostprocessRunner


class EnhanceRunner(PostprocessRunner):
    tasks = frozenset({Task.ENHANCE})
    model_use = ModelUse.NONE

    def _params(self, raw: PostprocessInput, image: Any, entry: ModelEntry | None) -> PostprocessParams:
        imaging.check_adjustments(raw.adjustments)
        if raw.scale is not None:
            raise InvalidArgumentError("postprocess.scale: enhance does not scale")
        return PostprocessParams(image=image, scale=1, adjustments=dict(raw.adjustments))

    def _process(self, plan: Plan) -> tuple[Any, dict[str, object]]:
        params: PostprocessParams = plan.params
        return imaging.enhance(params.image, params.adjustments), {"task": "enhance", "adjustments": dict(params.adjustments)}
