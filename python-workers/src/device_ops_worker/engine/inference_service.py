"""Inference: validate, place, queue, run, stream events, cancel.

Validation and placement happen before anything is accepted, so a bad
request ends the Infer call with its status and leaves no trace. From the
`accepted` event on, every outcome is a terminal event.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import imaging, outputs
from ..handlers.loader import dtype_name
from ..errors import INTERNAL_MESSAGE, FailedPreconditionError, InvalidArgumentError, NotFoundError, Status, WorkerError
from ..handlers.base import DiffusionModel, EmbeddingModel, LoadedModel, TensorModel, UpscalerModel
from ..models.repository import ModelRepository
from ..settings import Limits
from ..types import DIFFUSION_TASKS, ModelEntry, PostprocessParams, Task, ValidationState
from .compute_devices import ComputeDevice
from .device_queue import WorkItem
from .jobs import (
    Accepted,
    Cancelled,
    CancelReason,
    Completed,
    Failed,
    InferenceResult,
    Job,
    JobCancelled,
    JobEvent,
    JobRegistry,
    Progress,
    Queued,
    StampedEvent,
    Started,
    emit_together,
)
from .model_manager import ModelManager
from .placement_policy import PlacementPolicy
from .requests import (
    ImageGenerationInput,
    InferenceRequest,
    PostprocessInput,
    TensorInput,
    TextEmbeddingInput,
    batch_rows,
    check_input_matches_task,
    validate_image_generation,
    validate_tensor,
    validate_text_embedding,
)

log = logging.getLogger(__name__)

MODEL_LESS_TASKS = frozenset({Task.UPSCALE, Task.ENHANCE})
# Embedding requests with at least this many characters in all are tokenized
# before they are queued (see InferenceService._tokenize).
_PRETOKENIZE_CHARS = 4_096


@dataclass
class Plan:
    """A validated request bound to its model, device and dtype."""

    job: Job
    task: Task
    entry: ModelEntry | None
    device: ComputeDevice
    dtype: torch.dtype | None
    params: Any
    # Texts tokenized before queueing (embeddings), when the model was resident.
    prepared: Any = None


class InferenceObserver:
    """Hooks for metrics; the default does nothing."""

    def finished(self, task: Task, model: str, outcome: str, run_seconds: float | None) -> None: ...

    def refused(self, status: str) -> None: ...


def is_fatal_device_error(error: BaseException) -> bool:
    """A CUDA error (not out-of-memory) after which the device cannot be trusted."""
    if isinstance(error, torch.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    return isinstance(error, RuntimeError) and "CUDA error" in str(error)


class InferenceService:
    def __init__(
        self,
        *,
        repository: ModelRepository,
        manager: ModelManager,
        policy: PlacementPolicy,
        output_root: Path,
        limits: Limits,
        progress_interval_s: float = 0.0,
        observer: InferenceObserver | None = None,
        on_device_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._repository = repository
        self._manager = manager
        self._policy = policy
        self._output_root = output_root
        self._limits = limits
        self._progress_interval_s = progress_interval_s
        self._observer = observer or InferenceObserver()
        self._on_device_failure = on_device_failure or (lambda error: None)
        self._jobs = JobRegistry()
        self._queued: dict[str, tuple[ComputeDevice, WorkItem]] = {}
        # Ids of recently finished jobs, so CancelJob can say "already ended".
        self._finished_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._finishers: set[asyncio.Task[None]] = set()

    @property
    def active_jobs(self) -> int:
        return len(self._jobs)

    # ------------------------------------------------------------ public

    async def infer(self, request: InferenceRequest) -> AsyncIterator[StampedEvent]:
        """Run one job, yielding its events until the terminal one. If the
        consumer stops early (client gone), the job is cancelled."""
        try:
            outputs.check_job_id(request.job_id)
            task = check_input_matches_task(request)
            if self._jobs.get(request.job_id) is not None:
                raise FailedPreconditionError(f"job_id: a job named '{request.job_id}' is already running on this worker")
            job = Job(request.job_id, task, request.model, asyncio.get_running_loop())
            plan = await self._plan(request, task, job)
            item = self._work_item(plan)
            self._jobs.add(job)
            if plan.entry is not None:
                self._manager.pin(plan.entry.name, plan.device.id)
            try:
                position = plan.device.queue.submit(item)
            except WorkerError:
                self._release(plan)
                raise
        except WorkerError as error:
            # Refused before acceptance: bad input, unknown model, full queue.
            self._observer.refused(error.status.value)
            raise
        self._queued[job.id] = (plan.device, item)
        job.emit(Accepted(job.id))
        job.emit(Queued(position, plan.device.id))
        finisher = asyncio.get_running_loop().create_task(self._finish(plan, item))
        self._finishers.add(finisher)
        finisher.add_done_callback(self._finishers.discard)
        try:
            while True:
                stamped = await job.next_event()
                yield stamped
                if isinstance(stamped.event, (Completed, Failed, Cancelled)):
                    return
        finally:
            if not job.finished:
                self._cancel(job, CancelReason.CLIENT_GONE)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job. False when it already ended."""
        outputs.check_job_id(job_id)
        job = self._jobs.get(job_id)
        if job is None:
            if job_id in self._finished_ids:
                return False
            raise NotFoundError(f"job_id: no job '{job_id}' on this worker")
        return self._cancel(job, CancelReason.REQUESTED)

    async def shutdown(self) -> None:
        """Cancel every job and wait until each has sent its terminal event."""
        for job in self._jobs.active():
            self._cancel(job, CancelReason.SHUTDOWN)
        if self._finishers:
            await asyncio.gather(*self._finishers, return_exceptions=True)

    # ------------------------------------------------------------ planning

    async def _plan(self, request: InferenceRequest, task: Task, job: Job) -> Plan:
        entry = self._model_for(request, task)
        device = self._policy.device_for(entry, request.device_id)
        dtype = self._policy.dtype_for(entry, device, request.dtype) if entry is not None else None
        # Decoding images blocks; texts and small tensors are cheaper inline
        # than a hop to a thread.
        heavy = isinstance(request.input, (ImageGenerationInput, PostprocessInput))
        params = (
            await asyncio.to_thread(self._params, task, request.input, entry)
            if heavy
            else self._params(task, request.input, entry)
        )
        plan = Plan(job=job, task=task, entry=entry, device=device, dtype=dtype, params=params)
        if task is Task.TEXT_EMBEDDING:
            plan.prepared = await self._tokenize(plan)
        return plan

    async def _tokenize(self, plan: Plan) -> Any:
        """A large request is tokenized on a pool thread before it is queued
        (the model being resident), so that tokenizing it overlaps the
        device's work on others. Small ones are left to the device thread,
        which tokenizes a merged batch's texts in one call (the tokenizer
        spreads it over the cores and releases the GIL); None leaves it there."""
        assert plan.entry is not None and plan.dtype is not None
        texts = plan.params.texts
        if sum(map(len, texts)) < _PRETOKENIZE_CHARS:
            return None
        model = self._manager.resident(plan.entry.name, plan.device.id, plan.dtype)
        if not isinstance(model, EmbeddingModel):
            return None
        return await asyncio.to_thread(model.tokenize, list(texts))

    def _model_for(self, request: InferenceRequest, task: Task) -> ModelEntry | None:
        if task is Task.ENHANCE:
            if request.model:
                raise InvalidArgumentError("model: enhance runs without a model")
            return None
        if not request.model:
            if task is Task.UPSCALE:
                return None  # Lanczos
            raise InvalidArgumentError(f"model: task {task.value} needs a model")
        entry = self._repository.get(request.model)
        if task not in entry.tasks:
            supported = ", ".join(sorted(t.value for t in entry.tasks))
            raise FailedPreconditionError(f"model: '{entry.name}' runs {supported}, not {task.value}")
        if self._repository.validation_state(entry.name) is ValidationState.INVALID:
            raise FailedPreconditionError(f"model: '{entry.name}' failed validation; see ValidateModel")
        return entry

    def _params(self, task: Task, raw: Any, entry: ModelEntry | None) -> Any:
        limits = self._limits
        if task in DIFFUSION_TASKS:
            assert isinstance(raw, ImageGenerationInput)
            init = imaging.decode_image(raw.init_image, "image_generation.init_image", limits.max_input_pixels) if raw.init_image else None
            mask = (
                imaging.decode_image(raw.mask_image, "image_generation.mask_image", limits.max_input_pixels, mode="L")
                if raw.mask_image
                else None
            )
            return validate_image_generation(task, raw, limits, init, mask)
        if task is Task.TEXT_EMBEDDING:
            assert isinstance(raw, TextEmbeddingInput)
            return validate_text_embedding(raw, limits)
        if task is Task.TENSOR:
            assert isinstance(raw, TensorInput)
            return validate_tensor(raw, entry.manifest if entry else None)
        assert isinstance(raw, PostprocessInput)
        return self._postprocess_params(task, raw, entry)

    def _postprocess_params(self, task: Task, raw: PostprocessInput, entry: ModelEntry | None) -> PostprocessParams:
        if bool(raw.image) == bool(raw.source_output):
            raise InvalidArgumentError("postprocess: give exactly one of image and source_output")
        if raw.image:
            image = imaging.decode_image(raw.image, "postprocess.image", self._limits.max_input_pixels)
        else:
            image = outputs.read_output_image(self._output_root, raw.source_output, self._limits.max_input_pixels)
        if task is Task.ENHANCE:
            imaging.check_adjustments(raw.adjustments)
            if raw.scale is not None:
                raise InvalidArgumentError("postprocess.scale: enhance does not scale")
            return PostprocessParams(image=image, scale=1, adjustments=dict(raw.adjustments))
        if raw.adjustments:
            raise InvalidArgumentError("postprocess.adjustments: upscale takes no adjustments")
        model_scale = entry.manifest.scale if entry and entry.manifest else None
        scale = raw.scale if raw.scale is not None else (model_scale or 2)
        if model_scale is not None and scale != model_scale:
            raise InvalidArgumentError(f"postprocess.scale: model '{entry.name}' upscales by {model_scale}, not {scale}")  # type: ignore[union-attr]
        imaging.check_scale(scale)
        width, height = image.size
        side = self._limits.max_image_side * 4
        if width * scale > side or height * scale > side:
            raise InvalidArgumentError(f"postprocess.scale: {width}x{height} × {scale} exceeds {side} pixels per side")
        return PostprocessParams(image=image, scale=scale, adjustments={})

    def _work_item(self, plan: Plan) -> WorkItem:
        if plan.task is Task.TEXT_EMBEDDING and plan.entry is not None:
            key = ("embed", plan.entry.name, plan.device.id, plan.dtype)
            return WorkItem(plan.job, self._run_embedding, key, len(plan.params.texts), payload=plan)
        if plan.task is Task.TENSOR and plan.entry is not None:
            batch_dim = plan.entry.manifest.batch_dim if plan.entry.manifest else None
            rows = batch_rows(plan.params, batch_dim)
            if rows is not None and batch_dim is not None:
                shapes = tuple(
                    sorted((name, a.dtype.str, a.shape[:batch_dim] + a.shape[batch_dim + 1 :]) for name, a in plan.params.inputs.items())
                )
                key = ("tensor", plan.entry.name, plan.device.id, plan.dtype, shapes)
                return WorkItem(plan.job, self._run_tensor, key, rows, payload=plan)
            return WorkItem(plan.job, self._run_tensor, None, 1, payload=plan)
        if plan.task in DIFFUSION_TASKS:
            return WorkItem(plan.job, self._run_diffusion, payload=plan)
        return WorkItem(plan.job, self._run_postprocess, payload=plan)

    # ------------------------------------------------------------ running (device thread)

    def _acquire(self, plan: Plan) -> LoadedModel:
        assert plan.entry is not None and plan.dtype is not None
        model, _ = self._manager.acquire(plan.entry, plan.device, plan.dtype, before_load=self._policy.ensure_valid)
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

    def _run_diffusion(self, items: list[WorkItem]) -> list[Any]:
        plan: Plan = items[0].payload
        started = time.perf_counter()
        self._begin(plan)
        model = self._acquire(plan)
        if not isinstance(model, DiffusionModel):
            raise FailedPreconditionError(f"model: '{plan.entry.name}' is not a diffusion pipeline")  # type: ignore[union-attr]
        job = plan.job
        interval = self._progress_interval_s
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
        files = tuple(
            outputs.write_png(self._output_root, job.id, f"image-{index}.png", image, {**metadata, "index": index})
            for index, image in enumerate(images)
        )
        return [self._result(plan, started, files=files, seed=params.seed)]

    def _run_merged(
        self,
        items: list[WorkItem],
        kind: type[LoadedModel],
        compute: Callable[[Any, list[WorkItem]], list[dict[str, Any]]],
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
        for item, fields in zip(live, compute(model, live), strict=True):
            results[id(item)] = self._result(item.payload, started, batch_size=len(live), **fields)
        return [results[id(item)] for item in items]

    def _run_embedding(self, items: list[WorkItem]) -> list[Any]:
        def compute(model: EmbeddingModel, live: list[WorkItem]) -> list[dict[str, Any]]:
            # Large requests come tokenized (off this thread, see _tokenize);
            # the texts of the others are tokenized here in one call.
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

        return self._run_merged(items, EmbeddingModel, compute)

    def _run_tensor(self, items: list[WorkItem]) -> list[Any]:
        def compute(model: TensorModel, live: list[WorkItem]) -> list[dict[str, Any]]:
            first: Plan = live[0].payload
            if len(live) == 1:
                return [{"tensors": model.run(dict(first.params.inputs))}]
            batch_dim = first.entry.manifest.batch_dim  # type: ignore[union-attr]
            return [{"tensors": t} for t in self._run_tensor_batch(model, live, batch_dim)]

        return self._run_merged(items, TensorModel, compute)

    @staticmethod
    def _run_tensor_batch(model: TensorModel, items: list[WorkItem], batch_dim: int) -> list[dict[str, np.ndarray]]:
        names = list(items[0].payload.params.inputs)
        merged = {name: np.concatenate([item.payload.params.inputs[name] for item in items], axis=batch_dim) for name in names}
        produced = model.run(merged)
        sizes = [item.rows for item in items]
        bounds = np.cumsum(sizes)[:-1]
        split = {name: np.split(array, bounds, axis=batch_dim) for name, array in produced.items()}
        return [{name: parts[index] for name, parts in split.items()} for index in range(len(items))]

    def _run_postprocess(self, items: list[WorkItem]) -> list[Any]:
        plan: Plan = items[0].payload
        started = time.perf_counter()
        self._begin(plan)
        params: PostprocessParams = plan.params
        if plan.task is Task.ENHANCE:
            image = imaging.enhance(params.image, params.adjustments)
            metadata: dict[str, object] = {"task": "enhance", "adjustments": dict(params.adjustments)}
        elif plan.entry is not None:
            model = self._acquire(plan)
            if not isinstance(model, UpscalerModel):
                raise FailedPreconditionError(f"model: '{plan.entry.name}' is not an upscaler")
            image = model.upscale(params.image)
            metadata = {"task": "upscale", "model": plan.entry.name, "scale": model.scale}
        else:
            image = imaging.lanczos_upscale(params.image, params.scale)
            metadata = {"task": "upscale", "method": "lanczos", "scale": params.scale}
        plan.job.check_cancelled()
        name = f"{plan.task.value}-0.png"
        written = outputs.write_png(self._output_root, plan.job.id, name, image, metadata)
        plan.job.emit(Progress(1, 1))
        return [self._result(plan, started, files=(written,))]

    # ------------------------------------------------------------ finishing (event loop)

    async def _finish(self, plan: Plan, item: WorkItem) -> None:
        job = plan.job
        assert item.future is not None
        started = time.monotonic()
        event: JobEvent
        try:
            result = await item.future
            event, outcome = Completed(result), "success"
        except asyncio.CancelledError:
            if not item.future.cancelled():
                raise
            event, outcome = Cancelled(job.cancel_reason or CancelReason.REQUESTED), "cancelled"
        except JobCancelled:
            event, outcome = Cancelled(job.cancel_reason or CancelReason.REQUESTED), "cancelled"
        except Exception as error:  # every failure becomes the job's terminal event
            event, outcome = self._failure(plan, error), "error"
        finally:
            self._release(plan)
            self._queued.pop(job.id, None)
        if isinstance(event, Cancelled):
            # A cancelled job leaves no half-finished outputs behind.
            outputs.remove_job_directory(self._output_root, job.id)
        job.emit(event)
        run_seconds = event.result.run_ms / 1000 if isinstance(event, Completed) else None
        self._observer.finished(plan.task, plan.entry.name if plan.entry else "", outcome, run_seconds)
        log.info(
            "job finished",
            extra={"jobId": job.id, "task": plan.task.value, "outcome": outcome, "seconds": round(time.monotonic() - started, 3)},
        )

    def _failure(self, plan: Plan, error: Exception) -> Failed:
        if isinstance(error, WorkerError):
            return Failed(error.status, error.message)
        if isinstance(error, torch.OutOfMemoryError):
            plan.device.release_cache()
            return Failed(Status.RESOURCE_EXHAUSTED, f"out of memory on {plan.device.id} while running the job; retry later")
        if is_fatal_device_error(error):
            log.error("device failed; the worker stops serving", extra={"deviceId": plan.device.id}, exc_info=error)
            self._on_device_failure(error)
            return Failed(Status.UNAVAILABLE, f"device {plan.device.id} failed; the worker is restarting")
        log.error("job failed with an unexpected error", extra={"jobId": plan.job.id}, exc_info=error)
        return Failed(Status.INTERNAL, INTERNAL_MESSAGE)

    def _release(self, plan: Plan) -> None:
        if plan.entry is not None:
            self._manager.unpin(plan.entry.name, plan.device.id)
        self._jobs.remove(plan.job)
        self._finished_ids[plan.job.id] = None
        while len(self._finished_ids) > 10_000:
            self._finished_ids.popitem(last=False)

    def _cancel(self, job: Job, reason: CancelReason) -> bool:
        if not job.cancel(reason):
            return False
        queued = self._queued.get(job.id)
        if queued is not None:
            device, item = queued
            if device.queue.withdraw(item) and item.future is not None:
                item.future.cancel()
        return True
