"""queue.delay_warning: a deferral that crosses it warns the sender once (RFC 3464 §2.3.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.broker import Emit, EventKind, Publish
from mailyard.events import Quoting
from mailyard.queue.plan import plan_deferral
from mailyard.queue.schedule import delay_warning_due
from mailyard.v1 import message_pb2 as pb

ACCEPTED = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
WARN = timedelta(hours=4)
LADDER = [timedelta(minutes=30)]


def deferred(*, notify: list[str] | None = None, warned: bool = False) -> pb.DeliveryJob:
    recipients = ["a@example.net", "b@example.net"]
    job = pb.DeliveryJob(
        message_id="01M",
        queue_id="01M.1",
        domain="example.net",
        mail_from="app@sender.test",
        recipients=recipients,
        content=b"Subject: late\r\n\r\nbody\r\n",
        received_at=wire.timestamp(ACCEPTED),
        expires_at=wire.timestamp(ACCEPTED + timedelta(days=5)),
        attempts=3,
        delay_warned=warned,
        options=pb.MessageOptions(envid="E1"),
        last_results=[
            pb.RecipientResult(
                recipient=r,
                reply=pb.SmtpReply(code=451, status="4.7.1", text="greylisted"),
                remote_mta="mx.example.net",
                bounce_class="Greylisted",
            )
            for r in recipients
        ],
    )
    if notify is not None:
        job.recipient_options.extend(pb.RecipientOptions(notify=n) for n in notify)
    return job


def plan(job: pb.DeliveryJob, age: timedelta, warning: timedelta | None = WARN):
    return plan_deferral(
        job,
        now=ACCEPTED + age,
        retry_delays=LADDER,
        quoting=Quoting(),
        delay_warning=warning,
    )


def delayed(outputs) -> list[pb.DeliveryEvent]:
    return [o.event for o in outputs if isinstance(o, Emit) and o.kind is EventKind.DELAYED]


def retried(outputs) -> pb.DeliveryJob:
    [publish] = [o for o in outputs if isinstance(o, Publish)]
    return publish.items[0]


@pytest.mark.parametrize(
    ("age", "warned", "setting", "due"),
    [
        (timedelta(hours=3, minutes=59), False, WARN, False),
        (timedelta(hours=4), False, WARN, True),
        (timedelta(hours=9), False, WARN, True),
        (timedelta(hours=9), True, WARN, False),  # warned before: never again
        (timedelta(days=3), False, None, False),  # off by default
    ],
)
def test_when_a_warning_is_due(age, warned, setting, due):
    assert (
        delay_warning_due(
            received_at=ACCEPTED, now=ACCEPTED + age, delay_warning=setting, warned=warned
        )
        is due
    )


def test_the_deferral_that_crosses_it_warns_and_marks_the_job():
    result = plan(deferred(), timedelta(hours=5))
    [event] = delayed(result.outputs)
    assert event.kind == pb.EVENT_KIND_DELAYED
    assert [r.recipient for r in event.results] == ["a@example.net", "b@example.net"]
    assert event.results[0].reply.text == "greylisted"  # what the last attempt heard
    assert event.options.envid == "E1"
    assert wire.to_datetime(event.expires_at) == ACCEPTED + timedelta(days=5)
    assert event.original_headers == b"Subject: late\r\n"
    assert retried(result.outputs).delay_warned
    assert result.warned == 2


def test_a_later_deferral_does_not_warn_again():
    first = plan(deferred(), timedelta(hours=5))
    again = retried(first.outputs)
    again.attempts += 1
    second = plan(again, timedelta(hours=6))
    assert delayed(second.outputs) == []
    assert retried(second.outputs).delay_warned


def test_before_the_warning_time_nothing_is_said_or_marked():
    result = plan(deferred(), timedelta(hours=1))
    assert delayed(result.outputs) == []
    assert not retried(result.outputs).delay_warned


@pytest.mark.parametrize(
    ("notify", "warned"),
    [
        (["", "DELAY"], ["a@example.net", "b@example.net"]),  # the default asks for delays
        (["NEVER", "FAILURE,DELAY"], ["b@example.net"]),
        (["FAILURE", "SUCCESS,FAILURE"], []),  # no DELAY: no warning
        (["NEVER", "NEVER"], []),
    ],
)
def test_only_recipients_whose_notify_allows_delays_are_warned(notify, warned):
    result = plan(deferred(notify=notify), timedelta(hours=5))
    events = delayed(result.outputs)
    assert [r.recipient for e in events for r in e.results] == warned
    # Decided either way: a later deferral does not ask again.
    assert retried(result.outputs).delay_warned


def test_an_expiry_is_a_failure_not_a_delay():
    job = deferred()
    result = plan(job, timedelta(days=6))
    assert delayed(result.outputs) == []
    assert [o.kind for o in result.outputs if isinstance(o, Emit)] == [EventKind.EXPIRED]


def test_a_dsn_that_is_delayed_warns_nobody():
    """The null sender gets no notices (RFC 3461 §6.2): no event to make one of."""
    job = deferred()
    job.mail_from = ""
    result = plan(job, timedelta(hours=5))
    assert delayed(result.outputs) == []
    assert retried(result.outputs).delay_warned
