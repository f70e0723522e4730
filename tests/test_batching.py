from __future__ import annotations

import asyncio

import pytest

from common.batching import BackgroundBatcher, Batcher

pytestmark = pytest.mark.unit


async def test_concurrent_callers_share_batches_and_get_their_own_result() -> None:
    sizes: list[int] = []

    async def write(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        await asyncio.sleep(0.01)
        return [item * 2 for item in batch]

    batcher: Batcher[int, int] = Batcher(write, max_batch=40)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(100)))

    assert results == [n * 2 for n in range(100)]
    assert sizes == [40, 40, 20]


async def test_a_lone_caller_is_written_at_once() -> None:
    sizes: list[int] = []

    async def write(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        return batch

    batcher: Batcher[int, int] = Batcher(write, max_batch=40)
    assert await batcher.submit(7) == 7
    assert await batcher.submit(8) == 8
    assert sizes == [1, 1]  # no timer holds an item back waiting for company


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_goes_on() -> None:
    calls = 0

    async def write(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return batch

    batcher: Batcher[int, int] = Batcher(write, max_batch=10)
    with pytest.raises(ConnectionError):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2


async def test_a_batch_refused_for_one_item_is_written_item_by_item() -> None:
    batches: list[list[int]] = []

    async def write(batch: list[int]) -> list[int]:
        batches.append(batch)
        await asyncio.sleep(0)
        if 13 in batch:
            raise LookupError("13 refused")
        if -1 in batch:
            raise ConnectionError("down")
        return [item * 2 for item in batch]

    batcher: Batcher[int, int] = Batcher(write, max_batch=10, split_on=(LookupError,))
    results = await asyncio.gather(
        *(batcher.submit(n) for n in range(10, 20)), return_exceptions=True
    )

    assert [type(r).__name__ if isinstance(r, Exception) else r for r in results] == [
        *(n * 2 for n in range(10, 13)),
        "LookupError",
        *(n * 2 for n in range(14, 20)),
    ]
    assert batches == [list(range(10, 20)), *([n] for n in range(10, 20))]
    # An error outside split_on still fails the whole batch at once.
    batches.clear()
    results = await asyncio.gather(*(batcher.submit(n) for n in (1, -1, 2)), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ConnectionError"] * 3
    assert batches == [[1, -1, 2]]


async def test_background_batcher_writes_everything_and_survives_errors() -> None:
    written: list[int] = []

    async def write(batch: list[int]) -> None:
        if 13 in batch:
            raise ValueError("unlucky")
        written.extend(batch)

    batcher: BackgroundBatcher[int] = BackgroundBatcher(write, max_batch=5, name="test")
    for n in range(20):
        batcher.add(n)
    await batcher.flush()
    assert 0 in written
    assert 13 not in written
    batcher.add(99)
    await batcher.flush()
    assert written[-1] == 99


async def test_a_lingering_background_batcher_gathers_items_added_meanwhile() -> None:
    batches: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        batches.append(batch)

    batcher: BackgroundBatcher[int] = BackgroundBatcher(
        write, max_batch=100, name="test", linger_seconds=0.05
    )
    batcher.add(1)
    for _ in range(3):  # the writer task starts (without a linger it would write [1] now)
        await asyncio.sleep(0)
    batcher.add(2)
    await batcher.flush()
    assert batches == [[1, 2]]

    full: BackgroundBatcher[int] = BackgroundBatcher(
        write, max_batch=3, name="test", linger_seconds=60
    )
    for n in range(3):
        full.add(n)
    async with asyncio.timeout(5):  # a full batch does not wait out the linger
        await full.flush()
    assert batches[-1] == [0, 1, 2]


class Expired(Exception):
    pass


async def test_no_caller_waits_longer_than_the_timeout_behind_a_stuck_batch() -> None:
    writing, stuck = asyncio.Event(), asyncio.Event()
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        if items[0] < 0:
            writing.set()
            await stuck.wait()  # the first batch never returns
        return items

    batcher: Batcher[int, int] = Batcher(write, max_batch=10, timeout=0.2, expired=Expired)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.create_task(batcher.submit(-1))
    await writing.wait()
    behind = asyncio.create_task(batcher.submit(2))  # queued behind the stuck batch

    for waiting in (first, behind):
        with pytest.raises(Expired):
            await waiting
    assert loop.time() - started < 0.2 + 0.15  # not 0.2 for the first, then 0.2 for the next
    assert batches == [[-1]]  # the one behind was never written: its time was up
    assert await batcher.submit(3) == 3  # and the next caller is served
