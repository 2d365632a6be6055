"""The job journal on its own, where the wire cannot see it: ended jobs are
let go when their retention runs out even if no call comes, and ids are held
from the moment they are opened."""

from __future__ import annotations

import asyncio

import pytest

from device_ops_worker.engine.job_journal import JobJournals, Retention
from device_ops_worker.engine.jobs import Accepted, Completed, InferenceResult, Progress, StampedEvent
from device_ops_worker.errors import JobIdInUseError, Status


def _stamped(sequence: int, event: object) -> StampedEvent:
    return StampedEvent(sequence, 0, event)  # type: ignore[arg-type]


async def test_ended_journals_are_let_go_on_time_without_any_call() -> None:
    journals = JobJournals(Retention(seconds=0.1))
    journal = journals.open("job")
    journal.record(_stamped(1, Accepted("job")))
    journal.record(_stamped(2, Completed(InferenceResult(device_id="cpu", run_ms=1, model="", dtype=""))))
    assert len(journals) == 1
    await asyncio.sleep(0.3)
    assert len(journals) == 0


async def test_an_id_is_held_from_open_until_dropped() -> None:
    journals = JobJournals(Retention())
    journal = journals.open("job")
    message = r"^job_id: job id 'job' is already in use on this worker \(running\); use a new id$"
    with pytest.raises(JobIdInUseError, match=message) as refused:
        journals.open("job")
    assert refused.value.status is Status.ALREADY_EXISTS and refused.value.job_id == "job"
    journals.drop(journal)
    journals.open("job")


async def test_an_ended_and_kept_id_stays_held_until_it_expires() -> None:
    journals = JobJournals(Retention(seconds=0.1))
    journal = journals.open("job")
    journal.record(_stamped(1, Accepted("job")))
    journal.record(_stamped(2, Completed(InferenceResult(device_id="cpu", run_ms=1, model="", dtype=""))))
    with pytest.raises(JobIdInUseError, match=r"\(ended\); use a new id$"):
        journals.open("job")
    # Refusing left the kept job as it was.
    assert journals.get("job") is journal and [s.sequence for s in journal.replay(0)] == [1, 2]
    await asyncio.sleep(0.3)
    assert journals.open("job") is not journal


async def test_replay_merges_kept_and_last_progress_in_sequence_order() -> None:
    journal = JobJournals(Retention(progress_events=2)).open("job")
    journal.record(_stamped(1, Accepted("job")))
    for step in range(1, 6):
        journal.record(_stamped(1 + step, Progress(step, 5)))
    assert [s.sequence for s in journal.replay(0)] == [1, 5, 6]
    assert [s.sequence for s in journal.replay(5)] == [6]
