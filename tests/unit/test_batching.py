"""The micro-batcher: concurrent submits share one call, in order, with a bounded queue and a timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flts.batching import MicroBatcher, Overloaded, TimedOut


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
