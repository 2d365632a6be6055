"""What every task runner provides to the inference service, and the
steps runners share on the device thread."""

from __future__ import annotations

import abc
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import FailedPreconditionError
from ...handlers.base import LoadedModel
from ...handlers.torch_support import dtype_name
from ...model_entry import ModelEntry, Task
from ...settings import Limits
from ..compute_devices import ComputeDevice
from ..device_queue import WorkItem
from ..jobs import InferenceResult, Job, JobCancelled, Started, emit_together
from ..model_manager import ModelManager
from ..placement_policy import PlacementPolicy


class ModelUse(enum.Enum):
    """Whether a task's request names a model."""

    REQUIRED = "required"
    # Without one, the runner does the work itself (upscale: Lanczos).
    OPTIONAL = "optional"
    NONE = "none"


@dataclass
class Plan:
    """A validated request bound to its model, device and dtype."""

    job: Job
    task: Task
    entry: ModelEntry | None
    device: ComputeDevice
    dtype: torch.dtype | None
    params: Any
    # What the runner prepared before queueing (embeddings: tokenized texts).
    prepared: Any = None


@dataclass(frozen=True)
class RunContext:
    """What runners need from the worker, the same for all of them."""

    manager: ModelManager
    policy: PlacementPolicy
    output_root: Path
    limits: Limits
    progress_interval_s: float


class TaskRunner(abc.ABC):
    tasks: frozenset[Task]
    model_use = ModelUse.REQUIRED
    # Checking params decodes images here, which blocks: done on a pool thread.
    checks_off_loop = False

    def __init__(self, context: RunContext) -> None:
        self._context = context

    @abc.abstractmethod
    def params(self, task: Task, raw: Any, entry: ModelEntry | None) -> Any:
        """The request's input checked into handler parameters (INVALID_ARGUMENT naming the field)."""

    async def prepare(self, plan: Plan) -> Any:
        """Work done on the event loop's side before the job is queued; None by default."""
        return None

    def work_item(self, plan: Plan) -> WorkItem:
        """The job as its device queue takes it; by default it never merges with others."""
        return WorkItem(plan.job, self.run, payload=plan)

    @abc.abstractmethod
    def run(self, items: list[WorkItem]) -> list[Any]:
        """On the device thread: one result (or exception) per item."""

    # ------------------------------------------------------------ shared steps (device thread)

    def _acquire(self, plan: Plan) -> LoadedModel:
        assert plan.entry is not None and plan.dtype is not None
        context = self._context
        model, _ = context.manager.acquire(plan.entry, plan.device, plan.dtype, before_load=context.policy.ensure_valid)
        return model

    def _begin(self, plan: Plan) -> None:
        plan.job.check_cancelled()
        plan.job.emit(Started(plan.device.id))

    def _result(self, plan: Plan, started: float, batch_size: int = 1, **fields: Any) -> InferenceResult:
        return InferenceResult(
            device_id=plan.device.id,
            run_ms=(time.perf_counter() - started) * 1000,
            model=plan.entry.name if plan.entry else "",
            dtype=dtype_name(plan.dtype) if plan.dtype else "",
            batch_size=batch_size,
            **fields,
        )

    def _run_merged(
        self,
        items: list[WorkItem],
        kind: type[LoadedModel],
        compute: Callable[[Any, list[WorkItem]], list[dict[str, Any] | Exception]],
    ) -> list[Any]:
        """Run a merged batch: jobs cancelled while queued get JobCancelled,
        the rest one model call; `compute` returns the result fields of each
        live item, in order."""
        started = time.perf_counter()
        live = [item for item in items if not item.payload.job.cancelled]
        results: dict[int, Any] = {id(item): JobCancelled() for item in items}
        if not live:
            return [results[id(item)] for item in items]
        emit_together(live[0].payload.job.loop, [(item.payload.job, Started(item.payload.device.id)) for item in live])
        model = self._acquire(live[0].payload)
        if not isinstance(model, kind):
            raise FailedPreconditionError(f"model: '{live[0].payload.entry.name}' cannot run {live[0].payload.task.value}")
        # One pass from started to the result: no progress events (each would
        # cost a gRPC message per job, for nothing the result does not say).
        # An item whose own input the model refused gets that error; the others their result.
        for item, fields in zip(live, compute(model, live), strict=True):
            results[id(item)] = (
                fields if isinstance(fields, Exception) else self._result(item.payload, started, batch_size=len(live), **fields)
            )
        return [results[id(item)] for item in items]
