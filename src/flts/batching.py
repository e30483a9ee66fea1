"""An asyncio micro-batcher: concurrent requests share one call of a batch function (one forward pass).

`submit` puts an item on a bounded queue and awaits its result. One worker task takes the first
waiting item, gathers more until the batch is full or `max_wait` has passed since it took the
first, and runs the batch function. A batch is full at `max_batch` items or when the next waiting
item's weight (`weigh`: its work) would take the batch over `max_weight`; that item opens the next
batch (first come, first served), and an item heavier than `max_weight` on its own is refused at
once (`TooLarge`). A light batch (total weight at most `inline_max_weight`) runs on the event loop
itself, which spares the GIL hand-overs when the CPU is contended; a heavier one on a single worker
thread (the model's runtime releases the GIL), so the event loop keeps answering meanwhile.
Requests pile up while a batch runs, so under load the next batch is full without waiting.

Back-pressure is explicit: a full queue raises `Overloaded` at once (HTTP 429 with Retry-After),
and a request whose result is not ready within `timeout` raises `TimedOut` (HTTP 504); the batch
function never sees an item whose caller has given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Overloaded(Exception):
    """The queue is full: the caller should come back later."""


class TimedOut(Exception):
    """The result was not ready in time."""


class TooLarge(Exception):
    """The item alone weighs more than a batch may: it is never queued."""


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(TimedOut(f"no result within {timeout:g} s"))


@dataclass
class _Entry(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    weight: int


@dataclass
class _Lane(Generic[Item, Result]):
    """The queue and worker of one event loop (one under uvicorn; a TestClient may run several)."""

    waiting: deque[_Entry[Item, Result]] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None


class MicroBatcher(Generic[Item, Result]):
    """Groups concurrent `submit` calls into calls of `process(items) -> results or exceptions, in order`."""

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result | BaseException]],
        *,
        max_batch: int,
        max_wait: float,
        max_queue: int,
        timeout: float,
        name: str = "batcher",
        weigh: Callable[[Item], int] = lambda _: 1,
        max_weight: int | None = None,
        inline_max_weight: int = 0,
    ) -> None:
        """`weigh`: an item's weight (>= 1); `max_weight`: a batch's total (None: no limit); `inline_max_weight`:
        the heaviest batch run on the event loop (0: every batch on the worker thread)."""
        if max_batch < 1 or max_queue < 1 or max_wait < 0 or timeout <= 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait >= 0 and timeout > 0")
        if max_weight is not None and max_weight < 1:
            raise ValueError("max_weight must be >= 1")
        self.process = process
        self.weigh = weigh
        self.max_weight = max_weight
        self.inline_max_weight = inline_max_weight
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.timeout = timeout
        self.name = name
        self.on_batch: Callable[[int], None] | None = None  # called with each batch's size (metrics)
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane[Item, Result]] = (
            weakref.WeakKeyDictionary()
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    @property
    def depth(self) -> int:
        """Items waiting for a batch."""
        return sum(len(lane.waiting) for lane in list(self._lanes.values()))

    def _lane(self) -> _Lane[Item, Result]:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
            lane.worker = loop.create_task(self._run(lane), name=self.name)
        return lane

    async def submit(self, item: Item) -> Result:
        """The item's result; TooLarge when it weighs more than a batch may, Overloaded when the queue is full,
        TimedOut when it is not ready in time."""
        weight = self.weigh(item)
        if self.max_weight is not None and weight > self.max_weight:
            raise TooLarge(f"it weighs {weight}; a batch may weigh at most {self.max_weight}")
        lane = self._lane()
        if len(lane.waiting) >= self.max_queue:
            raise Overloaded(f"{self.max_queue} requests already waiting")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        lane.waiting.append(_Entry(item, future, weight))
        lane.arrived.set()
        expiry = loop.call_later(self.timeout, _expire, future, self.timeout)
        try:
            return await future
        finally:
            expiry.cancel()

    async def close(self) -> None:
        """Stop the running loop's worker (callers still waiting time out)."""
        lane = self._lanes.pop(asyncio.get_running_loop(), None)
        if lane is not None and lane.worker is not None:
            lane.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lane.worker

    def _next_batch(self, lane: _Lane[Item, Result]) -> tuple[int, bool]:
        """How many of the waiting entries the next batch takes (first come, first served; the first always),
        and whether that batch is full (an entry is left that would take it over max_batch or max_weight)."""
        count, weight = 0, 0
        for entry in lane.waiting:
            # An entry whose caller gave up is taken (and dropped) but weighs nothing.
            weight_after = weight if entry.future.done() else weight + entry.weight
            if count == self.max_batch or (self.max_weight is not None and weight_after > self.max_weight):
                return count, True
            count, weight = count + 1, weight_after
        return count, count == self.max_batch

    async def _gather(self, lane: _Lane[Item, Result]) -> list[_Entry[Item, Result]]:
        while not lane.waiting:
            lane.arrived.clear()
            await lane.arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while not self._next_batch(lane)[1] and (remaining := deadline - loop.time()) > 0:
            lane.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.arrived.wait(), remaining)
        batch = [lane.waiting.popleft() for _ in range(self._next_batch(lane)[0])]
        return [entry for entry in batch if not entry.future.done()]  # done: its caller gave up

    async def _run(self, lane: _Lane[Item, Result]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(lane)
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                items = [e.item for e in batch]
                if sum(e.weight for e in batch) <= self.inline_max_weight:
                    results = self.process(items)
                else:
                    results = await loop.run_in_executor(self._executor, self.process, items)
            except Exception as exc:  # the batch function failed as a whole: every caller gets the error
                results = [exc] * len(batch)
            for entry, result in zip(batch, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)
