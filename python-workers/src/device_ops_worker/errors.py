"""The worker's one exception hierarchy.

Each exception carries the status it maps to, by name, so that code below the
servicer never imports grpc. ``interceptors.ErrorMappingInterceptor`` turns
them into gRPC statuses; anything else becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Statuses a domain error may carry; names match grpc.StatusCode."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    CANCELLED = "CANCELLED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


# What a caller sees for any failure that is not a WorkerError; the details
# stay in the worker's log.
INTERNAL_MESSAGE = "internal worker error; see the worker log"


class WorkerError(Exception):
    """Base of every error the worker reports to its caller on purpose.

    The message is shown to the caller, so it must name what was wrong and
    never carry secrets or internal paths.
    """

    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(WorkerError):
    status = Status.INVALID_ARGUMENT


class NotFoundError(WorkerError):
    status = Status.NOT_FOUND


class AlreadyExistsError(WorkerError):
    status = Status.ALREADY_EXISTS


class JobIdInUseError(AlreadyExistsError):
    """Infer with a job id this worker still holds: a job queued or running
    under it, one that ended and is still kept for AttachJob, or outputs in
    its folder. Refused before anything runs, so a job never runs twice and
    another job's outputs are never overwritten."""

    RUNNING = "running"
    ENDED = "ended"
    HAS_OUTPUTS = "has outputs"

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job_id: job id '{job_id}' is already in use on this worker ({state}); use a new id")
        self.job_id = job_id
        self.state = state


class FailedPreconditionError(WorkerError):
    status = Status.FAILED_PRECONDITION


class ResourceExhaustedError(WorkerError):
    status = Status.RESOURCE_EXHAUSTED


class CancelledError(WorkerError):
    status = Status.CANCELLED


class DeadlineExceededError(WorkerError):
    status = Status.DEADLINE_EXCEEDED


class UnavailableError(WorkerError):
    status = Status.UNAVAILABLE
