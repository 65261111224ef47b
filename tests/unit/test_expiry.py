"""Waits of one length under one timer: each ends its own length after it began."""

from __future__ import annotations

import asyncio

from mailyard.delivery.expiry import Expiries


class Wait:
    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False


async def test_each_wait_ends_its_length_after_it_began_in_the_order_they_began():
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}
    began = loop.time()
    expiries: Expiries[Wait] = Expiries(
        0.1, lambda w: ended.setdefault(w.name, loop.time() - began), lambda w: w.done
    )
    expiries.add(Wait("first"))
    await asyncio.sleep(0.04)
    expiries.add(Wait("second"))
    await asyncio.sleep(0.2)
    assert list(ended) == ["first", "second"]
    assert 0.09 <= ended["first"] < 0.5
    assert 0.13 <= ended["second"] < 0.5  # 0.04 + 0.1: its own length, not the first's


async def test_a_wait_that_ended_otherwise_is_not_expired_and_the_next_still_is():
    loop = asyncio.get_running_loop()
    ended: list[str] = []
    expiries: Expiries[Wait] = Expiries(0.05, lambda w: ended.append(w.name), lambda w: w.done)
    served, later = Wait("served"), Wait("later")
    expiries.add(served)
    await asyncio.sleep(0.01)
    expiries.add(later)
    served.done = True
    await asyncio.sleep(0.12)
    assert ended == ["later"]
    assert len(expiries) == 0
    started = loop.time()
    expiries.add(Wait("after a quiet spell"))  # the timer is set again
    await asyncio.sleep(0.1)
    assert ended == ["later", "after a quiet spell"]
    assert loop.time() - started < 0.5


async def test_ended_waits_do_not_pile_up_behind_the_timer():
    expiries: Expiries[Wait] = Expiries(30, lambda w: None, lambda w: w.done)
    for n in range(1000):
        wait = Wait(str(n))
        expiries.add(wait)
        wait.done = True  # served at once, as most waits at the gate are
    assert len(expiries) == 1  # each add dropped the ended ones before it
    expiries.close()


async def test_after_close_nothing_expires():
    ended: list[str] = []
    expiries: Expiries[Wait] = Expiries(0.02, lambda w: ended.append(w.name), lambda w: w.done)
    expiries.add(Wait("never"))
    expiries.close()
    await asyncio.sleep(0.06)
    assert ended == []
