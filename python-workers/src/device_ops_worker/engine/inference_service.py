"""Inference: plan, queue, stream events, cancel, finish. What each task
checks and runs is its runner's (``runners/``).

Validation and placement happen before anything is accepted, so a bad
request ends the Infer call with its status and leaves no trace. From the
`accepted` event on, every outcome is a terminal event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import torch

from .. import outputs
from ..errors import (
    INTERNAL_MESSAGE,
    FailedPreconditionError,
    InvalidArgumentError,
    JobIdInUseError,
    NotFoundError,
    Status,
    WorkerError,
)
from ..model_entry import ModelEntry, Task, ValidationState
from ..models.repository import ModelRepository
from ..settings import Limits
from .compute_devices import ComputeDevice
from .device_queue import WorkItem
from .job_journal import JobJournal, JobJournals, Retention
from .jobs import (
    Accepted,
    Cancelled,
    CancelReason,
    Completed,
    Failed,
    Job,
    JobCancelled,
    JobEvent,
    JobRegistry,
    Queued,
    StampedEvent,
)
from .model_manager import ModelManager
from .placement_policy import PlacementPolicy
from .requests import InferenceRequest, check_input_matches_task
from .runners.base import ModelUse, Plan, RunContext
from .runners.registry import task_runners

log = logging.getLogger(__name__)


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
        retention: Retention = Retention(),
        observer: InferenceObserver | None = None,
        on_device_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._repository = repository
        self._manager = manager
        self._policy = policy
        self._output_root = output_root
        self._runners = task_runners(RunContext(manager, policy, output_root, limits, progress_interval_s))
        self._observer = observer or InferenceObserver()
        self._on_device_failure = on_device_failure or (lambda error: None)
        self._jobs = JobRegistry()
        self._journals = JobJournals(retention)
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
        consumer stops early (client gone), the job is cancelled, unless the
        request keeps it running: then it runs to its end for AttachJob."""
        job, journal = await self._admit(request)
        try:
            async with contextlib.aclosing(journal.follow(0)) as events:
                async for stamped in events:
                    yield stamped
        finally:
            if not job.finished and not request.keep_running_on_disconnect:
                self._cancel(job, CancelReason.CLIENT_GONE)

    def attach(self, job_id: str, after_sequence: int) -> AsyncIterator[StampedEvent]:
        """A queued, running or recently ended job's kept events after
        `after_sequence`, then its live ones up to the terminal event.
        Read-only: a follower that goes away leaves the job alone."""
        outputs.check_job_id(job_id)
        journal = self._journals.get(job_id)
        if journal is None:
            raise NotFoundError(
                f"job_id: no job '{job_id}' on this worker (never run here, or ended longer ago than it keeps jobs)"
            )
        return journal.follow(after_sequence)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job. False when it already ended."""
        outputs.check_job_id(job_id)
        job = self._jobs.get(job_id)
        if job is None:
            if job_id in self._finished_ids or self._journals.get(job_id) is not None:
                return False
            raise NotFoundError(f"job_id: no job '{job_id}' on this worker")
        return self._cancel(job, CancelReason.REQUESTED)

    async def shutdown(self) -> None:
        """Cancel every job and wait until each has sent its terminal event."""
        for job in self._jobs.active():
            self._cancel(job, CancelReason.SHUTDOWN)
        if self._finishers:
            await asyncio.gather(*self._finishers, return_exceptions=True)

    # ------------------------------------------------------------ admission

    async def _admit(self, request: InferenceRequest) -> tuple[Job, JobJournal]:
        """Check, plan and queue a job; it is accepted once this returns."""
        try:
            journal = self._reserve(request.job_id)
            try:
                job, plan, item, position = await self._queue(request, journal)
            except BaseException:
                self._journals.drop(journal)
                raise
        except WorkerError as error:
            # Refused before acceptance: a held id, bad input, unknown model, full queue.
            self._observer.refused(error.status.value)
            raise
        job.emit(Accepted(job.id))
        job.emit(Queued(position, plan.device.id))
        finisher = asyncio.get_running_loop().create_task(self._finish(plan, item))
        self._finishers.add(finisher)
        finisher.add_done_callback(self._finishers.discard)
        return job, journal

    def _reserve(self, job_id: str) -> JobJournal:
        """Hold a new job's id, or refuse it (ALREADY_EXISTS) while another
        job holds it: queued, running or ended and still kept, or its outputs
        on disk. Synchronous, before the first await of admission, so two
        calls with one id cannot both pass; a refusal leaves the other job,
        its events, its outputs and the queues as they were."""
        outputs.check_job_id(job_id)
        journal = self._journals.open(job_id)
        if outputs.has_job_outputs(self._output_root, job_id):
            # A job that ended longer ago than jobs are kept, one run before a
            # restart, or one of a worker sharing OUTPUT_DIRECTORY.
            self._journals.drop(journal)
            raise JobIdInUseError(job_id, JobIdInUseError.HAS_OUTPUTS)
        return journal

    async def _queue(self, request: InferenceRequest, journal: JobJournal) -> tuple[Job, Plan, WorkItem, int]:
        task = check_input_matches_task(request)
        job = Job(request.job_id, task, request.model, asyncio.get_running_loop(), journal.record)
        plan = await self._plan(request, task, job)
        item = self._runners[task].work_item(plan)
        self._jobs.add(job)
        if plan.entry is not None:
            self._manager.pin(plan.entry.name, plan.device.id)
        try:
            position = plan.device.queue.submit(item)
        except WorkerError:
            self._release(plan)
            raise
        self._queued[job.id] = (plan.device, item)
        return job, plan, item, position

    # ------------------------------------------------------------ planning

    async def _plan(self, request: InferenceRequest, task: Task, job: Job) -> Plan:
        runner = self._runners[task]
        entry = self._model_for(request, task, runner.model_use)
        device = self._policy.device_for(entry, request.device_id)
        dtype = self._policy.dtype_for(entry, device, request.dtype) if entry is not None else None
        # Texts and small tensors are cheaper to check inline than a hop to a thread.
        params = (
            await asyncio.to_thread(runner.params, task, request.input, entry)
            if runner.checks_off_loop
            else runner.params(task, request.input, entry)
        )
        plan = Plan(job=job, task=task, entry=entry, device=device, dtype=dtype, params=params)
        plan.prepared = await runner.prepare(plan)
        return plan

    def _model_for(self, request: InferenceRequest, task: Task, use: ModelUse) -> ModelEntry | None:
        if use is ModelUse.NONE:
            if request.model:
                raise InvalidArgumentError(f"model: {task.value} runs without a model")
            return None
        if not request.model:
            if use is ModelUse.OPTIONAL:
                return None
            raise InvalidArgumentError(f"model: task {task.value} needs a model")
        entry = self._repository.get(request.model)
        if task not in entry.tasks:
            supported = ", ".join(sorted(t.value for t in entry.tasks))
            raise FailedPreconditionError(f"model: '{entry.name}' runs {supported}, not {task.value}")
        if self._repository.validation_state(entry.name) is ValidationState.INVALID:
            raise FailedPreconditionError(f"model: '{entry.name}' failed validation; see ValidateModel")
        return entry

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
