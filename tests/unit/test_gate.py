"""The destination gate: connections, rate, waiting room, priorities, pauses (no sockets)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailyard.broker.members import MemberTable, SoleMember
from mailyard.config import ShapingConfig
from mailyard.delivery.backoff import BackoffPolicy, ThrottlingRules
from mailyard.delivery.gate import Gate, Held, HeldReason, Permit
from mailyard.delivery.shaping import Destination, Limits, ShapingTable
from mailyard.reply import Reply
from mailyard.v1 import members_pb2 as mpb

POLICY = BackoffPolicy(recovery_interval=30, pause_after=3, pause=300)
THROTTLE = Reply(421, "4.7.0", "try again later")
OK = Reply(250, "2.0.0", "ok")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Members:
    def __init__(self, count: int, rank: int) -> None:
        self.count, self.rank = count, rank
        self.callbacks: list = []

    def on_change(self, callback) -> None:
        self.callbacks.append(callback)


def gate(*, members=None, clock=None, max_wait: float = 0.2) -> Gate:
    return Gate(
        ShapingTable(ShapingConfig(), shipped={}),
        ThrottlingRules(),
        POLICY,
        members or SoleMember(),
        max_wait=max_wait,
        named=frozenset({"slow.example"}),
        clock=clock or Clock(),
    )


def dest(connections: int | None = 2, rate: float | None = None) -> Destination:
    return Destination("slow.example", Limits(connections, rate, 100))


async def test_at_most_the_share_of_connections_go_at_once_and_the_next_waits():
    shaping = gate(max_wait=5)
    first, second = await shaping.enter(dest()), await shaping.enter(dest())
    assert isinstance(first, Permit)
    assert isinstance(second, Permit)
    third = asyncio.create_task(shaping.enter(dest()))
    await asyncio.sleep(0.01)
    assert not third.done()
    shaping.leave(first, [OK], sent=True)
    assert isinstance(await third, Permit)


async def test_a_waiter_that_gets_no_connection_within_max_wait_is_held_busy():
    shaping = gate(max_wait=0.05)
    await shaping.enter(dest(1))
    assert await shaping.enter(dest(1)) == Held(HeldReason.BUSY)


async def test_each_waiter_gets_all_of_max_wait_from_when_it_came():
    # One timer serves a destination's waiters: the later one must not be
    # held at the first one's time, nor forgotten once the first is served.
    shaping = gate(max_wait=0.15, clock=time.monotonic)
    loop = asyncio.get_running_loop()
    held = await shaping.enter(dest(1))
    assert isinstance(held, Permit)
    began = loop.time()
    first = asyncio.create_task(shaping.enter(dest(1)))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(shaping.enter(dest(1)))
    second_ended: list[float] = []
    second.add_done_callback(lambda _: second_ended.append(loop.time()))
    await asyncio.sleep(0.02)
    shaping.leave(held, [OK])  # the first gets the connection and keeps it
    granted = await first
    assert isinstance(granted, Permit)
    assert await asyncio.wait_for(second, 2) == Held(HeldReason.BUSY)
    assert 0.19 <= second_ended[0] - began < 0.5  # 0.05 + 0.15, not 0.15


async def test_a_waiter_cancelled_while_waiting_leaves_the_others_timed():
    shaping = gate(max_wait=0.1, clock=time.monotonic)
    await shaping.enter(dest(1))
    gone = asyncio.create_task(shaping.enter(dest(1)))
    await asyncio.sleep(0.01)
    later = asyncio.create_task(shaping.enter(dest(1)))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await asyncio.wait_for(later, 1) == Held(HeldReason.BUSY)


async def test_transactional_waiters_go_before_bulk_ones():
    shaping = gate(max_wait=5)
    held = await shaping.enter(dest(1))
    assert isinstance(held, Permit)
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        permit = await shaping.enter(dest(1), priority=priority)
        assert isinstance(permit, Permit)
        order.append(name)
        shaping.leave(permit, [OK])

    bulk = asyncio.create_task(wait("bulk", 1))
    await asyncio.sleep(0)
    transactional = asyncio.create_task(wait("transactional", 0))
    await asyncio.sleep(0.01)
    shaping.leave(held, [OK])
    await asyncio.gather(bulk, transactional)
    assert order == ["transactional", "bulk"]


async def test_the_waiting_room_holds_only_what_the_destination_takes_within_max_wait():
    clock = Clock()
    shaping = gate(clock=clock, max_wait=1.0)
    destination = dest(1)
    # One connection, 0.3 s a transaction: a second is enough for 3.3 of them.
    for _ in range(30):
        permit = await shaping.enter(destination)
        assert isinstance(permit, Permit)
        clock.now += 0.3
        shaping.leave(permit, [OK], sent=True)
    busy = await shaping.enter(destination)
    assert isinstance(busy, Permit)
    waiters = [asyncio.create_task(shaping.enter(destination)) for _ in range(6)]
    await asyncio.sleep(0.01)
    done = [w for w in waiters if w.done()]
    assert len(done) == 2  # the room held four; the rest were turned away at once
    assert all(w.result() == Held(HeldReason.BUSY) for w in done)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_the_rate_lets_jobs_through_no_faster_than_the_share():
    shaping = gate(max_wait=5, members=Members(2, 0), clock=time.monotonic)
    destination = dest(None, rate=40.0)  # 20 msg/s for this member of two
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(11):
        permit = await shaping.enter(destination)
        assert isinstance(permit, Permit)
        shaping.leave(permit, [OK])
    elapsed = loop.time() - started
    # Two tokens in the bucket at first (a tenth of a second's worth), then one per 50 ms.
    assert 0.40 <= elapsed < 0.7


async def test_a_process_whose_share_is_zero_holds_nothing():
    shaping = gate(members=Members(3, 2))
    assert await shaping.enter(dest(2)) == Held(HeldReason.NO_SHARE)
    ranked_first = gate(members=Members(3, 0))
    assert isinstance(await ranked_first.enter(dest(2)), Permit)


async def test_throttling_replies_halve_the_connections_and_a_run_pauses():
    clock = Clock()
    shaping = gate(clock=clock, max_wait=0.01)
    destination = dest(4)
    permits = [await shaping.enter(destination) for _ in range(4)]
    assert all(isinstance(p, Permit) for p in permits)
    for permit in permits:
        shaping.leave(permit, [THROTTLE], sent=True)  # one burst: halved once
    [state] = shaping.report()
    assert (state.max_connections, state.backoff_factor) == (2, 0.5)
    for _ in range(2):
        clock.now += 10
        permit = await shaping.enter(destination)
        assert isinstance(permit, Permit)
        shaping.leave(permit, [THROTTLE], sent=True)
    # Three throttling signals in a row with no delivery: paused, and it says for how long.
    held = await shaping.enter(destination)
    assert isinstance(held, Held)
    assert held.reason is HeldReason.PAUSED
    assert held.pause_left == pytest.approx(300)
    clock.now += 301
    assert isinstance(await shaping.enter(destination), Permit)


async def test_waiters_go_back_at_once_when_a_pause_begins():
    clock = Clock()
    shaping = gate(clock=clock, max_wait=5)
    destination = dest(1)
    first = await shaping.enter(destination)
    assert isinstance(first, Permit)
    waiter = asyncio.create_task(shaping.enter(destination))
    await asyncio.sleep(0.01)
    shaping.leave(first, [Reply(421, "4.7.0", "[TSS04] temporarily deferred")], sent=True)
    held = await asyncio.wait_for(waiter, 1)
    assert isinstance(held, Held)
    assert held.reason is HeldReason.PAUSED


async def test_sessions_count_towards_connections_and_idle_ones_make_room():
    shaping = gate()
    permit = await shaping.enter(dest(2))
    assert isinstance(permit, Permit)
    shaping.session_opened(permit.key)
    shaping.session_opened(permit.key)  # one in use, one idle
    assert shaping.must_make_room(permit.key)
    assert shaping.may_keep_idle(permit.key)
    shaping.session_opened(permit.key)
    assert not shaping.may_keep_idle(permit.key)
    trimmed: list[tuple[str, int]] = []
    shaping.trim = lambda key, keep: trimmed.append((key, keep))
    shaping.leave(permit, [THROTTLE], sent=True)  # halved to 1: the extra sessions go
    assert trimmed == [("slow.example", 1)]


async def test_a_waiter_cancelled_by_its_deadline_gives_back_what_it_was_granted():
    shaping = gate(max_wait=5)
    first = await shaping.enter(dest(1))
    assert isinstance(first, Permit)
    waiter = asyncio.create_task(shaping.enter(dest(1)))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    shaping.leave(first, [OK])
    # Nobody holds a permit now: two can go (none was lost to the cancelled waiter).
    assert isinstance(await shaping.enter(dest(1)), Permit)


async def test_a_new_member_shrinks_the_share_and_idle_sessions_are_trimmed():
    members = Members(1, 0)
    shaping = gate(members=members)
    permit = await shaping.enter(dest(4))
    assert isinstance(permit, Permit)
    for _ in range(4):
        shaping.session_opened(permit.key)
    trimmed: list[tuple[str, int]] = []
    shaping.trim = lambda key, keep: trimmed.append((key, keep))
    members.count = 2
    for callback in members.callbacks:
        callback()
    assert trimmed == [("slow.example", 2)]


# --- the member table ----------------------------------------------------------


def beat(member: str, *, leaving: bool = False) -> mpb.Heartbeat:
    return mpb.Heartbeat(member=member, group="delivery", leaving=leaving)


def test_members_are_counted_in_ranked_by_id_and_counted_out_when_silent():
    table = MemberTable("b", interval=1.0, now=0.0)
    assert (table.count, table.rank) == (1, 0)
    assert table.heard(beat("a"), 0.1)
    assert table.heard(beat("c"), 0.2)
    assert (table.count, table.rank) == (3, 1)
    for moment in (1.0, 2.0, 3.0):
        table.heard(beat("b"), moment)
        table.heard(beat("a"), moment)
    assert table.expire(3.3)  # c silent for over three beats
    assert (table.count, table.rank) == (2, 1)


def test_a_member_that_says_it_leaves_is_counted_out_at_once():
    table = MemberTable("b", interval=1.0, now=0.0)
    table.heard(beat("a"), 0.1)
    assert table.heard(beat("a", leaving=True), 0.2)
    assert table.count == 1


def test_a_member_cut_off_from_the_others_keeps_counting_them():
    table = MemberTable("b", interval=1.0, now=0.0)
    table.heard(beat("a"), 0.1)
    # Nothing heard, not even our own beats: we are the one cut off.
    assert not table.expire(10.0)
    assert table.count == 2


async def test_waiters_that_time_out_or_are_cancelled_leave_the_waiting_room():
    shaping = gate(max_wait=0.2)  # room for 4: 0.2 s at the first guess of 0.05 s a transaction
    first = await shaping.enter(dest(1))
    assert isinstance(first, Permit)
    cancelled = asyncio.create_task(shaping.enter(dest(1)))
    timed_out = asyncio.create_task(shaping.enter(dest(1)))
    await asyncio.sleep(0.01)
    assert [state.waiting for state in shaping.report()] == [2]
    cancelled.cancel()
    assert await timed_out == Held(HeldReason.BUSY)
    await asyncio.gather(cancelled, return_exceptions=True)
    assert [state.waiting for state in shaping.report()] == [0]
