"""How the RabbitMQ consumer completes a job (no broker needed): it returns
once the outputs are stored, with the record still on its way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from mailyard.broker import QueueName
from mailyard.broker.consuming import Incoming
from mailyard.broker.port import Output
from mailyard.broker.rabbitmq.consumer import RabbitConsumer
from mailyard.broker.rabbitmq.streams import FinishedJobs
from mailyard.broker.topology import Topology
from mailyard.v1 import message_pb2 as pb
from tests.unit.test_finished_jobs import HeldLog


def rabbit_consumer(log: HeldLog) -> tuple[RabbitConsumer, list[Output]]:
    stored: list[Output] = []

    async def store(outputs: Sequence[Output]) -> None:
        stored.extend(outputs)

    broker = SimpleNamespace(
        service="delivery",
        topology=Topology("t", (), delivery_limit=5),
        finished_jobs=FinishedJobs(log, linger=0.001),  # type: ignore[arg-type]
        store=store,
    )
    consumer = RabbitConsumer(
        broker,  # type: ignore[arg-type]
        QueueName.DELIVERY,
        pb.DeliveryJob,
        lambda work: asyncio.sleep(0, []),  # type: ignore[arg-type, return-value]
        prefetch=1,
    )
    return consumer, stored


INCOMING = Incoming(b"", None, None, {}, redelivered=False, delivery_count=0)


async def test_complete_returns_once_the_outputs_are_stored_and_the_record_follows():
    log = HeldLog()
    consumer, stored = rabbit_consumer(log)
    output: Output = SimpleNamespace()  # type: ignore[assignment]
    recorded = await asyncio.wait_for(consumer.complete(INCOMING, "k", [output]), 1)
    assert stored == [output]
    await asyncio.sleep(0.02)
    assert len(log.confirms) == 1  # appended...
    assert not recorded.done()  # ...not confirmed
    log.confirms[0].set_result(None)
    await asyncio.wait_for(recorded, 1)


async def test_a_record_that_cannot_be_stored_is_said(caplog: pytest.LogCaptureFixture):
    log = HeldLog()
    consumer, _ = rabbit_consumer(log)
    recorded = await consumer.complete(INCOMING, "k", [])
    await asyncio.sleep(0.02)
    with caplog.at_level(logging.WARNING):
        log.confirms[0].set_exception(ConnectionError("channel closed"))
        with pytest.raises(ConnectionError):
            await recorded
    assert "could not record a finished job" in caplog.text
