"""Batches on the broker: group commit at ingress, several jobs per delivery message.

Batching must change nothing a user can see: every message once, a 250 only
after the confirm, one bad item parked without the others.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.v1 import message_pb2 as pb
from tests.support.broker import rabbitmqctl
from tests.support.pipeline import Pipeline, message


def accepted(message_id: str, recipients: list[str], subject: str) -> pb.AcceptedMessage:
    return pb.AcceptedMessage(
        message_id=message_id,
        mail_from="app@sender.test",
        recipients=recipients,
        content=message(subject),
        received_at=wire.timestamp(datetime.now(UTC)),
        origin=pb.ORIGIN_SMTP,
    )


def job(queue_id: str, recipient: str, subject: str) -> pb.DeliveryJob:
    received = wire.timestamp(datetime.now(UTC))
    return pb.DeliveryJob(
        message_id=queue_id.split(".")[0],
        queue_id=queue_id,
        domain="alpha.test",
        mail_from="app@sender.test",
        recipients=[recipient],
        content=message(subject),
        received_at=received,
        expires_at=wire.later(received, timedelta(hours=1)),
        origin=pb.ORIGIN_SMTP,
    )


def test_an_accepted_batch_is_split_per_domain_and_delivered_once(pipeline: Pipeline) -> None:
    batch = pb.AcceptedBatch(
        messages=[
            accepted(f"01BATCH{n}", [f"r{n}@alpha.test", f"r{n}@beta.test"], f"batch {n}")
            for n in range(5)
        ]
    )
    pipeline.inject(
        "inbound",
        batch.SerializeToString(),
        type="mailyard.v1.AcceptedBatch",
        message_id="01BATCH0+4",
    )
    expected = {f"r{n}@{d}" for n in range(5) for d in ("alpha.test", "beta.test")}
    pipeline.sink.wait_for(
        lambda m: {r for x in m for r in x.recipients} == expected, 30, "all ten recipients"
    )
    time.sleep(0.5)  # a duplicate would show by now
    assert pipeline.sink.deliveries() == dict.fromkeys(expected, 1)
    process = pipeline.process("queue")
    # One delivery message per destination domain, five jobs in each.
    assert process.metric("mailyard_queue_delivery_batch_jobs_count") == 2
    assert process.metric("mailyard_queue_delivery_batch_jobs_sum") == 10
    assert process.metric("mailyard_queue_messages_total") == 5


def test_an_incomplete_message_in_a_batch_is_parked_alone(pipeline: Pipeline) -> None:
    broken = accepted("01BROKEN", [], "no recipients")
    batch = pb.AcceptedBatch(
        messages=[
            accepted("01GOOD1", ["good1@alpha.test"], "good 1"),
            broken,
            accepted("01GOOD2", ["good2@alpha.test"], "good 2"),
        ]
    )
    pipeline.inject("inbound", batch.SerializeToString(), type="mailyard.v1.AcceptedBatch")
    pipeline.process("queue").wait_metric("mailyard_parked_total", 1, 20, reason="undecodable")
    pipeline.sink.wait_for(lambda m: len(m) == 2, 20, "the two good messages")
    [parked] = pipeline.parked()
    assert parked.type == "mailyard.v1.AcceptedMessage"
    assert parked.message_id == "01BROKEN"
    assert parked.headers["x-mailyard-message-id"] == "01BROKEN"
    assert "no recipients" in parked.headers["x-mailyard-park-reason"]
    assert pb.AcceptedMessage.FromString(parked.body) == broken
    assert pipeline.sink.deliveries() == {"good1@alpha.test": 1, "good2@alpha.test": 1}


def test_a_job_that_crashes_delivery_is_parked_alone_and_the_batch_is_not_resent(
    pipeline_factory,
) -> None:
    pipeline = pipeline_factory(overrides={"broker": {"delivery_limit": 3}})
    poison = job("01POISON.1", "poison@alpha.test", "poison")
    # Delivered fine, but its arrival date (year 10000) cannot be turned into
    # a datetime when the outcome is accounted: handling it raises every time.
    poison.received_at.seconds = 253402300800
    batch = pb.DeliveryBatch(
        domain="alpha.test",
        jobs=[
            job("01OK1.1", "ok1@alpha.test", "ok 1"),
            poison,
            job("01OK2.1", "ok2@alpha.test", "ok 2"),
        ],
    )
    pipeline.inject("delivery", batch.SerializeToString(), type="mailyard.v1.DeliveryBatch")
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_parked_total", 1, 30, reason="handler_error")
    [parked] = pipeline.parked()
    assert parked.type == "mailyard.v1.DeliveryJob"
    assert pb.DeliveryJob.FromString(parked.body).queue_id == "01POISON.1"
    assert parked.headers["x-mailyard-park-reason"].startswith("handler kept failing")
    copies = pipeline.sink.deliveries()
    # The good jobs went once: their finished records kept them out of the
    # batch when it came back. Only the poisonous one was tried again, once
    # per delivery the limit allows.
    assert copies["ok1@alpha.test"] == 1
    assert copies["ok2@alpha.test"] == 1
    assert copies["poison@alpha.test"] == 3


@pytest.mark.adapters("rabbitmq")
def test_messages_stored_while_a_publish_waits_go_out_as_one_batch(pipeline_factory) -> None:
    """Group commit against the real broker: hold the first confirm with a
    memory alarm, let four more messages arrive, release: two publishes."""
    pipeline = pipeline_factory(overrides={"ingress": {"group_commit": {"max_in_flight": 1}}})
    ingress = pipeline.process("ingress")
    replies: dict[str, int] = {}

    def send(name: str) -> None:
        code, _ = pipeline.send("app@sender.test", [f"{name}@alpha.test"], message(name))
        replies[name] = code

    watermark = _memory_watermark()
    rabbitmqctl("set_vm_memory_high_watermark", "0")  # the broker stops reading publishes
    try:
        first = threading.Thread(target=send, args=("first",))
        first.start()
        time.sleep(1.0)
        others = [threading.Thread(target=send, args=(f"m{n}",)) for n in range(4)]
        for thread in others:
            thread.start()
        time.sleep(1.5)
        assert replies == {}, "a 250 before the broker confirmed"
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", watermark)
    for thread in [first, *others]:
        thread.join(30)
    assert replies == dict.fromkeys(["first", "m0", "m1", "m2", "m3"], 250)
    assert ingress.metric("mailyard_ingress_batch_messages_count") == 2
    assert ingress.metric("mailyard_ingress_batch_messages_sum") == 5
    pipeline.sink.wait_for(lambda m: len(m) == 5, 30, "the five messages")
    assert set(pipeline.sink.deliveries().values()) == {1}


def _memory_watermark() -> str:
    """The broker's vm_memory_high_watermark, to put back after the alarm."""
    output = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    try:
        float(output)
    except ValueError:
        raise AssertionError(f"unexpected memory watermark {output!r}") from None
    return output
