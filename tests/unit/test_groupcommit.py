"""GroupCommit: messages that arrive while a publish is in flight go out together."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.broker import PublishError
from mailyard.ingress.groupcommit import GroupCommit
from mailyard.v1 import message_pb2 as pb


def message(message_id: str, size: int = 100) -> pb.AcceptedMessage:
    return pb.AcceptedMessage(message_id=message_id, content=b"x" * size)


class Broker:
    """Records each publish and holds its confirm until the test releases it."""

    def __init__(self) -> None:
        self.published: list[list[str]] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def publish(self, messages: list[pb.AcceptedMessage]) -> None:
        self.published.append([m.message_id for m in messages])
        confirm = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        await confirm

    def confirm(self, index: int, error: Exception | None = None) -> None:
        if error is None:
            self.confirms[index].set_result(None)
        else:
            self.confirms[index].set_exception(error)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def group_commit(broker: Broker, **limits: int) -> GroupCommit:
    options = {"max_messages": 50, "max_bytes": 1 << 20, "max_in_flight": 1} | limits
    return GroupCommit(broker.publish, **options)


async def test_a_message_alone_is_published_at_once():
    broker = Broker()
    commit = group_commit(broker)
    store = asyncio.create_task(commit.store(message("m1")))
    await settle()
    assert broker.published == [["m1"]]
    assert not store.done()  # no 250 before the confirm
    broker.confirm(0)
    await asyncio.wait_for(store, 1)


async def test_messages_arriving_during_a_publish_go_out_together_after_it():
    broker = Broker()
    commit = group_commit(broker)
    first = asyncio.create_task(commit.store(message("m1")))
    await settle()
    waiting = [asyncio.create_task(commit.store(message(f"m{n}"))) for n in (2, 3, 4)]
    await settle()
    assert broker.published == [["m1"]]
    broker.confirm(0)
    await asyncio.wait_for(first, 1)
    await settle()
    assert broker.published == [["m1"], ["m2", "m3", "m4"]]
    assert not any(task.done() for task in waiting)
    broker.confirm(1)
    await asyncio.wait_for(asyncio.gather(*waiting), 1)


async def test_batches_respect_max_messages_and_max_bytes():
    broker = Broker()
    commit = group_commit(broker, max_messages=2, max_bytes=1000, max_in_flight=1)
    tasks = [asyncio.create_task(commit.store(message("m0")))]
    await settle()
    sizes = {"m1": 100, "m2": 100, "m3": 100, "big": 5000, "m5": 100}
    tasks += [asyncio.create_task(commit.store(message(i, size))) for i, size in sizes.items()]
    await settle()
    for index in range(4):
        broker.confirm(index)
        await settle()
    assert broker.published == [["m0"], ["m1", "m2"], ["m3"], ["big"], ["m5"]]


async def test_a_failed_publish_fails_every_message_it_carried_and_only_those():
    broker = Broker()
    commit = group_commit(broker)
    first = asyncio.create_task(commit.store(message("m1")))
    await settle()
    batch = [asyncio.create_task(commit.store(message(f"m{n}"))) for n in (2, 3)]
    await settle()
    broker.confirm(0, PublishError("nacked"))
    with pytest.raises(PublishError, match="nacked"):
        await asyncio.wait_for(first, 1)
    await settle()
    broker.confirm(1)
    await asyncio.wait_for(asyncio.gather(*batch), 1)


async def test_an_unexpected_error_reaches_the_callers_as_a_publish_error():
    async def broken(messages: list[pb.AcceptedMessage]) -> None:
        raise RuntimeError("bug")

    commit = GroupCommit(broken, max_messages=50, max_bytes=1 << 20, max_in_flight=1)
    with pytest.raises(PublishError, match="RuntimeError"):
        await commit.store(message("m1"))


async def test_a_client_that_hangs_up_does_not_cancel_the_others_publish():
    broker = Broker()
    commit = group_commit(broker)
    first = asyncio.create_task(commit.store(message("m1")))
    await settle()
    leaving = asyncio.create_task(commit.store(message("m2")))
    staying = asyncio.create_task(commit.store(message("m3")))
    await settle()
    broker.confirm(0)
    await settle()
    leaving.cancel()
    await settle()
    assert broker.published == [["m1"], ["m2", "m3"]]
    broker.confirm(1)
    await asyncio.wait_for(asyncio.gather(first, staying), 1)


async def test_up_to_max_in_flight_publishes_before_messages_wait():
    broker = Broker()
    commit = group_commit(broker, max_in_flight=2)
    tasks = [asyncio.create_task(commit.store(message(f"m{n}"))) for n in range(1, 5)]
    await settle()
    assert broker.published == [["m1"], ["m2"]]
    broker.confirm(1)
    await settle()
    assert broker.published == [["m1"], ["m2"], ["m3", "m4"]]
    broker.confirm(0)
    broker.confirm(2)
    await commit.drain()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)


async def test_batch_size_counts_the_envelope_not_only_the_body():
    broker = Broker()
    commit = group_commit(broker, max_bytes=1024)
    tasks = [asyncio.create_task(commit.store(message("m0")))]
    await settle()
    crowded = message("crowded", size=10)
    crowded.recipients.extend(f"recipient{n}@example.com" for n in range(100))
    tasks += [
        asyncio.create_task(commit.store(crowded)),
        asyncio.create_task(commit.store(message("m2", size=10))),
    ]
    await settle()
    broker.confirm(0)
    await settle()
    broker.confirm(1)
    await settle()
    assert broker.published == [["m0"], ["crowded"], ["m2"]]
    broker.confirm(2)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
