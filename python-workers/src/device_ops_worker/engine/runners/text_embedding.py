"""Text embeddings: requests for one model on one device merge into one
batch, tokenized in one call (large requests before they queue)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from ...handlers.base import EmbeddingModel
from ...errors import InvalidArgumentError
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
        spreads it over the cores and releases the GIL); None leaves it there.
        Token ids are prepared on the device thread (no tokenizer to run)."""
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
        return WorkItem(plan.job, self.run, key, plan.params.count, payload=plan)

    def run(self, items: list[WorkItem]) -> list[Any]:
        return self._run_merged(items, EmbeddingModel, _embed)


def _embed(model: EmbeddingModel, live: list[WorkItem]) -> list[dict[str, Any] | Exception]:
    """One model call for every live item: large requests come tokenized
    (off this thread, see prepare), token ids are checked and padded here,
    and the texts of the others are tokenized here in one call. An item whose
    own input the model refuses (a token id, its dimensions) fails alone."""
    prepared: dict[int, Any] = {}
    refused: dict[int, Exception] = {}
    for item in live:
        params: EmbeddingParams = item.payload.params
        if item.payload.prepared is not None:
            prepared[id(item)] = item.payload.prepared
        elif params.token_ids:
            try:
                prepared[id(item)] = model.prepare_ids(list(params.token_ids))
            except InvalidArgumentError as exc:
                refused[id(item)] = exc
    texts_items = [item for item in live if id(item) not in prepared and id(item) not in refused]
    merged = model.tokenize([text for item in texts_items for text in item.payload.params.texts]) if texts_items else None
    ready = [item for item in live if id(item) in prepared]
    parts = [prepared[id(item)] for item in ready]
    order = ready + (texts_items if merged is not None else [])
    if merged is not None:
        parts.append(merged)
    rows_of: dict[int, np.ndarray] = {}
    tokens_of: dict[int, int] = {}
    if parts:
        vectors = model.embed_prepared(parts)
        lengths = np.concatenate([part.lengths for part in parts])
        offset = 0
        for item in order:
            count = item.payload.params.count
            rows_of[id(item)] = vectors[offset : offset + count]
            tokens_of[id(item)] = int(lengths[offset : offset + count].sum())
            offset += count
    if merged is None and texts_items:  # a model that cannot prepare texts: token counts unknown
        vectors = model.embed([text for item in texts_items for text in item.payload.params.texts], normalize=False)
        offset = 0
        for item in texts_items:
            count = item.payload.params.count
            rows_of[id(item)], tokens_of[id(item)] = vectors[offset : offset + count], 0
            offset += count
    produced: list[dict[str, Any] | Exception] = []
    for item in live:
        if id(item) in refused:
            produced.append(refused[id(item)])
            continue
        params = item.payload.params
        try:
            rows = _truncated(rows_of[id(item)], params.dimensions, model, item.payload.entry)
        except InvalidArgumentError as exc:
            produced.append(exc)
            continue
        if params.normalize:
            rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        produced.append({"embeddings": rows.astype(np.float32, copy=False), "prompt_tokens": tokens_of[id(item)]})
    return produced


def _truncated(rows: np.ndarray, dimensions: int | None, model: EmbeddingModel, entry: ModelEntry) -> np.ndarray:
    """The first ``dimensions`` components, where the model allows it: its
    own dimension always, shorter only as its manifest declares (models
    trained for truncation); anything else is refused, never silently cut."""
    native = rows.shape[1] if rows.ndim == 2 and rows.shape[0] else model.dimension
    if dimensions is None or dimensions == native:
        return rows
    declared = entry.manifest.dimensions
    if dimensions in declared and dimensions < native:
        return np.ascontiguousarray(rows[:, :dimensions])
    allowed = ", ".join(str(d) for d in sorted({*declared, native}) if d <= native)
    raise InvalidArgumentError(
        f"text_embedding.dimensions: model '{entry.name}' gives vectors of {native} dimensions"
        + (f" and may be truncated to {allowed}" if declared else " and is not trained for truncation")
        + f", not {dimensions}"
    )
