"""One bounded execution queue per device.

Work runs one item (or one merged batch) at a time on a thread dedicated to
the device, so torch calls never block the event loop and two jobs never
fight over one device. Items with the same batch key (same model, device,
dtype, compatible shapes) are merged when they are taken from the queue:
while the device is busy, requests accumulate and the next run takes all of
them at once; on an idle device the first request waits at most
``max_batch_delay`` for company.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import ResourceExhaustedError
from .jobs import Job

log = logging.getLogger(__name__)

# Runs on the device thread with the items of one batch (a single item when
# not batchable) and returns one result (or exception) per item.
BatchRunner = Callable[[list["WorkItem"]], list[Any]]


@dataclass(eq=False)
class WorkItem:
    job: Job | None
    run: BatchRunner
    # Items with equal keys may run together; None never merges.
    batch_key: Hashable | None = None
    # Rows this item adds to a batch (texts, tensor rows).
    rows: int = 1
    enqueued_at: float = field(default_factory=time.monotonic)
    future: asyncio.Future[Any] | None = None
    # Whatever the runner needs to run this item (its validated plan).
    payload: Any = None


class DeviceQueue:
    def __init__(
        self,
        device_id: str,
        max_pending: int,
        max_batch_rows: int,
        max_batch_delay_s: float,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self._max_pending = max_pending
        self._max_batch_rows = max_batch_rows
        self._max_batch_delay_s = max_batch_delay_s
        self._on_wait = on_wait
        self._pending: collections.deque[WorkItem] = collections.deque()
        self._wakeup = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"device-{device_id}")
        self._task: asyncio.Task[None] | None = None
        self._running: list[WorkItem] = []

    @property
    def depth(self) -> int:
        """Items waiting, not counting the batch that runs."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    @property
    def running(self) -> int:
        """Jobs in the batch that runs now."""
        return len(self._running)

    @property
    def capacity(self) -> int:
        return self._max_pending

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._consume(), name=f"queue-{self.device_id}")

    def submit(self, item: WorkItem) -> int:
        """Queue an item; returns its position (items ahead). Refuses at once when full."""
        if len(self._pending) >= self._max_pending:
            raise ResourceExhaustedError(
                f"device {self.device_id} queue is full: {len(self._pending)} of {self._max_pending} jobs waiting; "
                "retry later"
            )
        item.future = asyncio.get_running_loop().create_future()
        position = len(self._pending) + (1 if self._running else 0)
        self._pending.append(item)
        self._wakeup.set()
        return position

    def withdraw(self, item: WorkItem) -> bool:
        """Remove an item that has not started; False when it already runs or ran."""
        try:
            self._pending.remove(item)
        except ValueError:
            return False
        return True

    async def run_now(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking call on the device thread outside the queue (management calls)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = await self._take_batch()
            self._running = batch
            now = time.monotonic()
            if self._on_wait is not None:
                for item in batch:
                    self._on_wait(self.device_id, now - item.enqueued_at)
            try:
                results = await loop.run_in_executor(self._thread, _run_batch, batch)
            except Exception as exc:  # the runner itself failed: every item gets the error
                results = [exc] * len(batch)
            finally:
                self._running = []
            for item, result in zip(batch, results, strict=True):
                if item.future is not None and not item.future.done():
                    if isinstance(result, BaseException):
                        item.future.set_exception(result)
                    else:
                        item.future.set_result(result)

    async def _take_batch(self) -> list[WorkItem]:
        first = self._pending.popleft()
        if first.batch_key is None or self._max_batch_rows <= 1:
            return [first]
        batch = [first]
        rows = first.rows
        deadline = time.monotonic() + self._max_batch_delay_s
        while True:
            rows = self._gather(batch, rows, first.batch_key)
            remaining = deadline - time.monotonic()
            if rows >= self._max_batch_rows or remaining <= 0:
                return batch
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                pass

    def _gather(self, batch: list[WorkItem], rows: int, key: Hashable) -> int:
        for item in list(self._pending):
            if item.batch_key == key and rows + item.rows <= self._max_batch_rows:
                self._pending.remove(item)
                batch.append(item)
                rows += item.rows
        return rows


def _run_batch(batch: list[WorkItem]) -> list[Any]:
    try:
        results = batch[0].run(batch)
    except Exception as exc:
        return [exc] * len(batch)
    if len(results) != len(batch):
        error = RuntimeError(f"batch runner returned {len(results)} results for {len(batch)} items")
        return [error] * len(batch)
    return results
