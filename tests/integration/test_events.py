"""Delivery events on the topic exchange: what subscribers get, and what nobody hears."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from mailyard import wire
from mailyard.v1 import message_pb2 as pb
from tests.support.broker import BROKER_URL, queue_messages
from tests.support.pipeline import Pipeline, message, wait_until


def subscribe(prefix: str, keys: list[str]) -> str:
    """A queue bound to the events exchange, as a webhook relay would bind one."""
    name = f"{prefix}.test-subscriber"

    async def run() -> None:
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, durable=True)
            for key in keys:
                await queue.bind(f"{prefix}.events", routing_key=key)

    asyncio.run(run())
    return name


def take(queue: str) -> list[pb.DeliveryEvent]:
    return [wire.decode(m.body, m.type, pb.DeliveryEvent) for m in queue_messages(queue)]


pytestmark = pytest.mark.adapters("rabbitmq")  # subscribers bind queues to the exchange


def test_subscribers_get_delivered_and_failed_events(pipeline: Pipeline) -> None:
    queue = subscribe(pipeline.prefix, ["delivered", "failed"])
    pipeline.sink.script.rcpt_always["gone@alpha.test"] = "550 5.1.1 No such user"
    code, _ = pipeline.send(
        "app@sender.test", ["ok@alpha.test", "gone@alpha.test"], message("events")
    )
    assert code == 250
    events: list[pb.DeliveryEvent] = []
    wait_until(lambda: events.extend(take(queue)) or len(events) >= 3, 20, "three events")
    # Delivered to ok@, failed for gone@, and delivered: the DSN to app@sender.test.
    by_kind = {e.kind: e for e in events if not e.results[0].recipient.startswith("app@")}
    delivered = by_kind[pb.EVENT_KIND_DELIVERED]
    assert [r.recipient for r in delivered.results] == ["ok@alpha.test"]
    assert delivered.results[0].reply.code == 250
    assert delivered.results[0].remote_mta == "mx.alpha.test"
    assert delivered.original_headers == b""  # no body, no headers: only DSNs need them
    failed = by_kind[pb.EVENT_KIND_FAILED]
    assert failed.results[0].reply.status == "5.1.1"
    assert b"Subject: events" in failed.original_headers
    assert delivered.queue_id == failed.queue_id


def test_unsubscribed_kinds_are_not_published_for_a_while(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"broker": {"unrouted_event_recheck": "2s"}})
    for index in range(5):
        assert pipeline.send("app@sender.test", [f"n{index}@alpha.test"], message("n"))[0] == 250
    pipeline.sink.wait_for(lambda m: len(m) == 5, 20, "five deliveries")
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 5, 10, outcome="delivered")
    # A returned publish told delivery that nobody listens; it stopped asking
    # (the first two deliveries may overlap, before the first return arrives).
    assert 1 <= delivery.metric("mailyard_events_unsubscribed_total", kind="delivered") <= 2
    # Not a failure: the publish-failure series stays at zero.
    name = "mailyard_broker_publish_failures_total"
    assert delivery.metric(name, service="delivery", reason="unroutable") == 0

    # A subscriber binds; after the recheck interval its events flow.
    queue = subscribe(pipeline.prefix, ["delivered"])
    time.sleep(2.5)
    assert pipeline.send("app@sender.test", ["late@alpha.test"], message("late"))[0] == 250
    events = wait_until(lambda: take(queue), 20, "the delivered event")
    assert [r.recipient for e in events for r in e.results] == ["late@alpha.test"]
