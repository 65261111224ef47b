"""Declaring the topology against the real broker: races and mismatches."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from mailyard import wire
from mailyard.broker import Publish, QueueName, Topology, Work
from mailyard.broker.rabbitmq.adapter import RabbitBroker
from mailyard.broker.rabbitmq.client import BrokerClient, TopologyMismatch
from mailyard.broker.rabbitmq.declare import declare, work_queue_arguments
from mailyard.config import BrokerConfig
from mailyard.v1 import message_pb2 as pb
from tests.support.broker import delete_prefix


def _topology(prefix: str, delivery_limit: int = 5, lanes: tuple[str, ...] = ()) -> Topology:
    return Topology(prefix, (timedelta(seconds=1),), delivery_limit, lanes=lanes)


LANES = ("transactional", "bulk")


@pytest.fixture
def prefix(broker: str):
    name = f"topo{uuid.uuid4().hex[:8]}"
    yield name
    topology = _topology(name, lanes=LANES)
    delete_prefix(name, list(topology.queues), [topology.events])


def test_many_services_declaring_at_once_all_start(broker: str, prefix: str) -> None:
    """Pods starting together race to create the same quorum queues."""

    async def run() -> None:
        clients = [
            BrokerClient(
                BrokerConfig(url=broker, prefix=prefix), _topology(prefix), service=f"s{i}"
            )
            for i in range(24)
        ]
        await asyncio.gather(*(client.connect(attempts=1) for client in clients))
        assert all(client.connected for client in clients)
        await asyncio.gather(*(client.close() for client in clients))

    asyncio.run(run())


def test_changed_queue_arguments_stop_start_up_with_a_clear_message(
    broker: str, prefix: str
) -> None:
    async def run() -> None:
        first = BrokerClient(BrokerConfig(url=broker), _topology(prefix, 5), service="old")
        await first.connect(attempts=1)
        await first.close()
        second = BrokerClient(BrokerConfig(url=broker), _topology(prefix, 6), service="new")
        try:
            with pytest.raises(TopologyMismatch, match=r"broker\.delivery_limit"):
                await second.connect(attempts=1)
        finally:
            await second.close()

    asyncio.run(run())


class _NotThereYet:
    """The first declarations meet a queue another process has not finished creating.

    Reproduced with the broker's real answer: a passive declare of a queue
    that does not exist closes the channel with NOT_FOUND, as RabbitMQ does
    for a quorum queue whose leader is not up yet.
    """

    failures = 2

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, topology: Topology, channel) -> None:  # type: ignore[no-untyped-def]
        self.attempts += 1
        if self.attempts <= self.failures:
            await channel.declare_queue(f"{topology.prefix}.not-created-yet", passive=True)
        await declare(topology, channel)


def test_declaration_is_retried_while_queues_are_being_created(broker: str, prefix: str) -> None:
    late = _NotThereYet()

    async def run() -> bool:
        client = BrokerClient(
            BrokerConfig(url=broker), _topology(prefix), service="late", declare_topology=late
        )
        await client.connect(attempts=1)
        connected = client.connected
        await client.close()
        return connected

    assert asyncio.run(run())
    assert late.attempts == 3


def test_a_bounce_queue_declared_before_single_active_consumers_is_used_as_it_is(
    broker: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade must not stop every service: the older bounce queue still works."""
    topology = _topology(prefix)

    async def run() -> tuple[bool, int]:
        connection = await aio_pika.connect(broker)
        channel = await connection.channel()
        await channel.declare_queue(
            topology.bounce, durable=True, arguments=work_queue_arguments(topology)
        )
        await connection.close()
        client = BrokerClient(BrokerConfig(url=broker), topology, service="upgraded")
        await client.connect(attempts=1)
        connected = client.connected
        # Events still reach it, the new kinds too.
        await client.publish(
            "delayed", aio_pika.Message(b"x"), exchange=topology.events, mandatory=True
        )
        await client.close()
        connection = await aio_pika.connect(broker)
        channel = await connection.channel()
        declared = await channel.declare_queue(topology.bounce, passive=True)
        count = declared.declaration_result.message_count or 0
        await connection.close()
        return connected, count

    assert asyncio.run(run()) == (True, 1)
    assert "predates single active consumers" in caplog.text


# --- lanes -------------------------------------------------------------------


def _job(n: int, mail_class: str) -> pb.DeliveryJob:
    return pb.DeliveryJob(
        message_id=f"01T{n}",
        queue_id=f"01T{n}.1",
        domain="x.test",
        recipients=["a@x.test"],
        expires_at=wire.timestamp(datetime.now(UTC) + timedelta(days=1)),
        mail_class=mail_class,
    )


def test_an_install_from_before_lanes_gets_its_lanes_and_keeps_its_queues(
    broker: str, prefix: str
) -> None:
    """The transactional lane and ladder are the queues from before: declared again as
    they are (no argument changed), so queued jobs stay where they wait."""

    async def run() -> tuple[bool, int]:
        before = BrokerClient(BrokerConfig(url=broker), _topology(prefix), service="old")
        await before.connect(attempts=1)
        await before.publish(f"{prefix}.delivery", aio_pika.Message(b"queued before"))
        await before.close()
        after = BrokerClient(
            BrokerConfig(url=broker), _topology(prefix, lanes=LANES), service="new"
        )
        await after.connect(attempts=1)
        connected = after.connected
        await after.close()
        connection = await aio_pika.connect(broker)
        channel = await connection.channel()
        waiting = await channel.declare_queue(f"{prefix}.delivery", passive=True)
        await channel.declare_queue(f"{prefix}.delivery.bulk", passive=True)
        await channel.declare_queue(f"{prefix}.retry.1s.bulk", passive=True)
        await connection.close()
        return connected, waiting.declaration_result.message_count or 0

    assert asyncio.run(run()) == (True, 1)


def test_a_job_waits_out_its_rung_and_comes_back_to_its_own_lane(broker: str, prefix: str) -> None:
    async def run() -> dict[str, list[str]]:
        topology = _topology(prefix, lanes=LANES)
        rabbit = RabbitBroker(BrokerConfig(url=broker, prefix=prefix), topology, service="t")
        await rabbit.connect(attempts=1)
        arrived: dict[str, list[str]] = {lane: [] for lane in LANES}
        done = asyncio.Event()

        def handler(lane: str):  # type: ignore[no-untyped-def]
            async def handle(work: Work[pb.DeliveryJob]) -> list[Publish]:
                arrived[lane] += [job.queue_id for job in work.items]
                if sum(map(len, arrived.values())) == 3:
                    done.set()
                return []

            return handle

        consumers = [
            rabbit.consumer(
                QueueName.DELIVERY, pb.DeliveryJob, handler(lane), prefetch=4, lane=lane
            )
            for lane in LANES
        ]
        for consumer in consumers:
            await consumer.start()
        wait = timedelta(seconds=1)
        await rabbit.store(
            [
                Publish(QueueName.DELIVERY, (_job(1, "bulk"),), delay=wait),
                Publish(QueueName.DELIVERY, (_job(2, ""),), delay=wait),
                Publish(QueueName.DELIVERY, (_job(3, "bulk"),)),
            ]
        )
        states = await rabbit.queue_states()
        await asyncio.wait_for(done.wait(), 20)
        for consumer in consumers:
            await consumer.stop(1)
        await rabbit.close()
        assert states["retry.1s.bulk"].consumers == 0
        assert {"delivery.bulk", "retry.1s", "delivery"} <= set(states)
        return arrived

    assert asyncio.run(run()) == {"transactional": ["01T2.1"], "bulk": ["01T3.1", "01T1.1"]}
