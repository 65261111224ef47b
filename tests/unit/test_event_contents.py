"""What each event kind carries: a DSN's needs on the DSN kinds, nothing on the hot path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.broker import EventKind
from mailyard.events import Quoting, event_for
from mailyard.v1 import message_pb2 as pb

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
CONTENT = b"Subject: hello\r\nFrom: a@sender.test\r\n\r\nthe body\r\n"


def job(ret: str = "", *, with_requests: bool = True) -> pb.DeliveryJob:
    made = pb.DeliveryJob(
        message_id="01M",
        queue_id="01M.1",
        domain="example.net",
        mail_from="a@sender.test",
        recipients=["x@example.net", "y@example.net", "z@example.net"],
        content=CONTENT,
        received_at=wire.timestamp(NOW - timedelta(hours=1)),
        expires_at=wire.timestamp(NOW + timedelta(days=4)),
        options=pb.MessageOptions(ret=ret, envid="Env+2BId"),
    )
    if with_requests:
        made.recipient_options.extend(
            [
                pb.RecipientOptions(notify="NEVER"),
                pb.RecipientOptions(),
                pb.RecipientOptions(notify="SUCCESS", orcpt="rfc822;Z@Example.NET"),
            ]
        )
    return made


def results(*recipients: str) -> list[pb.RecipientResult]:
    return [
        pb.RecipientResult(recipient=r, reply=pb.SmtpReply(code=550, status="5.1.1", text="no"))
        for r in recipients
    ]


@pytest.mark.parametrize("kind", [EventKind.DELIVERED, EventKind.DEFERRED])
def test_events_nobody_bounces_carry_nothing_more(kind):
    event = event_for(kind, job("FULL"), results("x@example.net"), now=NOW)
    assert event.original_headers == b""
    assert event.original_content == b""
    assert not event.HasField("options")
    assert list(event.recipient_options) == []


@pytest.mark.parametrize(
    "kind", [EventKind.FAILED, EventKind.EXPIRED, EventKind.DELAYED, EventKind.RELAYED]
)
def test_dsn_events_carry_the_headers_and_the_requests_of_their_recipients(kind):
    event = event_for(kind, job(), results("z@example.net", "x@example.net"), now=NOW)
    assert event.original_headers == b"Subject: hello\r\nFrom: a@sender.test\r\n"
    assert event.options.envid == "Env+2BId"
    # In the order of the results, not of the job.
    assert [(o.notify, o.orcpt) for o in event.recipient_options] == [
        ("SUCCESS", "rfc822;Z@Example.NET"),
        ("NEVER", ""),
    ]


def test_no_requests_no_list():
    event = event_for(EventKind.FAILED, job(with_requests=False), results("y@example.net"), now=NOW)
    assert list(event.recipient_options) == []


@pytest.mark.parametrize(
    ("kind", "ret", "carried"),
    [
        (EventKind.FAILED, "FULL", True),
        (EventKind.EXPIRED, "FULL", True),
        (EventKind.DELAYED, "FULL", False),  # RFC 3461 §4.3: only a failed DSN returns it
        (EventKind.RELAYED, "FULL", False),
        (EventKind.FAILED, "HDRS", False),
        (EventKind.FAILED, "", False),
    ],
)
def test_only_a_failure_of_a_ret_full_message_carries_the_message(kind, ret, carried):
    event = event_for(kind, job(ret), results("y@example.net"), now=NOW)
    assert event.original_content == (CONTENT if carried else b"")


def test_a_message_over_the_limit_is_not_carried():
    small = Quoting(headers=1024, message=len(CONTENT) - 1)
    event = event_for(
        EventKind.FAILED, job("FULL"), results("y@example.net"), now=NOW, quoting=small
    )
    assert event.original_content == b""
    assert event.original_headers  # the headers still are
    exact = Quoting(headers=1024, message=len(CONTENT))
    event = event_for(
        EventKind.FAILED, job("FULL"), results("y@example.net"), now=NOW, quoting=exact
    )
    assert event.original_content == CONTENT


def test_a_delayed_event_says_when_the_queue_gives_up():
    event = event_for(EventKind.DELAYED, job(), results("y@example.net"), now=NOW)
    assert wire.to_datetime(event.expires_at) == NOW + timedelta(days=4)
    failed = event_for(EventKind.FAILED, job(), results("y@example.net"), now=NOW)
    assert not failed.HasField("expires_at")


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_of_a_job_names_the_message_s_class(kind):
    bulk = job()
    bulk.mail_class = "bulk"
    assert event_for(kind, bulk, results("x@example.net"), now=NOW).mail_class == "bulk"
    # A job from before classes was transactional.
    assert event_for(kind, job(), results("x@example.net"), now=NOW).mail_class == "transactional"
