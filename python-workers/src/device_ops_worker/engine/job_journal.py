"""Each job's events as AttachJob replays them, and their live fan-out.

A job's events outlive the call that started it: a gateway that dies or
restarts reattaches to a running or recently ended job (issue 16) and reads
what it missed, from a sequence number, then the live events. Everything runs
on the event loop (``Job.emit`` schedules ``JobJournal.record`` there), so a
follower's replay and its registration for live events happen with no event
in between: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..errors import JobIdInUseError
from .jobs import TERMINAL, Progress, StampedEvent

# Timers may fire up to the clock's resolution early; a little slack makes the
# expiry timer find the journal it was set for.
_TIMER_SLACK_S = 0.05


@dataclass(frozen=True)
class Retention:
    """How much of a job is kept for AttachJob (JOB_RETENTION_SECONDS,
    MAX_RETAINED_JOBS, MAX_RETAINED_PROGRESS_EVENTS)."""

    seconds: float = 600.0
    max_ended_jobs: int = 1024
    progress_events: int = 100


def _sequence(stamped: StampedEvent) -> int:
    return stamped.sequence


class JobJournal:
    """One job's kept events: every one but progress, and the most recent
    progress ones; each follower gets the live events after its replay."""

    def __init__(self, job_id: str, progress_events: int, on_end: Callable[[JobJournal], None]) -> None:
        self.job_id = job_id
        self._kept: list[StampedEvent] = []
        # Progress is the only event a job sends without bound (a step each).
        self._progress: collections.deque[StampedEvent] = collections.deque(maxlen=progress_events)
        self._followers: set[asyncio.Queue[StampedEvent]] = set()
        self._on_end = on_end
        self.ended_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def record(self, stamped: StampedEvent) -> None:
        """Keep one event and pass it to every follower. On the loop, in sequence order."""
        if self.ended:
            return
        (self._progress if isinstance(stamped.event, Progress) else self._kept).append(stamped)
        for queue in self._followers:
            queue.put_nowait(stamped)
        if isinstance(stamped.event, TERMINAL):
            self.ended_at = time.monotonic()
            self._followers.clear()
            self._on_end(self)

    def replay(self, after_sequence: int) -> list[StampedEvent]:
        """Kept events after `after_sequence`, in sequence order."""
        merged = heapq.merge(self._kept, self._progress, key=_sequence)
        return [stamped for stamped in merged if stamped.sequence > after_sequence]

    async def follow(self, after_sequence: int) -> AsyncIterator[StampedEvent]:
        """Kept events after `after_sequence`, then live ones, up to the terminal event."""
        # Replay and registration in one step of the loop: nothing is
        # recorded in between.
        replay = self.replay(after_sequence)
        if self.ended:
            for stamped in replay:
                yield stamped
            return
        queue: asyncio.Queue[StampedEvent] = asyncio.Queue()
        self._followers.add(queue)
        try:
            for stamped in replay:
                yield stamped
            while True:
                stamped = await queue.get()
                # A caller may ask from a sequence the job has not reached yet.
                if stamped.sequence > after_sequence:
                    yield stamped
                if isinstance(stamped.event, TERMINAL):
                    return
        finally:
            self._followers.discard(queue)


class JobJournals:
    """Journals by job id: every queued or running job's, and the ended ones'
    for `Retention.seconds`, at most `Retention.max_ended_jobs` of them (the
    earliest ended go first). Holding an id is what refuses it a second run."""

    def __init__(self, retention: Retention) -> None:
        self._retention = retention
        self._live: dict[str, JobJournal] = {}
        # In the order the jobs ended, so the oldest are at the front.
        self._ended: collections.OrderedDict[str, JobJournal] = collections.OrderedDict()

    def open(self, job_id: str) -> JobJournal:
        """A new job's journal, holding its id; ALREADY_EXISTS while the id
        is held (queued or running, or ended and still kept). No await
        between the check and the hold: two calls with one id cannot both pass."""
        held = self.get(job_id)
        if held is not None:
            raise JobIdInUseError(job_id, JobIdInUseError.ENDED if held.ended else JobIdInUseError.RUNNING)
        journal = JobJournal(job_id, self._retention.progress_events, self._ended_job)
        self._live[job_id] = journal
        return journal

    def drop(self, journal: JobJournal) -> None:
        """Forget a job refused before acceptance: it never ran."""
        if self._live.get(journal.job_id) is journal:
            del self._live[journal.job_id]

    def get(self, job_id: str) -> JobJournal | None:
        self._expire()
        return self._live.get(job_id) or self._ended.get(job_id)

    def __len__(self) -> int:
        return len(self._live) + len(self._ended)

    def _ended_job(self, journal: JobJournal) -> None:
        self.drop(journal)
        self._ended[journal.job_id] = journal
        while len(self._ended) > self._retention.max_ended_jobs:
            self._ended.popitem(last=False)
        # Expired journals are let go on time, not only at the next call,
        # so an idle worker does not hold results it no longer serves.
        asyncio.get_running_loop().call_later(self._retention.seconds + _TIMER_SLACK_S, self._expire)

    def _expire(self) -> None:
        deadline = time.monotonic() - self._retention.seconds
        while self._ended:
            journal = next(iter(self._ended.values()))
            assert journal.ended_at is not None
            if journal.ended_at > deadline:
                return
            self._ended.popitem(last=False)
