"""The services' handlers on the in-memory port: plan, publish, account — no sockets.

Delivery gets a fake Deliverer (its SMTP side is tested against real servers
in tests/integration); here it is about what the service makes of outcomes,
its job slots and its deadline.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.bounce.service import BounceService
from mailyard.broker import Emit, EventKind, Publish, QueueName, records
from mailyard.broker.memory import MemoryBroker, PublishError
from mailyard.config import Settings
from mailyard.delivery.outcome import RecipientOutcome
from mailyard.delivery.service import DeliveryService
from mailyard.filewatch import FileProblem
from mailyard.queue.service import QueueService
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

NOW = datetime.now(UTC)


def settings(**sections: object) -> Settings:
    base: dict[str, object] = {"hostname": "mx.test", "ingress": {"local_domains": ["local.test"]}}
    return Settings(**(base | sections))  # type: ignore[arg-type]


def accepted(message_id: str, recipients: list[str]) -> pb.AcceptedMessage:
    return pb.AcceptedMessage(
        message_id=message_id,
        mail_from="app@sender.test",
        recipients=recipients,
        content=b"Subject: s\r\n\r\nbody\r\n",
        received_at=wire.timestamp(NOW),
        origin=pb.ORIGIN_SMTP,
    )


def job(
    n: int, recipients: list[str] | None = None, *, attempts: int = 0, mail_class: str = ""
) -> pb.DeliveryJob:
    return pb.DeliveryJob(
        mail_class=mail_class,
        message_id=f"01J{n}",
        queue_id=f"01J{n}.1",
        domain="example.net",
        mail_from="app@sender.test",
        recipients=recipients or [f"r{n}@example.net"],
        content=b"Subject: s\r\n\r\nbody\r\n",
        received_at=wire.timestamp(NOW),
        expires_at=wire.timestamp(NOW + timedelta(days=5)),
        attempts=attempts,
    )


# --- queue ------------------------------------------------------------------


async def start(service: QueueService | DeliveryService | BounceService) -> MemoryBroker:
    await service.start()
    assert isinstance(service.broker, MemoryBroker)
    return service.broker


async def test_queue_splits_a_batch_into_one_delivery_batch_per_domain():
    queue = QueueService(settings(), MemoryBroker())
    broker = await start(queue)
    messages = [
        accepted("01A", ["a@alpha.test", "b@beta.test", "p@local.test"]),
        accepted("01B", ["c@alpha.test"]),
    ]
    settled = await broker.deliver(QueueName.INBOUND, messages)
    assert settled.outcome == "acked"
    publishes = [o for o in settled.outputs if isinstance(o, Publish)]
    by_queue = {(p.queue, tuple(j.queue_id for j in p.items)) for p in publishes}
    assert by_queue == {
        (QueueName.DELIVERY, ("01A.1", "01B.1")),  # alpha.test: two messages, one batch
        (QueueName.DELIVERY, ("01A.2",)),
        (QueueName.LOCAL, ("01A.3",)),
    }
    assert not any(j.may_repeat for p in publishes for j in p.items)


async def test_queue_adds_a_feedback_id_to_mail_from_clients_only():
    queue = QueueService(settings(queue={"feedback_id": {"sender_id": "esp"}}), MemoryBroker())
    broker = await start(queue)
    from_client = accepted("01A", ["a@alpha.test"])
    from_client.client.login = "shop-42"
    notice = accepted("01B", ["b@alpha.test"])
    notice.origin = pb.ORIGIN_DSN
    settled = await broker.deliver(QueueName.INBOUND, [from_client, notice])
    [publish] = [o for o in settled.outputs if isinstance(o, Publish)]
    contents = {j.message_id: j.content for j in publish.items}
    assert contents["01A"] == b"Feedback-ID: :shop-42::esp\r\n" + from_client.content
    assert contents["01B"] == notice.content


async def test_queue_marks_the_jobs_of_a_redelivered_message():
    queue = QueueService(settings(), MemoryBroker())
    broker = await start(queue)
    settled = await broker.deliver(
        QueueName.INBOUND, [accepted("01A", ["a@alpha.test"])], redelivered=True
    )
    [publish] = settled.outputs
    assert isinstance(publish, Publish)
    assert publish.items[0].may_repeat
    assert wire.job_message_id(publish.items[0]) == "01A.1/0"  # the same id as the first time


async def test_queue_puts_a_deferred_job_on_the_next_rung():
    queue = QueueService(settings(queue={"retry_delays": ["5m", "10m"]}), MemoryBroker())
    broker = await start(queue)
    settled = await broker.deliver(QueueName.DEFERRED, [job(1, attempts=2)])
    [publish] = settled.outputs
    assert isinstance(publish, Publish)
    assert (publish.queue, publish.delay) == (QueueName.DELIVERY, timedelta(minutes=10))
    # With jitter it may come back after 8 minutes: not_before is the earliest.
    assert publish.spread == 0.2
    not_before = wire.to_datetime(publish.items[0].not_before)
    assert timedelta(minutes=7.9) < not_before - datetime.now(UTC) < timedelta(minutes=8.1)


async def test_a_deferral_planned_again_after_a_crash_gives_the_same_retry():
    """Killed after publishing a retry and before acking its deferral, the queue
    plans it again later: the copy is marked, and its earliest moment (where
    delivery's record lookup starts) is the first copy's, counted from the
    failed attempt's end, not from when it was planned."""
    queue = QueueService(settings(queue={"retry_delays": ["5m", "10m"]}), MemoryBroker())
    broker = await start(queue)
    deferred = job(1, attempts=1)
    attempt_ended = datetime.now(UTC) - timedelta(seconds=30)
    deferred.not_before.CopyFrom(wire.timestamp(attempt_ended))
    first = await broker.deliver(QueueName.DEFERRED, [deferred])
    await asyncio.sleep(0.01)  # the queue's clock moves on before the redelivery
    again = await broker.deliver(QueueName.DEFERRED, [deferred], redelivered=True)
    [retry] = first.outputs
    [copy] = again.outputs
    assert isinstance(retry, Publish)
    assert isinstance(copy, Publish)
    assert not retry.items[0].may_repeat
    assert copy.items[0].may_repeat
    assert wire.job_message_id(copy.items[0]) == wire.job_message_id(retry.items[0])
    assert copy.items[0].not_before == retry.items[0].not_before
    earliest = wire.to_datetime(retry.items[0].not_before)
    assert earliest == attempt_ended + timedelta(minutes=5) * 0.8
    assert records.search_from(copy.items) == earliest


async def test_queue_expires_a_deferred_job_past_its_lifetime():
    queue = QueueService(settings(), MemoryBroker())
    broker = await start(queue)
    old = job(1, attempts=7)
    old.expires_at.CopyFrom(wire.timestamp(NOW - timedelta(seconds=1)))
    old.last_results.append(
        pb.RecipientResult(recipient="r1@example.net", reply=pb.SmtpReply(code=451, text="busy"))
    )
    settled = await broker.deliver(QueueName.DEFERRED, [old])
    [emit] = settled.outputs
    assert isinstance(emit, Emit)
    assert emit.kind is EventKind.EXPIRED
    assert emit.event.results[0].reply.text == "busy"
    assert emit.event.results[0].bounce_class == "MessageExpired"
    assert b"Subject: s" in emit.event.original_headers


# --- delivery ----------------------------------------------------------------


class FakeDeliverer:
    """Answers with scripted replies; can hold attempts until the test lets them go."""

    def __init__(self, replies: dict[str, Reply] | None = None) -> None:
        self.replies = replies or {}
        self.running = 0
        self.most_at_once = 0
        self.gate: asyncio.Event | None = None
        self.fail: set[str] = set()

    async def mx_names(self, job: pb.DeliveryJob) -> list[str]:
        return ["mx.example.net"]

    async def attempt(self, job: pb.DeliveryJob, permit: object = None) -> list[RecipientOutcome]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0.001)
            if job.queue_id in self.fail:
                raise RuntimeError("the deliverer broke")
            ok = Reply(250, "2.0.0", "ok")
            return [
                RecipientOutcome(r, self.replies.get(r, ok), "mx.example.net", 0.01)
                for r in job.recipients
            ]
        finally:
            self.running -= 1


