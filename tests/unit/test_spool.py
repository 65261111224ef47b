"""The embedded spool on a real SQLite file: group commit, recovery, the ladder, the lock."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailyard.broker.embedded.adapter import EmbeddedBroker, OutsideSpoolLog
from mailyard.broker.embedded.spool import (
    NewItem,
    Spool,
    SpoolError,
    Write,
    append_log_outside,
    is_locked,
    read_depths,
    read_log_outside,
)
from mailyard.broker.port import Publish
from mailyard.broker.topology import QueueName, Topology
from mailyard.v1 import message_pb2 as pb


def item(queue: str = "delivery", body: bytes = b"x", **fields: object) -> NewItem:
    return NewItem(queue, "t", "id", {"h": "v"}, body, **fields)  # type: ignore[arg-type]


async def opened(path: Path) -> Spool:
    spool = Spool(path)
    await spool.open()
    return spool


async def test_written_items_are_taken_in_order_and_counted_as_delivered(tmp_path):
    spool = await opened(tmp_path)
    ids = await spool.write(Write(inserts=[item(body=b"1"), item(body=b"2")]))
    taken = await spool.take("delivery", 10)
    assert [t.id for t in taken] == ids
    assert [(t.body, t.headers, t.deliveries) for t in taken] == [
        (b"1", {"h": "v"}, 0),
        (b"2", {"h": "v"}, 0),
    ]
    assert await spool.take("delivery", 10) == []  # taken: not handed out twice
    await spool.close()


async def test_writes_that_arrive_together_share_one_commit(tmp_path, monkeypatch):
    spool = await opened(tmp_path)
    commits: list[int] = []
    real = spool._commit

    def counting(writes: list[Write]) -> list[list[int]]:
        commits.append(len(writes))
        return real(writes)

    monkeypatch.setattr(spool, "_commit", counting)
    await asyncio.gather(*(spool.write(Write(inserts=[item()])) for _ in range(20)))
    assert sum(commits) == 20
    assert len(commits) <= 2  # the first goes alone, the rest wait and go together
    await spool.close()


async def test_a_release_deletes_the_input_with_its_outputs_in_one_transaction(tmp_path):
    spool = await opened(tmp_path)
    [input_id] = await spool.write(Write(inserts=[item("inbound")]))
    [taken] = await spool.take("inbound", 1)
    await spool.write(Write(inserts=[item("delivery")], deletes=[taken.id]))
    await spool.close()
    assert read_depths(tmp_path) == {"delivery": 1}
    assert input_id == taken.id


async def test_after_a_crash_everything_unreleased_comes_back_redelivered(tmp_path):
    spool = await opened(tmp_path)
    await spool.write(Write(inserts=[item(body=b"kept")]))
    [taken] = await spool.take("delivery", 1)
    assert taken.deliveries == 0
    # A crash: the process goes without releasing (the lock goes with it).
    spool._close_file()
    again = await opened(tmp_path)
    [back] = await again.take("delivery", 1)
    assert (back.id, back.body, back.deliveries) == (taken.id, b"kept", 1)
    await again.close()


async def test_an_item_on_the_ladder_waits_for_its_time(tmp_path):
    spool = await opened(tmp_path)
    soon = datetime.now(UTC).timestamp() + 0.3
    await spool.write(Write(inserts=[item(available_at=soon, rung="300ms")]))
    assert spool.depths()["retry.300ms"] == (1, 0)
    assert await spool.take("delivery", 1) == []
    ready = spool.attach("delivery")
    await asyncio.wait_for(ready.wait(), timeout=3)
    assert len(await spool.take("delivery", 1)) == 1
    await spool.close()


async def test_one_process_owns_a_spool(tmp_path):
    first = await opened(tmp_path)
    assert is_locked(tmp_path)
    with pytest.raises(SpoolError, match="in use by another process"):
        await Spool(tmp_path).open()
    await first.close()
    assert not is_locked(tmp_path)


async def test_the_file_is_sqlite_in_wal_mode(tmp_path):
    spool = await opened(tmp_path)
    await spool.close()
    db = sqlite3.connect(tmp_path / "mailyard.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_finished_records_are_found_by_key(tmp_path):
    spool = await opened(tmp_path)
    await spool.write(Write(finished=["a/0", "b/0"]))
    assert await spool.finished(["a/0", "c/0"]) == {"a/0"}
    await spool.close()


def topology() -> Topology:
    return Topology("t", (timedelta(minutes=5),), delivery_limit=5)


def job() -> pb.DeliveryJob:
    return pb.DeliveryJob(queue_id="01A.1", message_id="01A", domain="x.test", recipients=["a@x"])


async def test_the_adapter_shares_one_spool_between_the_services_of_a_process(tmp_path):
    spool = Spool(tmp_path)
    queue = EmbeddedBroker(spool, topology(), service="queue")
    delivery = EmbeddedBroker(spool, topology(), service="delivery")
    await asyncio.gather(queue.connect(), delivery.connect())
    await queue.store([Publish(QueueName.DELIVERY, (job(),), delay=timedelta(minutes=5))])
    states = await delivery.queue_states()
    assert states["retry.5m"].messages == 1
    assert states["delivery"].messages == 0
    await queue.close()
    assert delivery.connected  # the spool stays open for the other user
    await delivery.close()
    assert not is_locked(tmp_path)


async def test_the_log_replays_in_order_and_follows(tmp_path):
    broker = EmbeddedBroker(Spool(tmp_path), topology(), service="queue")
    await broker.connect()
    log = broker.log("suppression")
    await log.append([b"one", b"two"])
    assert [e.data async for e in log.read()] == [b"one", b"two"]

    async def third() -> bytes:
        entries = log.read(follow=True)
        seen = [await anext(entries) for _ in range(3)]
        return seen[-1].data

    follower = asyncio.create_task(third())
    await asyncio.sleep(0.05)
    await log.append([b"three"])
    assert await asyncio.wait_for(follower, timeout=3) == b"three"
    await broker.close()


async def test_another_process_appends_to_a_log_the_owner_follows(tmp_path):
    """`mailyard suppression add` while `mailyard all` owns the spool: SQLite's own lock."""
    broker = EmbeddedBroker(Spool(tmp_path), topology(), service="queue")
    await broker.connect()
    log = broker.log("suppression")
    await log.append([b"own"])

    async def second() -> bytes:
        entries = log.read(follow=True)
        seen = [await anext(entries) for _ in range(2)]
        return seen[-1].data

    follower = asyncio.create_task(second())
    await asyncio.sleep(0.05)
    # Another process: a connection of its own, the owner's lock notwithstanding.
    await asyncio.to_thread(append_log_outside, tmp_path, "suppression", [b"from outside"])
    assert await asyncio.wait_for(follower, timeout=5) == b"from outside"  # polled, within 1 s
    # The owner writes on as before, and an outside reader sees everything.
    await log.append([b"own again"])
    await broker.store([Publish(QueueName.INBOUND, (pb.AcceptedMessage(message_id="m"),))])
    outside = OutsideSpoolLog(tmp_path, "suppression")
    assert [e.data async for e in outside.read()] == [b"own", b"from outside", b"own again"]
    await broker.close()


async def test_an_outside_append_makes_a_spool_the_owner_can_open(tmp_path):
    directory = tmp_path / "new"
    at = append_log_outside(directory, "suppression", [b"first"])
    assert read_log_outside(directory, "suppression", at + 1) == []
    assert read_log_outside(directory, "suppression", 0) == [(at, b"first")]
    broker = EmbeddedBroker(Spool(directory), topology(), service="queue")
    await broker.connect()
    assert [e.data async for e in broker.log("suppression").read()] == [b"first"]
    await broker.close()


def test_reading_a_spool_that_is_not_there_says_so(tmp_path):
    with pytest.raises(SpoolError, match="no spool at"):
        read_log_outside(tmp_path / "none", "suppression", 0)
