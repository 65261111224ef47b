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
            # Gone a while after the test stops reading it: durable queues
            # outlive the broker's restarts, and these would pile up.
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-expires": 300_000}
            )
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
    # A returned publish told delivery that nobody listens; it stopped asking.
    # Deliveries that overlap before the first return arrives each get one.
    first = delivery.metric("mailyard_events_unsubscribed_total", kind="delivered")
    assert 1 <= first <= 5
    for index in range(5):
        assert pipeline.send("app@sender.test", [f"m{index}@alpha.test"], message("m"))[0] == 250
    pipeline.sink.wait_for(lambda m: len(m) == 10, 20, "five more deliveries")
    delivery.wait_metric("mailyard_delivery_recipients_total", 10, 10, outcome="delivered")
    # Five more deliveries, no more than one more try (should the 2 s recheck pass).
    assert delivery.metric("mailyard_events_unsubscribed_total", kind="delivered") - first <= 1
    # Not a failure: the publish-failure series stays at zero.
    name = "mailyard_broker_publish_failures_total"
    assert delivery.metric(name, service="delivery", reason="unroutable") == 0

    # A subscriber binds; after the recheck interval its events flow.
    queue = subscribe(pipeline.prefix, ["delivered"])
    time.sleep(2.5)
    assert pipeline.send("app@sender.test", ["late@alpha.test"], message("late"))[0] == 250
    events = wait_until(lambda: take(queue), 20, "the delivered event")
    assert [r.recipient for e in events for r in e.results] == ["late@alpha.test"]


def test_an_outside_consumer_reads_every_kind_of_a_message_s_life(pipeline_factory) -> None:
    """docs/events.md's kinds, read from a queue bound with '#' as a webhook relay
    would: delivered, relayed, failed, deferred, delayed, expired, then suppressed
    (the 5.1.1 put the address on the list). bounced and complained come from mail
    that returns: tests/integration/test_async_bounces.py reads them the same way."""
    pipeline = pipeline_factory(
        overrides={"queue": {"retry_delays": ["1s"], "max_lifetime": "5s", "delay_warning": "2s"}}
    )
    queue = subscribe(pipeline.prefix, ["#"])
    script = pipeline.sink.script
    script.rcpt_always["gone@alpha.test"] = "550 5.1.1 No such user"
    script.rcpt_always["later@alpha.test"] = "451 4.7.1 Greylisted, try later"
    with pipeline.smtp() as client:
        assert client.docmd("MAIL FROM:<app@sender.test>")[0] == 250
        for rcpt in ("ok@alpha.test> NOTIFY=SUCCESS", "gone@alpha.test>", "later@alpha.test>"):
            assert client.docmd(f"RCPT TO:<{rcpt}")[0] == 250
        assert client.data(message("a life"))[0] == 250

    events: list[pb.DeliveryEvent] = []

    def kinds() -> dict[int, list[pb.DeliveryEvent]]:
        events.extend(take(queue))
        found: dict[int, list[pb.DeliveryEvent]] = {}
        for event in events:
            if event.origin == pb.ORIGIN_SMTP:  # not the DSNs' own deliveries
                found.setdefault(event.kind, []).append(event)
        return found

    first_life = {
        pb.EVENT_KIND_DELIVERED, pb.EVENT_KIND_RELAYED, pb.EVENT_KIND_FAILED,
        pb.EVENT_KIND_DEFERRED, pb.EVENT_KIND_DELAYED, pb.EVENT_KIND_EXPIRED,
    }  # fmt: skip
    wait_until(lambda: first_life <= set(kinds()), 40, "every kind of the first message")
    found = kinds()

    def recipients(kind: int) -> set[str]:
        return {r.recipient for e in found[kind] for r in e.results}

    assert recipients(pb.EVENT_KIND_DELIVERED) == {"ok@alpha.test"}
    assert recipients(pb.EVENT_KIND_RELAYED) == {"ok@alpha.test"}
    assert recipients(pb.EVENT_KIND_FAILED) == {"gone@alpha.test"}
    assert {r.bounce_class for e in found[pb.EVENT_KIND_FAILED] for r in e.results} == {
        "InvalidRecipient"
    }
    for kind in (pb.EVENT_KIND_DEFERRED, pb.EVENT_KIND_DELAYED, pb.EVENT_KIND_EXPIRED):
        assert recipients(kind) == {"later@alpha.test"}, kind
    assert {r.bounce_class for e in found[pb.EVENT_KIND_EXPIRED] for r in e.results} == {
        "MessageExpired"
    }
    assert len(found[pb.EVENT_KIND_DELAYED]) == 1  # warned once

    # The hard bounce suppressed gone@: the next message to it is not sent.
    attempts = pipeline.sink.rcpt_attempts["gone@alpha.test"]
    assert pipeline.send("app@sender.test", ["gone@alpha.test"], message("again"))[0] == 250
    wait_until(lambda: pb.EVENT_KIND_SUPPRESSED in kinds(), 20, "the suppressed event")
    suppressed = kinds()[pb.EVENT_KIND_SUPPRESSED]
    assert {r.recipient for e in suppressed for r in e.results} == {"gone@alpha.test"}
    assert all(e.message_id for e in suppressed)
    assert pipeline.sink.rcpt_attempts["gone@alpha.test"] == attempts
