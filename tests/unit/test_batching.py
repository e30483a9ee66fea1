"""The micro-batcher: concurrent submits share one call, in order, with a bounded queue, a timeout and a bound on
a batch's total weight (its work); heavy batches run off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flts.batching import MicroBatcher, Overloaded, TimedOut, TooLarge


def _doubler(calls: list[list[int]]):
    def process(items: list[int]) -> list[int | BaseException]:
        calls.append(list(items))
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]

    return process


def test_concurrent_submits_share_one_call_and_each_gets_its_own_result() -> None:
    calls: list[list[int]] = []
    batcher = MicroBatcher(_doubler(calls), max_batch=16, max_wait=0.05, max_queue=16, timeout=5)

    async def main() -> list:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert calls == [[0, 1, 2, 3, 4, 5]]
    assert results[0::2] == [0, 4, 8]
    assert [str(error) for error in results[1::2]] == ["odd 1", "odd 3", "odd 5"]


def test_a_batch_never_exceeds_max_batch() -> None:
    calls: list[list[int]] = []
    batcher = MicroBatcher(_doubler(calls), max_batch=4, max_wait=0.05, max_queue=64, timeout=5)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit(i * 2) for i in range(10)))
        await batcher.close()

    asyncio.run(main())
    assert [len(call) for call in calls] == [4, 4, 2]


def test_a_full_queue_refuses_at_once() -> None:
    batcher = MicroBatcher(_doubler([]), max_batch=8, max_wait=0.2, max_queue=2, timeout=5)

    async def main() -> list:
        results = await asyncio.gather(*(batcher.submit(i * 2) for i in range(4)), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results[:2] == [0, 4]
    assert all(isinstance(result, Overloaded) for result in results[2:])


def test_a_caller_that_waited_too_long_gets_timed_out_and_its_item_is_never_processed() -> None:
    calls: list[list[int]] = []
    batcher = MicroBatcher(_doubler(calls), max_batch=8, max_wait=0.2, max_queue=8, timeout=0.02)

    async def main() -> None:
        with pytest.raises(TimedOut):
            await batcher.submit(2)
        await asyncio.sleep(0.3)
        await batcher.close()

    asyncio.run(main())
    assert calls == []


def test_the_batch_function_runs_off_the_event_loop_thread() -> None:
    threads: list[str] = []

    def process(items: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return items

    batcher = MicroBatcher(process, max_batch=8, max_wait=0, max_queue=8, timeout=5, name="model")

    async def main() -> None:
        assert await batcher.submit(7) == 7
        await batcher.close()

    asyncio.run(main())
    assert threads and threads[0].startswith("model") and threads[0] != threading.current_thread().name


def test_a_batch_never_weighs_more_than_max_weight_and_the_item_that_would_opens_the_next() -> None:
    calls: list[list[int]] = []
    batcher = MicroBatcher(
        _doubler(calls), max_batch=16, max_wait=0.05, max_queue=64, timeout=5, weigh=lambda i: i, max_weight=10
    )

    async def main() -> list:
        results = await asyncio.gather(*(batcher.submit(i) for i in (4, 6, 2, 8, 10, 2)))
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results == [8, 12, 4, 16, 20, 4]
    assert calls == [[4, 6], [2, 8], [10], [2]]  # first come, first served: nothing skips ahead to fill a batch


def test_an_item_heavier_than_a_whole_batch_is_refused_before_it_is_queued() -> None:
    calls: list[list[int]] = []
    batcher = MicroBatcher(
        _doubler(calls), max_batch=16, max_wait=0, max_queue=64, timeout=5, weigh=lambda i: i, max_weight=10
    )

    async def main() -> None:
        with pytest.raises(TooLarge, match="weighs 12; a batch may weigh at most 10"):
            await batcher.submit(12)
        assert batcher.depth == 0
        assert await batcher.submit(10) == 20
        await batcher.close()

    asyncio.run(main())
    assert calls == [[10]]


def test_a_light_batch_runs_on_the_event_loop_and_a_heavy_one_on_the_worker_thread() -> None:
    threads: dict[int, str] = {}

    def process(items: list[int]) -> list[int]:
        threads[sum(items)] = threading.current_thread().name
        return items

    batcher = MicroBatcher(
        process, max_batch=8, max_wait=0, max_queue=8, timeout=5, name="model", weigh=lambda i: i, inline_max_weight=5
    )

    async def main() -> None:
        assert await batcher.submit(5) == 5
        assert await batcher.submit(6) == 6
        await batcher.close()

    asyncio.run(main())
    assert threads[5] == threading.current_thread().name  # asyncio.run's loop runs on this thread
    assert threads[6].startswith("model")
