"""Delivery lanes behind the broker port: a job goes to its class's lane, and its
retries come back to it, on the embedded spool and in memory (RabbitMQ: in
tests/integration/test_topology.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.broker import Publish, QueueName, Topology, Work
from mailyard.broker.embedded.adapter import EmbeddedBroker
from mailyard.broker.embedded.spool import Spool, read_depths
from mailyard.broker.memory import MemoryBroker
from mailyard.v1 import message_pb2 as pb

LADDER = (timedelta(milliseconds=50), timedelta(minutes=5))
LANES = ("transactional", "bulk")


def topology() -> Topology:
    return Topology("t", LADDER, delivery_limit=5, lanes=LANES)


def job(n: int, mail_class: str = "") -> pb.DeliveryJob:
    return pb.DeliveryJob(
        message_id=f"01L{n}",
        queue_id=f"01L{n}.1",
        domain="x.test",
        recipients=["a@x.test"],
        expires_at=wire.timestamp(datetime.now(UTC) + timedelta(days=1)),
        mail_class=mail_class,
    )


def test_a_publish_goes_to_the_lane_of_its_jobs_class():
    assert Publish(QueueName.DELIVERY, (job(1, "bulk"), job(2, "bulk"))).lane == "bulk"
    assert Publish(QueueName.DELIVERY, (job(1),)).lane == "transactional"
    assert Publish(QueueName.DEFERRED, (job(1, "bulk"),)).lane == "transactional"


def test_one_publish_never_mixes_lanes():
    with pytest.raises(ValueError, match="jobs of one class"):
        Publish(QueueName.DELIVERY, (job(1, "bulk"), job(2, "transactional")))
    # Empty is transactional: the same lane.
    assert Publish(QueueName.DELIVERY, (job(1, ""), job(2, "transactional"))).lane == (
        "transactional"
    )


async def test_the_spool_keeps_each_lane_and_its_rungs_apart(tmp_path):
    broker = EmbeddedBroker(Spool(tmp_path), topology(), service="queue")
    await broker.connect()
    try:
        await broker.store(
            [
                Publish(QueueName.DELIVERY, (job(1, "bulk"),)),
                Publish(QueueName.DELIVERY, (job(2),)),
                Publish(QueueName.DELIVERY, (job(3, "bulk"),), delay=timedelta(minutes=5)),
                Publish(QueueName.DELIVERY, (job(4, "gone"),), delay=timedelta(minutes=5)),
            ]
        )
        states = await broker.queue_states()
        assert {name: state.messages for name, state in states.items() if state.messages} == {
            "delivery.bulk": 1,
            "delivery": 1,
            "retry.5m.bulk": 1,
            "retry.5m": 1,  # a class without a lane is transactional
        }
        assert set(states) >= {"retry.50ms.bulk", "retry.50ms", "parking", "inbound"}
    finally:
        await broker.close()
    # What `mailyard status` reads from the file says the same.
    assert read_depths(tmp_path) == {
        "delivery.bulk": 1,
        "delivery": 1,
        "retry.5m.bulk": 1,
        "retry.5m": 1,
    }


async def test_a_retry_on_the_spool_comes_back_to_its_own_lane(tmp_path):
    spool = Spool(tmp_path)
    broker = EmbeddedBroker(spool, topology(), service="delivery")
    await broker.connect()
    arrived: dict[str, asyncio.Queue[str]] = {lane: asyncio.Queue() for lane in LANES}

    def handler(lane: str):  # type: ignore[no-untyped-def]
        async def handle(work: Work[pb.DeliveryJob]) -> list[Publish]:
            for item in work.items:
                arrived[lane].put_nowait(item.queue_id)
            return []

        return handle

    consumers = [
        broker.consumer(QueueName.DELIVERY, pb.DeliveryJob, handler(lane), prefetch=4, lane=lane)
        for lane in LANES
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        delay = timedelta(milliseconds=50)
        await broker.store(
            [
                Publish(QueueName.DELIVERY, (job(1, "bulk"),), delay=delay),
                Publish(QueueName.DELIVERY, (job(2),), delay=delay),
            ]
        )
        assert await asyncio.wait_for(arrived["bulk"].get(), 5) == "01L1.1"
        assert await asyncio.wait_for(arrived["transactional"].get(), 5) == "01L2.1"
        assert arrived["bulk"].empty()
        assert arrived["transactional"].empty()
    finally:
        for consumer in consumers:
            await consumer.stop(1)
        await broker.close()


async def test_the_memory_broker_hands_a_job_to_its_lane_s_consumer():
    broker = MemoryBroker(topology())
    seen: list[str] = []

    def handler(lane: str):  # type: ignore[no-untyped-def]
        async def handle(work: Work[pb.DeliveryJob]) -> list[Publish]:
            seen.append(lane)
            return []

        return handle

    for lane in LANES:
        broker.consumer(QueueName.DELIVERY, pb.DeliveryJob, handler(lane), prefetch=1, lane=lane)
    await broker.deliver(QueueName.DELIVERY, [job(1, "bulk")])
    await broker.deliver(QueueName.DELIVERY, [job(2)])
    assert seen == ["bulk", "transactional"]
    states = await broker.queue_states()
    assert (states["delivery.bulk"].consumers, states["delivery"].consumers) == (1, 1)
    assert "retry.5m.bulk" in states
