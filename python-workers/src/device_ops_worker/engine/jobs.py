"""Jobs and their events. Device threads add events through ``Job.emit``,
which is thread-safe; each stamped event reaches the job's sink (its
journal, ``job_journal.py``) on the event loop, in sequence order."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import JobIdInUseError, Status
from ..model_entry import Task
from ..outputs import OutputFile


class CancelReason(enum.Enum):
    REQUESTED = "cancel-requested"
    CLIENT_GONE = "client-disconnected"
    SHUTDOWN = "worker-shutting-down"


class JobCancelled(Exception):
    """Raised on a device thread at a step boundary when the job was cancelled."""


@dataclass(frozen=True)
class InferenceResult:
    device_id: str
    run_ms: float
    model: str
    dtype: str
    batch_size: int = 1
    files: tuple[OutputFile, ...] = ()
    embeddings: np.ndarray | None = None
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None
    # Text embedding: tokens read, padding excluded.
    prompt_tokens: int = 0


@dataclass(frozen=True)
class Accepted:
    job_id: str


@dataclass(frozen=True)
class Queued:
    position: int
    device_id: str


@dataclass(frozen=True)
class Started:
    device_id: str


@dataclass(frozen=True)
class Progress:
    current: int
    total: int


@dataclass(frozen=True)
class Completed:
    result: InferenceResult


@dataclass(frozen=True)
class Failed:
    status: Status
    message: str


@dataclass(frozen=True)
class Cancelled:
    reason: CancelReason


JobEvent = Accepted | Queued | Started | Progress | Completed | Failed | Cancelled
TERMINAL = (Completed, Failed, Cancelled)


@dataclass(frozen=True)
class StampedEvent:
    sequence: int
    timestamp_ms: int
    event: JobEvent


# Takes a job's stamped events on the event loop, in sequence order.
EventSink = Callable[[StampedEvent], None]


class Job:
    """One inference job: its identity, cancellation flag and event stream."""

    def __init__(self, job_id: str, task: Task, model: str, loop: asyncio.AbstractEventLoop, sink: EventSink) -> None:
        self.id = job_id
        self.task = task
        self.model = model
        self.created = time.monotonic()
        self._loop = loop
        # Jobs are created on the loop's thread.
        self._loop_thread = threading.get_ident()
        self._sink = sink
        self._sequence = 0
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._cancel_reason: CancelReason | None = None
        self._terminal = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def finished(self) -> bool:
        return self._terminal

    @property
    def cancel_reason(self) -> CancelReason | None:
        return self._cancel_reason

    def emit(self, event: JobEvent) -> None:
        """Add an event from any thread. Nothing follows a terminal event."""
        with self._lock:
            stamped = self._stamp(event)
            if stamped is None:
                return
            # Scheduled under the lock so events reach the sink in sequence
            # order. From the loop's own thread no wake-up is needed (the
            # thread-safe call writes to the loop's self-pipe every time).
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._sink, stamped)
            else:
                self._loop.call_soon_threadsafe(self._sink, stamped)

    def _stamp(self, event: JobEvent) -> StampedEvent | None:
        """The event with its sequence number; None after the terminal one. Under the lock."""
        if self._terminal:
            return None
        self._terminal = isinstance(event, TERMINAL)
        self._sequence += 1
        return StampedEvent(self._sequence, int(time.time() * 1000), event)

    def cancel(self, reason: CancelReason) -> bool:
        """Ask the job to stop; False when it already ended."""
        with self._lock:
            if self._terminal or self._cancel.is_set():
                return not self._terminal
            self._cancel_reason = reason
            self._cancel.set()
            return True

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Called at step boundaries on the device thread."""
        if self._cancel.is_set():
            raise JobCancelled()


def emit_together(loop: asyncio.AbstractEventLoop, events: list[tuple[Job, JobEvent]]) -> None:
    """Events of several jobs (a merged batch) from a device thread with one
    wake-up of the event loop instead of one each. Every job's lock is held
    until the delivery is scheduled, so each job's events stay in order."""
    with contextlib.ExitStack() as locks:
        deliveries: list[tuple[EventSink, StampedEvent]] = []
        for job, event in events:
            locks.enter_context(job._lock)
            stamped = job._stamp(event)
            if stamped is not None:
                deliveries.append((job._sink, stamped))
        if deliveries:
            loop.call_soon_threadsafe(_deliver, deliveries)


def _deliver(deliveries: list[tuple[EventSink, StampedEvent]]) -> None:
    for sink, stamped in deliveries:
        sink(stamped)


class JobRegistry:
    """Jobs that have not ended, by id, so CancelJob can find them. Ids are
    refused a second run before this (``JobJournals.open``); here a second
    one would be a bug."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        if job.id in self._jobs:
            raise JobIdInUseError(job.id, JobIdInUseError.RUNNING)
        self._jobs[job.id] = job

    def remove(self, job: Job) -> None:
        if self._jobs.get(job.id) is job:
            del self._jobs[job.id]

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def active(self) -> list[Job]:
        return list(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)


def describe(value: Any) -> str:
    """Short, safe description of an exception for a client-facing message."""
    text = str(value).strip().splitlines()[0] if str(value).strip() else type(value).__name__
    return text[:300]
