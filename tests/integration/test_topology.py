"""Declaring the topology against the real broker: races and mismatches."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import aio_pika
import pytest

from mailyard.broker import Topology
from mailyard.broker.rabbitmq.client import BrokerClient, TopologyMismatch
from mailyard.broker.rabbitmq.declare import declare, work_queue_arguments
from mailyard.config import BrokerConfig
from tests.support.broker import delete_prefix


def _topology(prefix: str, delivery_limit: int = 5) -> Topology:
    return Topology(prefix, (timedelta(seconds=1),), delivery_limit)


@pytest.fixture
def prefix(broker: str):
    name = f"topo{uuid.uuid4().hex[:8]}"
    yield name
    topology = _topology(name)
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
