"""How the record of finished jobs groups its keys into stream appends (no broker needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mailyard.broker.rabbitmq.streams import FinishedJobs


class HeldLog:
    """Stands in for the stream: appends wait until the test confirms them."""

    def __init__(self) -> None:
        self.appends: list[list[str]] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def append(self, records: Sequence[bytes]) -> None:
        [record] = records
        self.appends.append(record.decode().split("\n"))
        confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        await confirm


def test_keys_recorded_within_the_linger_go_out_as_one_append():
    async def run() -> None:
        log = HeldLog()
        jobs = FinishedJobs(log, linger=0.01)  # type: ignore[arg-type]
        first = [jobs.record(f"k{n}") for n in range(3)]
        await asyncio.sleep(0)
        assert log.appends == []  # lingering
        await asyncio.sleep(0.02)
        assert log.appends == [["k0", "k1", "k2"]]
        assert not any(f.done() for f in first)  # not before the confirm
        log.confirms[0].set_result(None)
        await asyncio.gather(*first)

    asyncio.run(run())


def test_max_keys_sends_at_once_and_appends_wait_for_a_free_slot():
    async def run() -> None:
        log = HeldLog()
        jobs = FinishedJobs(log, linger=0.05, max_keys=2, max_in_flight=1)  # type: ignore[arg-type]
        a = [jobs.record("a1"), jobs.record("a2")]  # full: no linger
        await asyncio.sleep(0)
        assert log.appends == [["a1", "a2"]]
        b = [jobs.record("b1"), jobs.record("b2"), jobs.record("b3")]
        await asyncio.sleep(0)
        assert len(log.appends) == 1  # one append in flight at most
        log.confirms[0].set_result(None)
        await asyncio.gather(*a)
        await asyncio.sleep(0.005)  # the confirmed append's task ends, the next one starts
        assert log.appends[1] == ["b1", "b2"]  # full, and waiting for the slot
        log.confirms[1].set_result(None)
        await asyncio.sleep(0.005)
        assert len(log.appends) == 2  # b3 alone lingers, slot or not
        await asyncio.sleep(0.06)
        assert log.appends[2] == ["b3"]
        log.confirms[2].set_result(None)
        await asyncio.gather(*b)

    asyncio.run(run())


def test_a_confirm_does_not_cut_the_next_groups_linger_short():
    """Under load a confirm comes every few milliseconds: were the keys that
    came meanwhile sent at each one, appends would be many and small."""

    async def run() -> None:
        log = HeldLog()
        jobs = FinishedJobs(log, linger=0.05)  # type: ignore[arg-type]
        first = jobs.record("k1")
        await asyncio.sleep(0.07)
        assert log.appends == [["k1"]]
        second = [jobs.record("k2"), jobs.record("k3")]
        log.confirms[0].set_result(None)
        await first
        await asyncio.sleep(0.01)
        assert log.appends == [["k1"]]  # k2 and k3 linger on
        await asyncio.sleep(0.06)
        assert log.appends == [["k1"], ["k2", "k3"]]
        log.confirms[1].set_result(None)
        await asyncio.gather(*second)

    asyncio.run(run())


def test_a_failed_append_fails_its_keys_only():
    async def run() -> None:
        log = HeldLog()
        jobs = FinishedJobs(log, linger=0.001)  # type: ignore[arg-type]
        lost = jobs.record("lost")
        await asyncio.sleep(0.01)
        log.confirms[0].set_exception(ConnectionError("channel closed"))
        kept = jobs.record("kept")
        await asyncio.sleep(0.01)
        log.confirms[1].set_result(None)
        await kept
        assert isinstance(lost.exception(), ConnectionError)

    asyncio.run(run())


def test_flush_sends_what_lingers_and_waits_for_every_confirm():
    async def run() -> None:
        log = HeldLog()
        jobs = FinishedJobs(log, linger=10, max_keys=2, max_in_flight=1)  # type: ignore[arg-type]
        keys = [jobs.record(f"k{n}") for n in range(3)]  # k0+k1 sent (full), k2 lingers
        flushing = asyncio.ensure_future(jobs.flush())
        await asyncio.sleep(0.01)
        assert log.appends == [["k0", "k1"]]  # k2 waits for the slot, not the linger
        log.confirms[0].set_result(None)
        await asyncio.sleep(0.01)
        assert log.appends[1] == ["k2"]
        assert not flushing.done()  # until the last confirm
        log.confirms[1].set_result(None)
        await asyncio.wait_for(flushing, 1)
        assert all(k.done() for k in keys)

    asyncio.run(run())


def test_flush_waits_for_a_confirm_that_does_not_come():
    async def run() -> None:
        log = HeldLog()
        jobs = FinishedJobs(log, linger=10)  # type: ignore[arg-type]
        pending = jobs.record("k")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(jobs.flush(), 0.02)  # the caller bounds it
        assert log.appends == [["k"]]
        assert not pending.done()

    asyncio.run(run())
