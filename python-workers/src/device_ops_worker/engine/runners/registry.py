"""Which runner serves each task. The registry imports the runners; they never import it."""

from __future__ import annotations

from ...model_entry import Task
from .base import RunContext, TaskRunner
from .diffusion import DiffusionRunner
from .enhance import EnhanceRunner
from .tensor import TensorRunner
from .text_embedding import TextEmbeddingRunner
from .upscale import UpscaleRunner

_RUNNERS: tuple[type[TaskRunner], ...] = (DiffusionRunner, TextEmbeddingRunner, TensorRunner, UpscaleRunner, EnhanceRunner)


def task_runners(context: RunContext) -> dict[Task, TaskRunner]:
    return {task: runner for runner in (kind(context) for kind in _RUNNERS) for task in runner.tasks}