def delivery(fake: FakeDeliverer, **config: object) -> DeliveryService:
    return DeliveryService(
        settings(delivery=config),
        MemoryBroker(),
        deliverer=fake,  # type: ignore[arg-type]
    )


async def test_delivery_reports_each_outcome_and_sends_the_deferred_back_to_queue():
    fake = FakeDeliverer(
        {
            "bad@example.net": Reply(550, "5.1.1", "no such user"),
            "later@example.net": Reply(451, "4.7.1", "greylisted"),
        }
    )
    broker = await start(delivery(fake))
    work = job(1, ["ok@example.net", "bad@example.net", "later@example.net"], attempts=1)
    settled = await broker.deliver(QueueName.DELIVERY, [work])
    assert settled.outcome == "acked"
    [(key, outputs)] = settled.completed
    assert key == "01J1.1/1"
    kinds = {o.kind: o.event for o in outputs if isinstance(o, Emit)}
    assert set(kinds) == {EventKind.DELIVERED, EventKind.FAILED, EventKind.DEFERRED}
    assert [r.recipient for r in kinds[EventKind.FAILED].results] == ["bad@example.net"]
    assert kinds[EventKind.FAILED].results[0].remote_mta == "mx.example.net"
    assert kinds[EventKind.FAILED].results[0].elapsed_ms == 10
    assert kinds[EventKind.DELIVERED].original_headers == b""
    [again] = [o for o in outputs if isinstance(o, Publish)]
    assert again.queue is QueueName.DEFERRED
    retry = again.items[0]
    assert (list(retry.recipients), retry.attempts) == (["later@example.net"], 2)
    assert retry.last_results[0].reply.status == "4.7.1"
    # Every recipient that was not delivered carries its bounce class.
    assert kinds[EventKind.FAILED].results[0].bounce_class == "InvalidRecipient"
    assert kinds[EventKind.DEFERRED].results[0].bounce_class == "TransientFailure"
    assert kinds[EventKind.DELIVERED].results[0].bounce_class == ""
    assert retry.last_results[0].bounce_class == "TransientFailure"


