"""Text embeddings: requests for one model on one device merge into one
batch, tokenized in one call (large requests before they queue)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from ...handlers.base import EmbeddingModel
from ...model_entry import ModelEntry, Task
from ...task_params import EmbeddingParams
from ..device_queue import WorkItem
from ..requests import TextEmbeddingInput, validate_text_embedding
from .base import Plan, TaskRunner

# Embedding requests with at least this many characters in all are tokenized
# before they are queued (see TextEmbeddingRunner.prepare).
_PRETOKENIZE_CHARS = 4_096


class TextEmbeddingRunner(TaskRunner):
    tasks = frozenset({Task.TEXT_EMBEDDING})

    def params(self, task: Task, raw: Any, entry: ModelEntry | None) -> EmbeddingParams:
        assert isinstance(raw, TextEmbeddingInput)
        return validate_text_embedding(raw, self._context.limits)

    async def prepare(self, plan: Plan) -> Any:
        """A large request is tokenized on a pool thread before it is queued
        (the model being resident), so that tokenizing it overlaps the
        device's work on others. Small ones are left to the device thread,
        which tokenizes a merged batch's texts in one call (the tokenizer
        spreads it over the cores and releases the GIL); None leaves it there."""
        assert plan.entry is not None and plan.dtype is not None
        texts = plan.params.texts
        if sum(map(len, texts)) < _PRETOKENIZE_CHARS:
            return None
        model = self._context.manager.resident(plan.entry.name, plan.device.id, plan.dtype)
        if not isinstance(model, EmbeddingModel):
            return None
        return await asyncio.to_thread(model.tokenize, list(texts))

    def work_item(self, plan: Plan) -> WorkItem:
        assert plan.entry is not None
        key = ("embed", plan.entry.name, plan.device.id, plan.dtype)
        return WorkItem(plan.job, self.run, key, len(plan.params.texts), payload=plan)

    def run(self, items: list[WorkItem]) -> list[Any]:
        return self._run_merged(items, EmbeddingModel, _embed)


def _embed(model: EmbeddingModel, live: list[WorkItem]) -> list[dict[str, Any]]:
    # Large requests come tokenized (off this thread, see prepare); the
    # texts of the others are tokenized here in one call.
    ready = [item for item in live if item.payload.prepared is not None]
    rest = [item for item in live if item.payload.prepared is None]
    parts = [item.payload.prepared for item in ready]
    if rest:
        parts.append(model.tokenize([text for item in rest for text in item.payload.params.texts]))
    if all(part is not None for part in parts):
        order, vectors = ready + rest, model.embed_prepared(parts)
    else:  # a model that cannot prepare texts
        order = live
        vectors = model.embed([text for item in live for text in item.payload.params.texts], normalize=False)
    rows_of: dict[int, np.ndarray] = {}
    offset = 0
    for item in order:
        count = len(item.payload.params.texts)
        rows_of[id(item)] = vectors[offset : offset + count]
        offset += count
    produced = []
    for item in live:
        params, rows = item.payload.params, rows_of[id(item)]
        if params.normalize:
            rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        produced.append({"embeddings": rows.astype(np.float32, copy=False)})
    return produced
