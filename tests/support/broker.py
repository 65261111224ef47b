"""The real RabbitMQ the integration tests run against."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import aio_pika
from yarl import URL

BROKER_URL = os.environ.get("MAILYARD_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")


def reachable(url: str = BROKER_URL) -> str | None:
    """None if RabbitMQ answers on the URL's port; otherwise why not."""
    parsed = URL(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5672), timeout=2):
            return None
    except OSError as exc:
        return str(exc)


def delete_prefix(prefix: str, queues: list[str], exchanges: list[str]) -> None:
    async def run() -> None:
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            for name in queues:
                await channel.queue_delete(name)
            for name in exchanges:
                await channel.exchange_delete(name)

    asyncio.run(run())


def delete_topology(config: Path) -> None:
    """Every queue and exchange the services of ``config`` declare: the same
    names they derive (``topology_for``: each lane, its rungs, the hold rungs).
    Durable queues outlive the broker's restarts; each quorum queue left
    behind is a Raft member the broker keeps ticking."""
    from mailyard.broker import topology_for
    from mailyard.config import load_settings

    topology = topology_for(load_settings(config))
    delete_prefix(topology.prefix, list(topology.queues), [topology.events, topology.members])


def queue_messages(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message off ``queue`` (acked): for inspecting the parking queue."""

    async def run() -> list[aio_pika.abc.AbstractIncomingMessage]:
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            q = await channel.get_queue(queue)
            taken = []
            while (message := await q.get(fail=False)) is not None:
                await message.ack()
                taken.append(message)
            return taken

    return asyncio.run(run())


def publish_raw(queue: str, body: bytes, **properties: object) -> None:
    async def run() -> None:
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties
                ),  # type: ignore[arg-type]
                routing_key=queue,
                mandatory=True,
            )

    asyncio.run(run())


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    """Run rabbitmqctl (stop the broker, raise an alarm, ...); what it printed."""
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        raise AssertionError("rabbitmqctl is not installed; .ci/run installs rabbitmq-server")
    done = subprocess.run([binary, *args], check=True, timeout=timeout, capture_output=True)
    return done.stdout.decode().strip()


def wait_reachable(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while reachable() is not None:
        if time.monotonic() > deadline:
            raise AssertionError("RabbitMQ did not come back")
        time.sleep(0.2)
