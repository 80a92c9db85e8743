"""The per-function wait line: bounded, FIFO wake-ups, cleaned up on timeout and cancel."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import QueueFull, QueueTimeout
from gateway.queue import WaitQueue

LONG_S = 30.0  # a timeout no test reaches: wake-ups end these waits


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def waiting(queue: WaitQueue, n: int, timeout_s: float = LONG_S) -> list[asyncio.Task[None]]:
    """Start ``n`` waiters one after another, so their order in the queue is known."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(queue.wait(timeout_s)))
        await settle()
    assert len(queue) == n
    return tasks


async def cleanup(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_empty_queue_has_length_zero() -> None:
    assert len(WaitQueue(3)) == 0


@pytest.mark.parametrize("max_waiting", [0, 1, 3])
async def test_full_queue_raises_queue_full_at_once(max_waiting: int) -> None:
    queue = WaitQueue(max_waiting)
    tasks = await waiting(queue, max_waiting)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(QueueFull) as info:
        await queue.wait(LONG_S)
    assert loop.time() - started < 1.0
    assert info.value.retry_after_s == 1
    assert info.value.status == 429
    assert len(queue) == max_waiting  # the refused caller was never added
    await cleanup(tasks)


@pytest.mark.parametrize(("timeout_s", "retry_after_s"), [(0.01, 1), (0.02, 1)])
async def test_timeout_raises_queue_timeout_with_retry_after(timeout_s: float, retry_after_s: int) -> None:
    queue = WaitQueue(4)
    with pytest.raises(QueueTimeout) as info:
        await queue.wait(timeout_s)
    assert info.value.retry_after_s == retry_after_s
    assert info.value.status == 503
    assert len(queue) == 0


async def test_timeout_retry_after_rounds_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make any wait time out at once, to see retry_after for long timeouts without waiting them out.
    async def expire(fut: asyncio.Future[None], _timeout_s: float) -> None:
        raise TimeoutError

    monkeypatch.setattr("gateway.queue.asyncio.wait_for", expire)
    queue = WaitQueue(4)
    for timeout_s, expected in [(2.4, 2), (2.6, 3), (30.0, 30), (0.3, 1)]:
        with pytest.raises(QueueTimeout) as info:
            await queue.wait(timeout_s)
        assert info.value.retry_after_s == expected
        assert len(queue) == 0


async def test_wake_one_wakes_the_oldest_waiter_only() -> None:
    queue = WaitQueue(5)
    first, second, third = await waiting(queue, 3)
    queue.wake_one()
    await settle()
    assert first.done() and first.result() is None
    assert not second.done() and not third.done()
    assert len(queue) == 2
    queue.wake_one()
    await settle()
    assert second.done()
    assert not third.done()
    assert len(queue) == 1
    await cleanup([third])


async def test_wake_one_with_no_waiters_is_a_no_op() -> None:
    queue = WaitQueue(2)
    queue.wake_one()
    queue.wake_all()
    assert len(queue) == 0
    # a wake-up is not remembered: a later waiter still waits
    with pytest.raises(QueueTimeout):
        await queue.wait(0.01)


async def test_wake_all_wakes_everyone() -> None:
    queue = WaitQueue(5)
    tasks = await waiting(queue, 4)
    queue.wake_all()
    await settle()
    assert all(t.done() and t.result() is None for t in tasks)
    assert len(queue) == 0


async def test_timed_out_waiter_is_removed_and_others_keep_waiting() -> None:
    queue = WaitQueue(5)
    patient = await waiting(queue, 1)
    with pytest.raises(QueueTimeout):
        await queue.wait(0.01)
    assert len(queue) == 1
    queue.wake_one()  # goes to the waiter still there, not the one that left
    await settle()
    assert patient[0].done() and patient[0].result() is None
    assert len(queue) == 0


async def test_cancelled_waiter_is_removed() -> None:
    queue = WaitQueue(5)
    first, second = await waiting(queue, 2)
    first.cancel()
    await settle()
    assert first.cancelled()
    assert len(queue) == 1
    queue.wake_one()
    await settle()
    assert second.done() and second.result() is None
    assert len(queue) == 0


async def test_room_frees_after_timeout_and_cancel() -> None:
    queue = WaitQueue(1)
    with pytest.raises(QueueTimeout):
        await queue.wait(0.01)
    (task,) = await waiting(queue, 1)
    task.cancel()
    await settle()
    assert len(queue) == 0
    (task,) = await waiting(queue, 1)  # not QueueFull: both left the line
    queue.wake_all()
    await settle()
    assert task.result() is None


async def test_queue_is_reusable_after_wake_all() -> None:
    queue = WaitQueue(2)
    await waiting(queue, 2)
    queue.wake_all()
    await settle()
    tasks = await waiting(queue, 2)
    queue.wake_one()
    await settle()
    assert tasks[0].done() and not tasks[1].done()
    await cleanup(tasks)
    assert len(queue) == 0


async def test_wake_up_of_a_cancelled_waiter_passes_to_the_next() -> None:
    queue = WaitQueue(5)
    first, second = await waiting(queue, 2)
    queue.wake_one()  # a slot freed; the oldest waiter is chosen...
    first.cancel()  # ...but its caller goes away before it runs
    await asyncio.gather(first, return_exceptions=True)
    await settle()
    try:
        assert first.cancelled()
        assert second.done(), "the freed slot's wake-up was lost: the next waiter still waits"
    finally:
        await cleanup([first, second])
