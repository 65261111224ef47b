"""Job slots and destination slots under asyncio: who waits, who goes first, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.delivery.service import lane_prefetch
from mailyard.delivery.slots import JobSlots

WEIGHTS = {"transactional": 10, "bulk": 1}


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_transactional_job_gets_the_next_slot_before_waiting_bulk_jobs():
    slots = JobSlots(1, WEIGHTS)
    await slots.acquire("bulk")
    order: list[str] = []

    async def job(name: str) -> None:
        await slots.acquire(name)
        order.append(name)

    waiting = [asyncio.create_task(job("bulk")) for _ in range(5)]
    await settle()
    urgent = asyncio.create_task(job("transactional"))
    await settle()
    slots.release()
    await settle()
    assert order == ["transactional"]
    assert not urgent.cancelled()
    for _ in range(5):
        slots.release()
        await settle()
    assert order == ["transactional"] + ["bulk"] * 5
    await asyncio.gather(*waiting, urgent)


async def test_a_cancelled_waiter_leaves_the_line():
    slots = JobSlots(1, WEIGHTS)
    await slots.acquire("transactional")
    gone = asyncio.create_task(slots.acquire("transactional"))
    stays = asyncio.create_task(slots.acquire("bulk"))
    await settle()
    gone.cancel()
    await settle()
    slots.release()
    await asyncio.wait_for(stays, 1)
    assert gone.cancelled()
    assert slots.free == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on():
    slots = JobSlots(1, WEIGHTS)
    await slots.acquire("transactional")
    first = asyncio.create_task(slots.acquire("transactional"))
    second = asyncio.create_task(slots.acquire("transactional"))
    await settle()
    slots.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    await settle()
    assert first.cancelled()
    await asyncio.wait_for(second, 1)  # the slot went on, not lost
    slots.release()
    assert slots.free == 1


@pytest.mark.parametrize(
    ("concurrency", "weights", "expected"),
    [
        (100, {"transactional": 10, "bulk": 1}, {"transactional": 100, "bulk": 10}),
        (100, {"transactional": 1, "bulk": 1}, {"transactional": 100, "bulk": 50}),
        (
            3,
            {"transactional": 10, "bulk": 1, "news": 1},
            {"transactional": 3, "bulk": 1, "news": 1},
        ),
    ],
)
def test_each_lane_prefetches_its_share(concurrency, weights, expected):
    assert {lane: lane_prefetch(concurrency, weights, lane) for lane in weights} == expected
