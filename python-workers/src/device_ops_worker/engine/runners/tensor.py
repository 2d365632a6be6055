"""Tensor models (TorchScript): named arrays in, named arrays out; requests
with the same shapes merge along the manifest's batch dimension."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...handlers.base import TensorModel
from ...model_entry import ModelEntry, Task
from ...task_params import TensorParams
from ..device_queue import WorkItem
from ..requests import TensorInput, batch_rows, validate_tensor
from .base import Plan, TaskRunner


class TensorRunner(TaskRunner):
    tasks = frozenset({Task.TENSOR})

    def params(self, task: Task, raw: Any, entry: ModelEntry | None) -> TensorParams:
        assert isinstance(raw, TensorInput)
        return validate_tensor(raw, entry.manifest if entry else None)

    def work_item(self, plan: Plan) -> WorkItem:
        assert plan.entry is not None
        batch_dim = plan.entry.manifest.batch_dim if plan.entry.manifest else None
        rows = batch_rows(plan.params, batch_dim)
        if rows is not None and batch_dim is not None:
            shapes = tuple(
                sorted((name, a.dtype.str, a.shape[:batch_dim] + a.shape[batch_dim + 1 :]) for name, a in plan.params.inputs.items())
            )
            key = ("tensor", plan.entry.name, plan.device.id, plan.dtype, shapes)
            return WorkItem(plan.job, self.run, key, rows, payload=plan)
        return WorkItem(plan.job, self.run, None, 1, payload=plan)

    def run(self, items: list[WorkItem]) -> list[Any]:
        return self._run_merged(items, TensorModel, _compute)


def _compute(model: TensorModel, live: list[WorkItem]) -> list[dict[str, Any]]:
    first: Plan = live[0].payload
    if len(live) == 1:
        return [{"tensors": model.run(dict(first.params.inputs))}]
    batch_dim = first.entry.manifest.batch_dim  # type: ignore[union-attr]
    return [{"tensors": t} for t in _run_batch(model, live, batch_dim)]


def _run_batch(model: TensorModel, items: list[WorkItem], batch_dim: int) -> list[dict[str, np.ndarray]]:
    names = list(items[0].payload.params.inputs)
    merged = {name: np.concatenate([item.payload.params.inputs[name] for item in items], axis=batch_dim) for name in names}
    produced = model.run(merged)
    sizes = [item.rows for item in items]
    bounds = np.cumsum(sizes)[:-1]
    split = {name: np.split(array, bounds, axis=batch_dim) for name, array in produced.items()}
    return [{name: parts[index] for name, parts in split.items()} for index in range(len(items))]