async def test_delivery_reads_users_classification_rules_before_the_defaults(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {class: SpamBlock, text: greylisted}\n")
    fake = FakeDeliverer({"later@example.net": Reply(451, "4.7.1", "greylisted")})
    service = DeliveryService(
        settings(bounce={"classification": {"rules_files": [str(rules)]}}),
        MemoryBroker(),
        deliverer=fake,  # type: ignore[arg-type]
    )
    broker = await start(service)
    settled = await broker.deliver(QueueName.DELIVERY, [job(1, ["later@example.net"])])
    [(_, outputs)] = settled.completed
    [deferred] = [o.event for o in outputs if isinstance(o, Emit)]
    assert deferred.results[0].bounce_class == "SpamBlock"


def test_a_rules_file_that_cannot_be_read_stops_delivery_naming_the_key(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(FileProblem, match=r"^bounce\.classification\.rules_files\[0\]: "):
        DeliveryService(
            settings(bounce={"classification": {"rules_files": [str(missing)]}}), MemoryBroker()
        )


async def test_delivery_works_at_most_concurrency_jobs_at_once_across_batches():
    fake = FakeDeliverer()
    fake.gate = asyncio.Event()
    service = delivery(fake, concurrency=3)
    broker = await start(service)
    batches = [
        asyncio.create_task(broker.deliver(QueueName.DELIVERY, [job(n) for n in range(b, b + 4)]))
        for b in (0, 10)
    ]
    for _ in range(20):
        await asyncio.sleep(0)
    assert fake.running == 3
    fake.gate.set()
    settled = await asyncio.gather(*batches)
    assert fake.most_at_once == 3
    assert sum(len(s.completed) for s in settled) == 8


async def test_jobs_that_never_got_a_slot_go_back_in_line_not_deferred():
    fake = FakeDeliverer()
    fake.gate = asyncio.Event()  # never set: the first job hangs until the deadline
    broker = await start(
        delivery(fake, concurrency=1, attempt_timeout="200ms", shaping={"max_wait": "100ms"})
    )
    settled = await broker.deliver(QueueName.DELIVERY, [job(1), job(2)])
    # Job 1 was cut off mid-attempt: deferred, with why.
    [(key, outputs)] = settled.completed
    assert key == "01J1.1/0"
    deferred = next(o for o in outputs if isinstance(o, Emit) and o.kind is EventKind.DEFERRED)
    assert deferred.event.results[0].reply.status == "4.4.1"
    # Job 2 never started: back on the delivery queue as it was.
    [back] = settled.outputs
    assert isinstance(back, Publish)
    assert (back.queue, back.items[0].queue_id, back.items[0].attempts) == (
        QueueName.DELIVERY,
        "01J2.1",
        0,
    )


async def test_a_one_job_batch_is_cut_off_and_sent_back_in_its_own_task():
    """A batch of one runs in the consumer's own task: the deadline's cancel
    of that task is taken back, and the outcome is still stored."""
    fake = FakeDeliverer()
    fake.gate = asyncio.Event()  # never set: whatever starts an attempt hangs
    service = delivery(fake, concurrency=1, attempt_timeout="200ms", shaping={"max_wait": "100ms"})
    broker = await start(service)
    # The one slot is taken, as by a sent job whose record is not durable yet.
    # (Not by a job under the same deadline: its cut-off would free the slot
    # a moment before the waiter's deadline, and the waiter would start.)
    await service.slots.acquire("")
    waiting = await broker.deliver(QueueName.DELIVERY, [job(2)])
    # Job 2 never got the slot: back in line as it was, and acked.
    assert fake.running == 0
    assert waiting.outcome == "acked"
    assert waiting.completed == []
    [back] = waiting.outputs
    assert isinstance(back, Publish)
    assert back.items[0].queue_id == "01J2.1"
    service.slots.release()
    # Job 1 gets the slot and hangs mid-attempt: cut off, deferred with why.
    cut_off = await broker.deliver(QueueName.DELIVERY, [job(1)])
    assert cut_off.outcome == "acked"
    [(key, outputs)] = cut_off.completed
    assert key == "01J1.1/0"
    deferred = next(o for o in outputs if isinstance(o, Emit) and o.kind is EventKind.DEFERRED)
    assert deferred.event.results[0].reply.status == "4.4.1"
    assert service.slots.free == 1


async def test_a_sent_job_keeps_its_slot_until_its_record_is_durable_or_its_batch_acked():
    """A crash before either would send it again: the slots bound that."""
    fake = FakeDeliverer()
    service = delivery(fake, concurrency=2)
    broker = await start(service)
    broker.hold_records = True
    slow = asyncio.Event()
    attempt = fake.attempt

    async def second_waits(work: pb.DeliveryJob, permit: object = None) -> list[RecipientOutcome]:
        if work.queue_id == "01J2.1":
            await slow.wait()
        return await attempt(work, permit)

    fake.attempt = second_waits  # type: ignore[method-assign]
    batch = asyncio.create_task(broker.deliver(QueueName.DELIVERY, [job(1), job(2)]))
    for _ in range(200):
        if broker.held_records:
            break
        await asyncio.sleep(0.001)
    assert [key for key, _ in broker.held_records] == ["01J1.1/0"]  # job 1 sent
    assert service.slots.free == 0  # ...and still in the window
    broker.release_records()
    for _ in range(3):  # the record's callback, then the slot's
        await asyncio.sleep(0)
    assert service.slots.free == 1  # its record is durable
    slow.set()
    settled = await batch
    assert settled.outcome == "acked"
    assert "01J2.1/0" not in broker.finished_keys  # record still held...
    assert service.slots.free == 2  # ...but the batch is acked


async def test_delivery_consumes_every_lane():
    service = delivery(FakeDeliverer())
    broker = await start(service)
    assert broker.consumes(QueueName.DELIVERY, "transactional")
    assert broker.consumes(QueueName.DELIVERY, "bulk")
    settled = await broker.deliver(QueueName.DELIVERY, [job(1, mail_class="bulk")])
    assert [key for key, _ in settled.completed] == ["01J1.1/0"]


async def test_a_transactional_job_is_not_held_back_by_bulk_jobs_waiting_for_slots():
    fake = FakeDeliverer()
    fake.gate = asyncio.Event()
    started: list[str] = []
    attempt = fake.attempt

    async def recording(work: pb.DeliveryJob, permit: object = None) -> list[RecipientOutcome]:
        started.append(work.mail_class or "transactional")
        return await attempt(work, permit)

    fake.attempt = recording  # type: ignore[method-assign]
    broker = await start(delivery(fake, concurrency=2))
    flood = asyncio.create_task(
        broker.deliver(QueueName.DELIVERY, [job(n, mail_class="bulk") for n in range(20)])
    )
    for _ in range(60):
        await asyncio.sleep(0)
    assert started == ["bulk", "bulk"]  # every slot taken, 18 bulk jobs waiting
    # To another destination: at the same one it would first wait at the
    # destination's gate, where transactional goes first too (test_gate.py).
    urgent_job = job(100)
    urgent_job.domain = "other.example"
    urgent = asyncio.create_task(broker.deliver(QueueName.DELIVERY, [urgent_job]))
    for _ in range(60):
        await asyncio.sleep(0)
    fake.gate.set()
    await asyncio.gather(flood, urgent)
    assert started.index("transactional") == 2  # the first slot to come free


async def test_a_job_that_never_got_a_slot_goes_back_to_its_own_lane():
    fake = FakeDeliverer()
    fake.gate = asyncio.Event()  # never set
    broker = await start(
        delivery(fake, concurrency=1, attempt_timeout="200ms", shaping={"max_wait": "100ms"})
    )
    settled = await broker.deliver(
        QueueName.DELIVERY, [job(1, mail_class="bulk"), job(2, mail_class="bulk")]
    )
    [back] = settled.outputs
    assert isinstance(back, Publish)
    assert (back.queue, back.lane, back.items[0].queue_id) == (QueueName.DELIVERY, "bulk", "01J2.1")


async def test_a_job_that_breaks_brings_its_batch_back_without_the_others():
    fake = FakeDeliverer()
    fake.fail = {"01J2.1"}
    broker = await start(delivery(fake))
    first = await broker.deliver(QueueName.DELIVERY, [job(1), job(2), job(3)])
    assert first.outcome == "requeued"
    assert sorted(key for key, _ in first.completed) == ["01J1.1/0", "01J3.1/0"]
    fake.fail.clear()
    again = await broker.deliver(
        QueueName.DELIVERY, [job(1), job(2), job(3)], redelivered=True, delivery_count=1
    )
    assert [key for key, _ in again.completed] == ["01J2.1/0"]


# --- bounce ------------------------------------------------------------------


def failed_event(mail_from: str, n: int = 1, notify: str | None = None) -> pb.DeliveryEvent:
    event = pb.DeliveryEvent(
        kind=pb.EVENT_KIND_FAILED,
        message_id="01F",
        queue_id=f"01F.{n}",
        domain=f"d{n}.example.net",
        mail_from=mail_from,
        results=[
            pb.RecipientResult(
                recipient=f"gone@d{n}.example.net",
                reply=pb.SmtpReply(code=550, status="5.1.1", text="no such user"),
                remote_mta="mx.example.net",
            )
        ],
        received_at=wire.timestamp(NOW),
        occurred_at=wire.timestamp(NOW),
        original_headers=b"Subject: hello\r\n",
    )
    if notify is not None:
        event.recipient_options.append(pb.RecipientOptions(notify=notify))
    return event


def bounce_service(window: str = "50ms") -> BounceService:
    return BounceService(settings(bounce={"dsn_window": window}), MemoryBroker())


def dsns(broker: MemoryBroker) -> list[pb.AcceptedMessage]:
    return [
        item
        for output in broker.stored
        if isinstance(output, Publish) and output.queue is QueueName.INBOUND
        for item in output.items
        if isinstance(item, pb.AcceptedMessage)
    ]


async def test_bounce_queues_a_dsn_to_the_sender_with_the_null_sender():
    broker = await start(bounce_service())
    settled = await broker.deliver(QueueName.BOUNCE, [failed_event("app@sender.test")])
    assert (settled.outcome, settled.outputs) == ("acked", [])  # the window stored it
    [notice] = dsns(broker)
    assert (notice.mail_from, list(notice.recipients)) == ("", ["app@sender.test"])
    assert notice.origin == pb.ORIGIN_DSN
    assert b"Final-Recipient: rfc822; gone@d1.example.net" in notice.content


async def test_the_failures_of_one_message_on_three_domains_become_one_dsn():
    broker = await start(bounce_service("200ms"))
    settled = await asyncio.gather(
        *(broker.deliver(QueueName.BOUNCE, [failed_event("app@sender.test", n)]) for n in (1, 2, 3))
    )
    assert [s.outcome for s in settled] == ["acked"] * 3
    [notice] = dsns(broker)
    for n in (1, 2, 3):
        assert f"Final-Recipient: rfc822; gone@d{n}.example.net".encode() in notice.content


async def test_no_event_is_released_before_its_dsn_is_stored():
    broker = await start(bounce_service())
    broker.fail_with = PublishError("the broker said no")
    settled = await asyncio.gather(
        *(broker.deliver(QueueName.BOUNCE, [failed_event("app@sender.test", n)]) for n in (1, 2))
    )
    assert [s.outcome for s in settled] == ["requeued", "requeued"]
    assert dsns(broker) == []


@pytest.mark.parametrize("kind", [pb.EVENT_KIND_DELIVERED, pb.EVENT_KIND_DEFERRED])
async def test_bounce_ignores_what_is_not_a_failure(kind):
    broker = await start(bounce_service("60s"))
    event = failed_event("app@sender.test")
    event.kind = kind
    settled = await asyncio.wait_for(broker.deliver(QueueName.BOUNCE, [event]), 1)
    assert (settled.outcome, settled.outputs, broker.stored) == ("acked", [], [])


@pytest.mark.parametrize(("mail_from", "notify"), [("", None), ("app@sender.test", "NEVER")])
async def test_what_needs_no_dsn_is_released_at_once(mail_from, notify):
    """The null sender, or NOTIFY=NEVER: nothing waits for the window."""
    broker = await start(bounce_service("60s"))
    event = failed_event(mail_from, notify=notify)
    settled = await asyncio.wait_for(broker.deliver(QueueName.BOUNCE, [event]), 1)
    assert (settled.outcome, broker.stored) == ("acked", [])


async def test_a_copy_of_a_job_under_way_here_waits_for_it_and_is_not_sent_again():
    """The queue service split a message twice (a crash between publish and ack):
    both copies reach this process at once; only one SMTP transaction goes out."""
    fake = FakeDeliverer()
    fake.gate = asyncio.Event()
    attempts: list[str] = []
    real = fake.attempt

    async def counting(job: pb.DeliveryJob, permit: object = None) -> list[RecipientOutcome]:
        attempts.append(job.queue_id)
        return await real(job, permit)

    fake.attempt = counting  # type: ignore[method-assign]
    broker = await start(delivery(fake, concurrency=1))
    twin = job(1)
    twin.may_repeat = True
    # Job 0 holds the one slot; job 1 and then its twin queue up for it.
    first = asyncio.create_task(broker.deliver(QueueName.DELIVERY, [job(0), job(1)]))
    for _ in range(10):
        await asyncio.sleep(0)
    second = asyncio.create_task(broker.deliver(QueueName.DELIVERY, [twin, job(3)]))
    for _ in range(20):
        await asyncio.sleep(0)
    fake.gate.set()
    await asyncio.gather(first, second)
    assert sorted(attempts) == ["01J0.1", "01J1.1", "01J3.1"]
