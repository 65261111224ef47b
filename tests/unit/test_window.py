"""The DSN window: events of one message and action wait together, then go as one."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.bounce.notice import Action
from mailyard.bounce.window import Window
from mailyard.broker import PublishError
from mailyard.v1 import message_pb2 as pb


def ev(message: str, n: int, size: int = 0) -> pb.DeliveryEvent:
    return pb.DeliveryEvent(
        message_id=message, queue_id=f"{message}.{n}", original_content=b"x" * size
    )


class Flushes:
    """Records each flush; answers with ``errors`` (per event) or raises ``error``."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.error: BaseException | None = None
        self.per_event: dict[str, BaseException] = {}
        self.gate: asyncio.Event | None = None

    async def __call__(self, events: list[pb.DeliveryEvent]) -> list[BaseException | None]:
        self.groups.append([e.queue_id for e in events])
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [self.per_event.get(e.queue_id) for e in events]


FAILED = Action.FAILED


async def test_events_within_the_window_go_as_one():
    flushes = Flushes()
    window = Window(0.2, flushes, max_events=100)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def later(n: int) -> None:
        await asyncio.sleep(0.05 * n)
        await window.add(("M", FAILED), ev("M", n))

    await asyncio.gather(*(later(n) for n in range(3)))
    assert flushes.groups == [["M.0", "M.1", "M.2"]]
    # The window starts with the first event and does not move with later ones.
    assert 0.18 < loop.time() - started < 0.5


async def test_each_message_and_action_has_its_own_window():
    flushes = Flushes()
    window = Window(0.05, flushes, max_events=100)
    await asyncio.gather(
        window.add(("M", FAILED), ev("M", 1)),
        window.add(("N", FAILED), ev("N", 1)),
        window.add(("M", Action.DELAYED), ev("M", 2)),
        window.add(("M", FAILED), ev("M", 3)),
    )
    assert sorted(flushes.groups) == [["M.1", "M.3"], ["M.2"], ["N.1"]]


async def test_an_event_after_the_window_closed_starts_a_new_one():
    flushes = Flushes()
    window = Window(0.05, flushes, max_events=100)
    await window.add(("M", FAILED), ev("M", 1))
    await window.add(("M", FAILED), ev("M", 2))
    assert flushes.groups == [["M.1"], ["M.2"]]


async def test_no_window_means_at_once():
    flushes = Flushes()
    window = Window(0, flushes, max_events=100)
    await asyncio.wait_for(window.add(("M", FAILED), ev("M", 1)), 1)
    assert flushes.groups == [["M.1"]]


async def test_a_full_prefetch_sends_the_oldest_notice_early():
    """Waiting events hold the consumer's prefetch: it must never starve."""
    flushes = Flushes()
    window = Window(60, flushes, max_events=3)
    first = asyncio.create_task(window.add(("A", FAILED), ev("A", 1)))
    second = asyncio.create_task(window.add(("B", FAILED), ev("B", 1)))
    await asyncio.sleep(0.01)
    assert flushes.groups == []
    third = asyncio.create_task(window.add(("A", FAILED), ev("A", 2)))
    await asyncio.wait_for(asyncio.gather(first, third), 1)
    assert flushes.groups == [["A.1", "A.2"]]
    assert not second.done()
    assert window.waiting == 1
    window.close_all()
    await asyncio.wait_for(second, 1)


async def test_heavy_events_send_the_oldest_notice_early():
    """RET=FULL events carry whole messages: what waits is bounded in bytes too."""
    flushes = Flushes()
    window = Window(60, flushes, max_events=100, max_bytes=1000)
    first = asyncio.create_task(window.add(("A", FAILED), ev("A", 1, size=600)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(window.add(("B", FAILED), ev("B", 1, size=600)))
    await asyncio.wait_for(first, 1)
    assert flushes.groups == [["A.1"]]
    assert not second.done()  # under the budget again: B keeps its window
    window.close_all()
    await asyncio.wait_for(second, 1)


async def test_a_failed_store_fails_every_event_of_the_notice():
    """None is released: the broker hands them all back, and they meet again."""
    flushes = Flushes()
    flushes.error = PublishError("no confirm")
    window = Window(0.05, flushes, max_events=100)
    results = await asyncio.gather(
        window.add(("M", FAILED), ev("M", 1)),
        window.add(("M", FAILED), ev("M", 2)),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [PublishError, PublishError]


async def test_each_event_hears_its_own_outcome():
    flushes = Flushes()
    flushes.per_event["M.2"] = ValueError("this one would not plan")
    window = Window(0.05, flushes, max_events=100)
    results = await asyncio.gather(
        window.add(("M", FAILED), ev("M", 1)),
        window.add(("M", FAILED), ev("M", 2)),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], ValueError)


async def test_close_all_sends_what_waits_now_and_later_events_at_once():
    flushes = Flushes()
    window = Window(60, flushes, max_events=100)
    waiting = asyncio.create_task(window.add(("M", FAILED), ev("M", 1)))
    await asyncio.sleep(0.01)
    window.close_all()
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(window.add(("N", FAILED), ev("N", 1)), 1)
    assert flushes.groups == [["M.1"], ["N.1"]]


async def test_a_cancelled_handler_does_not_cancel_the_others_notice():
    flushes = Flushes()
    flushes.gate = asyncio.Event()
    window = Window(0.01, flushes, max_events=100)
    gone = asyncio.create_task(window.add(("M", FAILED), ev("M", 1)))
    stays = asyncio.create_task(window.add(("M", FAILED), ev("M", 2)))
    await asyncio.sleep(0.05)  # the flush is under way
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    flushes.gate.set()
    await asyncio.wait_for(stays, 1)
    assert flushes.groups == [["M.1", "M.2"]]
