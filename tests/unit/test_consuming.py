"""The consumer core, through the in-memory port: what becomes of each message."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.broker import Publish, PublishError, QueueName, Work
from mailyard.broker.memory import MemoryBroker
from mailyard.broker.topology import Topology
from mailyard.v1 import message_pb2 as pb

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def job(n: int, recipient: str | None = None) -> pb.DeliveryJob:
    return pb.DeliveryJob(
        message_id=f"01M{n}",
        queue_id=f"01M{n}.1",
        domain="example.net",
        mail_from="a@example.com",
        recipients=[recipient or f"r{n}@example.net"],
        content=b"Subject: x\r\n\r\nbody\r\n",
        received_at=wire.timestamp(NOW),
        expires_at=wire.timestamp(NOW + timedelta(days=1)),
    )


class Recorder:
    """A handler that notes what it was given and returns one output per item."""

    def __init__(self, fail_on: set[str] | None = None, complete: bool = False) -> None:
        self.seen: list[list[str]] = []
        self.fail_on = fail_on or set()
        self.complete = complete

    async def __call__(self, work: Work[pb.DeliveryJob]) -> list[Publish]:
        self.seen.append([j.queue_id for j in work.items])
        outputs = []
        for item in work.items:
            if item.queue_id in self.fail_on:
                raise RuntimeError(f"cannot handle {item.queue_id}")
            output = Publish(QueueName.DEFERRED, (item,))
            if self.complete:
                await work.complete(item, [output])
            else:
                outputs.append(output)
        return outputs


def consumer(handler: Recorder, limit: int = 5) -> MemoryBroker:
    broker = MemoryBroker(Topology("t", (), delivery_limit=limit))
    broker.consumer(QueueName.DELIVERY, pb.DeliveryJob, handler, prefetch=1)
    return broker


async def test_outputs_are_stored_then_the_input_released():
    handler = Recorder()
    broker = consumer(handler)
    settled = await broker.deliver(QueueName.DELIVERY, [job(1), job(2)])
    assert settled.outcome == "acked"
    assert handler.seen == [["01M1.1", "01M2.1"]]
    assert [o.items[0].queue_id for o in settled.outputs] == ["01M1.1", "01M2.1"]
    assert broker.stored == settled.outputs


async def test_what_cannot_be_stored_keeps_the_input():
    broker = consumer(Recorder())
    broker.fail_with = PublishError("broker away")
    settled = await broker.deliver(QueueName.DELIVERY, [job(1)])
    assert settled.outcome == "requeued"
    assert settled.outputs == []


async def test_an_undecodable_body_is_parked_whole_with_the_reason():
    handler = Recorder()
    broker = consumer(handler)
    settled = await broker.deliver(QueueName.DELIVERY, [], body=b"\xff\x00junk", type_name=None)
    assert settled.outcome == "acked"
    [parked] = settled.parked
    assert parked.body == b"\xff\x00junk"
    assert parked.label == "undecodable"
    assert parked.headers["x-mailyard-park-reason"].startswith("undecodable: type property is None")
    assert parked.headers["x-mailyard-parked-from"] == "t.delivery"
    assert handler.seen == []


async def test_incomplete_items_are_parked_alone_and_the_rest_queued_again():
    broken = job(2)
    del broken.recipients[:]
    handler = Recorder()
    broker = consumer(handler)
    batch = pb.DeliveryBatch(domain="example.net", jobs=[job(1), broken, job(3)])
    settled = await broker.deliver(
        QueueName.DELIVERY,
        [],
        body=batch.SerializeToString(),
        type_name="mailyard.v1.DeliveryBatch",
    )
    assert [p.message_id for p in settled.parked] == ["01M2.1/0"]
    assert "no recipients" in settled.parked[0].reason
    [again] = settled.outputs
    assert isinstance(again, Publish)
    assert again.queue is QueueName.DELIVERY
    assert [j.queue_id for j in again.items] == ["01M1.1", "01M3.1"]
    assert handler.seen == []  # the good ones are handled when they come back


async def test_a_failing_handler_gets_the_input_again_until_the_last_delivery():
    handler = Recorder(fail_on={"01M2.1"})
    broker = consumer(handler, limit=3)
    first = await broker.deliver(QueueName.DELIVERY, [job(1), job(2), job(3)])
    assert first.outcome == "requeued"
    assert first.parked == []
    # The last delivery the limit allows: item by item, only the bad one parked.
    last = await broker.deliver(
        QueueName.DELIVERY, [job(1), job(2), job(3)], redelivered=True, delivery_count=2
    )
    assert last.outcome == "acked"
    assert [p.message_id for p in last.parked] == ["01M2.1/0"]
    assert last.parked[0].reason.startswith("handler kept failing: RuntimeError")
    assert [o.items[0].queue_id for o in last.outputs] == ["01M1.1", "01M3.1"]


async def test_past_the_delivery_limit_the_message_is_parked_unread():
    handler = Recorder()
    broker = consumer(handler, limit=3)
    settled = await broker.deliver(QueueName.DELIVERY, [job(1)], delivery_count=3)
    [parked] = settled.parked
    assert parked.label == "delivery_limit"
    assert "delivered 3 times" in parked.reason
    assert handler.seen == []


async def test_completed_items_are_recorded_and_left_out_when_the_batch_comes_back():
    handler = Recorder(complete=True, fail_on={"01M3.1"})
    broker = consumer(handler)
    first = await broker.deliver(QueueName.DELIVERY, [job(1), job(2), job(3)])
    # 1 and 2 completed (outputs stored with their record), then 3 failed.
    assert [key for key, _ in first.completed] == ["01M1.1/0", "01M2.1/0"]
    assert first.outcome == "requeued"
    handler.fail_on.clear()
    again = await broker.deliver(QueueName.DELIVERY, [job(1), job(2), job(3)], redelivered=True)
    assert handler.seen[-1] == ["01M3.1"]
    assert [key for key, _ in again.completed] == ["01M3.1/0"]
    assert broker.finished_keys == {"01M1.1/0", "01M2.1/0", "01M3.1/0"}


async def test_a_completed_item_is_cleared_by_its_record_or_by_its_messages_release():
    """Until one of them, a crash could repeat it: delivery keeps its slot."""
    broker = consumer(Recorder())
    broker.hold_records = True
    seen: dict[str, asyncio.Future[None]] = {}

    async def handler(work: Work[pb.DeliveryJob]) -> list[Publish]:
        first, second, third = work.items
        seen["first"] = await work.complete(first, [])
        seen["second"] = await work.complete(second, [])
        assert not seen["first"].done()  # record held, message not released
        broker.release_records()  # the records so far become durable...
        await asyncio.sleep(0)
        assert seen["first"].done()
        assert seen["second"].done()
        seen["third"] = await work.complete(third, [])  # ...a later one's is not
        assert not seen["third"].done()
        return []

    broker.consumer(QueueName.DELIVERY, pb.DeliveryJob, handler, prefetch=1)
    settled = await broker.deliver(QueueName.DELIVERY, [job(1), job(2), job(3)])
    assert settled.outcome == "acked"
    assert seen["third"].done()  # cleared by the release, its record still held
    assert "01M3.1/0" not in broker.finished_keys
    broker.release_records()  # a record that comes after the release is harmless
    assert "01M3.1/0" in broker.finished_keys


async def test_new_items_are_not_looked_up_but_marked_repeats_are():
    handler = Recorder(complete=True)
    broker = consumer(handler)
    broker.finished_keys.add("01M1.1/0")
    await broker.deliver(QueueName.DELIVERY, [job(1)])  # new: no lookup, handled
    assert handler.seen == [["01M1.1"]]
    repeat = job(1)
    repeat.may_repeat = True
    settled = await broker.deliver(QueueName.DELIVERY, [repeat])
    assert handler.seen == [["01M1.1"]]  # left out: finished already
    assert settled.outcome == "acked"
    assert settled.outputs == []


async def test_a_batch_entirely_finished_is_released_without_the_handler():
    handler = Recorder()
    broker = consumer(handler)
    broker.finished_keys.update({"01M1.1/0", "01M2.1/0"})
    settled = await broker.deliver(QueueName.DELIVERY, [job(1), job(2)], redelivered=True)
    assert settled.outcome == "acked"
    assert handler.seen == []


async def test_a_message_that_breaks_the_core_itself_is_not_left_unsettled():
    """A timestamp no datetime can hold, on a redelivered job: the lookup falls
    back to searching from the start instead of raising."""
    odd = job(1)
    odd.received_at.seconds = 253402300800  # year 10000
    handler = Recorder()
    broker = consumer(handler)
    settled = await broker.deliver(QueueName.DELIVERY, [odd], redelivered=True)
    assert settled.outcome == "acked"
    assert handler.seen == [["01M1.1"]]


async def test_accounting_runs_only_after_the_release():
    accounted: list[str] = []

    async def handler(work: Work[pb.DeliveryJob]) -> list[Publish]:
        work.then(lambda: accounted.append("done"))
        return [Publish(QueueName.DEFERRED, tuple(work.items))]

    broker = MemoryBroker(Topology("t", (), delivery_limit=5))
    broker.consumer(QueueName.DELIVERY, pb.DeliveryJob, handler, prefetch=1)
    broker.fail_with = PublishError("no")
    await broker.deliver(QueueName.DELIVERY, [job(1)])
    assert accounted == []
    broker.fail_with = None
    await broker.deliver(QueueName.DELIVERY, [job(1)], redelivered=True)
    assert accounted == ["done"]


async def test_items_without_a_key_cannot_be_completed_one_by_one():
    async def handler(work: Work[pb.DeliveryEvent]) -> list[Publish]:
        await work.complete(work.items[0], [])
        return []

    broker = MemoryBroker(Topology("t", (), delivery_limit=2))
    broker.consumer(QueueName.BOUNCE, pb.DeliveryEvent, handler, prefetch=1)
    event = pb.DeliveryEvent(
        kind=pb.EVENT_KIND_FAILED,
        results=[pb.RecipientResult(recipient="a@example.net")],
    )
    settled = await broker.deliver(QueueName.BOUNCE, [event], delivery_count=1)
    [parked] = settled.parked
    assert "cannot be completed one by one" in parked.reason


@pytest.mark.parametrize("redelivered", [False, True])
async def test_work_says_whether_it_came_before(redelivered):
    seen: list[bool] = []

    async def handler(work: Work[pb.DeliveryJob]) -> list[Publish]:
        seen.append(work.redelivered)
        return []

    broker = MemoryBroker()
    broker.consumer(QueueName.DELIVERY, pb.DeliveryJob, handler, prefetch=1)
    await broker.deliver(QueueName.DELIVERY, [job(1)], redelivered=redelivered)
    assert seen == [redelivered]
