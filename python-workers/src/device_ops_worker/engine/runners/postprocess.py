"""What upscale and enhance share: an image from the request or from an
earlier job's output, and one PNG written back."""

from __future__ import annotations

import abc
import time
from typing import Any

from ... import imaging, outputs
from ...errors import InvalidArgumentError
from ...model_entry import ModelEntry, Task
from ...task_params import PostprocessParams
from ..device_queue import WorkItem
from ..jobs import Progress
from ..requests import PostprocessInput
from .base import Plan, TaskRunner


class PostprocessRunner(TaskRunner):
    checks_off_loop = True

    def params(self, task: Task, raw: Any, entry: ModelEntry | None) -> PostprocessParams:
        assert isinstance(raw, PostprocessInput)
        return self._params(raw, self._source_image(raw), entry)

    def _source_image(self, raw: PostprocessInput) -> Any:
        """The decoded input image: given inline, or read from OUTPUT_DIRECTORY."""
        if bool(raw.image) == bool(raw.source_output):
            raise InvalidArgumentError("postprocess: give exactly one of image and source_output")
        limits = self._context.limits
        if raw.image:
            return imaging.decode_image(raw.image, "postprocess.image", limits.max_input_pixels)
        return outputs.read_output_image(self._context.output_root, raw.source_output, limits.max_input_pixels)

    @abc.abstractmethod
    def _params(self, raw: PostprocessInput, image: Any, entry: ModelEntry | None) -> PostprocessParams:
        """The task's own checks of the request, given its decoded image."""

    def run(self, items: list[WorkItem]) -> list[Any]:
        plan: Plan = items[0].payload
        started = time.perf_counter()
        self._begin(plan)
        image, metadata = self._process(plan)
        plan.job.check_cancelled()
        name = f"{plan.task.value}-0.png"
        written = outputs.write_png(self._context.output_root, plan.job.id, name, image, metadata)
        plan.job.emit(Progress(1, 1))
        return [self._result(plan, started, files=(written,))]

    @abc.abstractmethod
    def _process(self, plan: Plan) -> tuple[Any, dict[str, object]]:
        """The output image and the metadata written into its PNG."""
