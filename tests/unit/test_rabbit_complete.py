"""How the RabbitMQ consumer completes a job (no broker needed): a job alone in
its message does not wait for its record, one with batch-mates does."""

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


class HeldLog:
    """Stands in for the stream: appends wait until the test confirms them."""

    def __init__(self) -> None:
        self.confirms: list[asyncio.Future[None]] = []

    async def append(self, records: Sequence[bytes]) -> None:
        confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        await confirm


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


async def test_a_job_with_batch_mates_waits_for_its_record_to_be_confirmed():
    log = HeldLog()
    consumer, _ = rabbit_consumer(log)
    completing = asyncio.ensure_future(consumer.complete(INCOMING, "k", [], alone=False))
    await asyncio.sleep(0.02)
    assert len(log.confirms) == 1  # appended
    assert not completing.done()  # but not confirmed
    log.confirms[0].set_result(None)
    await asyncio.wait_for(completing, 1)


async def test_a_job_alone_returns_once_its_outputs_are_stored(caplog: pytest.LogCaptureFixture):
    log = HeldLog()
    consumer, stored = rabbit_consumer(log)
    output: Output = SimpleNamespace()  # type: ignore[assignment]
    await asyncio.wait_for(consumer.complete(INCOMING, "k", [output], alone=True), 1)
    assert stored == [output]
    await asyncio.sleep(0.02)
    assert len(log.confirms) == 1  # the record still goes out
    # A lost record is said, since a copy of the job would be delivered again.
    with caplog.at_level(logging.WARNING):
        log.confirms[0].set_exception(ConnectionError("channel closed"))
        await asyncio.sleep(0.01)
    assert "could not record a finished job" in caplog.text
