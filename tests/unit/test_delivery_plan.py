"""plan_report: the events an attempt yields, and the relayed notices NOTIFY=SUCCESS asks for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.broker import Emit, EventKind, Publish
from mailyard.delivery.outcome import RecipientOutcome
from mailyard.delivery.plan import plan_report
from mailyard.events import Quoting
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
OK = Reply(250, "2.0.0", "OK queued")


def job(notify: dict[str, str] | None = None) -> pb.DeliveryJob:
    recipients = ["a@example.net", "b@example.net", "c@example.net"]
    made = pb.DeliveryJob(
        message_id="01M",
        queue_id="01M.1",
        domain="example.net",
        mail_from="app@sender.test",
        recipients=recipients,
        content=b"Subject: s\r\n\r\nbody\r\n",
        received_at=wire.timestamp(NOW - timedelta(seconds=5)),
        expires_at=wire.timestamp(NOW + timedelta(days=5)),
    )
    if notify is not None:
        made.recipient_options.extend(
            pb.RecipientOptions(notify=notify.get(r, ""), orcpt=f"rfc822;{r.upper()}")
            for r in recipients
        )
    return made


def delivered(*, dsn: bool, reply: Reply = OK) -> list[RecipientOutcome]:
    return [
        RecipientOutcome(r, reply, "mx.example.net", 0.1, None, dsn)
        for r in ("a@example.net", "b@example.net", "c@example.net")
    ]


def emitted(outputs, kind: EventKind) -> list[pb.DeliveryEvent]:
    return [o.event for o in outputs if isinstance(o, Emit) and o.kind is kind]


def plan(j: pb.DeliveryJob, outcomes: list[RecipientOutcome]):
    return plan_report(j, outcomes, now=NOW, quoting=Quoting())


def test_nobody_asked_no_relayed_event():
    """The common case costs nothing more than the delivered event."""
    outputs = plan(job(), delivered(dsn=False))
    assert [o.kind for o in outputs if isinstance(o, Emit)] == [EventKind.DELIVERED]


def test_notify_success_to_a_next_hop_without_dsn_is_ours_to_answer():
    outputs = plan(
        job({"a@example.net": "SUCCESS", "b@example.net": "FAILURE"}), delivered(dsn=False)
    )
    [notice] = emitted(outputs, EventKind.RELAYED)
    assert notice.kind == pb.EVENT_KIND_RELAYED
    assert [r.recipient for r in notice.results] == ["a@example.net"]
    assert [o.orcpt for o in notice.recipient_options] == ["rfc822;A@EXAMPLE.NET"]
    assert notice.original_headers == b"Subject: s\r\n"
    [event] = emitted(outputs, EventKind.DELIVERED)
    assert [r.next_hop_dsn for r in event.results] == [False, False, False]


def test_a_next_hop_that_offers_dsn_answers_notify_success_itself():
    outputs = plan(job({"a@example.net": "SUCCESS,FAILURE"}), delivered(dsn=True))
    assert emitted(outputs, EventKind.RELAYED) == []
    [event] = emitted(outputs, EventKind.DELIVERED)
    assert [r.next_hop_dsn for r in event.results] == [True, True, True]


@pytest.mark.parametrize("reply", [Reply(550, "5.1.1", "no"), Reply(451, "4.7.1", "later")])
def test_only_a_delivery_is_relayed(reply):
    outputs = plan(job({"a@example.net": "SUCCESS"}), delivered(dsn=False, reply=reply))
    assert emitted(outputs, EventKind.RELAYED) == []
    for event in emitted(outputs, EventKind.FAILED) + emitted(outputs, EventKind.DEFERRED):
        assert not any(r.next_hop_dsn for r in event.results)
    if reply.is_transient:
        [again] = [o for o in outputs if isinstance(o, Publish)]
        assert list(again.items[0].recipients) == [
            "a@example.net",
            "b@example.net",
            "c@example.net",
        ]


def test_never_and_the_default_are_not_relayed():
    outputs = plan(job({"a@example.net": "NEVER", "b@example.net": ""}), delivered(dsn=False))
    assert emitted(outputs, EventKind.RELAYED) == []


def nobody_hears(*kinds: EventKind):
    return lambda kind: kind not in kinds


def test_an_event_nobody_hears_is_left_out():
    outputs = plan_report(
        job(),
        delivered(dsn=False),
        now=NOW,
        quoting=Quoting(),
        hears=nobody_hears(EventKind.DELIVERED),
    )
    assert outputs == []


def test_a_notice_of_success_is_made_though_nobody_hears_delivered():
    outputs = plan_report(
        job({"a@example.net": "SUCCESS"}),
        delivered(dsn=False),
        now=NOW,
        quoting=Quoting(),
        hears=nobody_hears(EventKind.DELIVERED),
    )
    assert [o.kind for o in outputs if isinstance(o, Emit)] == [EventKind.RELAYED]
    [notice] = emitted(outputs, EventKind.RELAYED)
    assert [r.recipient for r in notice.results] == ["a@example.net"]


def test_deferred_recipients_go_round_again_though_nobody_hears_deferred():
    later = Reply(451, "4.7.1", "later")
    outputs = plan_report(
        job(),
        delivered(dsn=False, reply=later),
        now=NOW,
        quoting=Quoting(),
        hears=nobody_hears(EventKind.DEFERRED),
    )
    assert emitted(outputs, EventKind.DEFERRED) == []
    [again] = [o for o in outputs if isinstance(o, Publish)]
    assert len(again.items[0].recipients) == 3
    assert [r.reply.code for r in again.items[0].last_results] == [451, 451, 451]


def test_a_deferred_job_carries_when_its_attempt_ended():
    """The queue counts the retry's wait from it (a deferral planned twice
    after a crash must come out the same), so it is this attempt's, not the
    earliest moment the job it came from could start."""
    first = job()
    first.not_before.CopyFrom(wire.timestamp(NOW - timedelta(hours=1)))
    first.may_repeat = True
    outputs = plan(first, delivered(dsn=False, reply=Reply(451, "4.7.1", "later")))
    [again] = [o for o in outputs if isinstance(o, Publish)]
    assert wire.to_datetime(again.items[0].not_before) == NOW
    assert again.items[0].attempts == 1
    assert not again.items[0].may_repeat  # a new attempt: whether it repeats is the queue's to say
