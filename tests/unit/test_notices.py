"""Events → notices: one DSN per message and action, for the recipients who asked (pure)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from mailyard import wire
from mailyard.bounce.notice import Action, group_key, notice_of, wanted
from mailyard.bounce.plan import plan_dsn
from mailyard.broker import Publish, QueueName
from mailyard.v1 import message_pb2 as pb

RECEIVED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
NOW = datetime(2024, 1, 2, 3, 5, 0, tzinfo=UTC)


def event(
    n: int,
    kind: int = pb.EVENT_KIND_FAILED,
    *,
    recipients: tuple[str, ...] | None = None,
    notify: tuple[str, ...] | None = None,
    mail_from: str = "app@sender.test",
    message_id: str = "01MSG",
) -> pb.DeliveryEvent:
    domain = f"d{n}.test"
    recipients = recipients or (f"r{n}@{domain}",)
    code = {pb.EVENT_KIND_RELAYED: 250, pb.EVENT_KIND_DELAYED: 451}.get(kind, 550)
    made = pb.DeliveryEvent(
        kind=kind,
        message_id=message_id,
        queue_id=f"{message_id}.{n}",
        domain=domain,
        mail_from=mail_from,
        results=[
            pb.RecipientResult(
                recipient=r,
                reply=pb.SmtpReply(code=code, status=f"{code // 100}.1.1", text="no"),
                remote_mta=f"mx.{domain}",
            )
            for r in recipients
        ],
        received_at=wire.timestamp(RECEIVED),
        occurred_at=wire.timestamp(NOW),
        attempts=n,
        original_headers=b"Subject: three domains\r\n",
        options=pb.MessageOptions(envid="ENV1"),
    )
    if notify is not None:
        made.recipient_options.extend(
            pb.RecipientOptions(notify=v, orcpt=f"rfc822;{r.upper()}")
            for r, v in zip(recipients, notify, strict=True)
        )
    return made


def plan(events):
    return plan_dsn(events, reporting_mta="mx.test", dsn_id="DSN9", now=NOW)


def test_three_domains_that_fail_together_make_one_dsn_with_three_blocks():
    result = plan([event(1), event(2), event(3)])
    [publish] = result.outputs
    assert isinstance(publish, Publish)
    assert publish.queue is QueueName.INBOUND
    [notice] = publish.items
    assert (notice.mail_from, list(notice.recipients)) == ("", ["app@sender.test"])
    assert notice.origin == pb.ORIGIN_DSN
    dsn = email.message_from_bytes(notice.content, policy=email.policy.default)
    per_message, *blocks = list(dsn.iter_parts())[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "ENV1"
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; r1@d1.test",
        "rfc822; r2@d2.test",
        "rfc822; r3@d3.test",
    ]
    assert [b["Remote-MTA"] for b in blocks] == [
        "dns; mx.d1.test",
        "dns; mx.d2.test",
        "dns; mx.d3.test",
    ]
    assert result.kind == "failed"


def test_failed_and_expired_of_one_message_are_one_failed_notice():
    assert (
        group_key(event(1))
        == group_key(event(2, pb.EVENT_KIND_EXPIRED))
        == ("01MSG", Action.FAILED)
    )
    notice = notice_of([event(1), event(2, pb.EVENT_KIND_EXPIRED)])
    assert notice is not None
    assert [r.expired for r in notice.recipients] == [False, True]


def test_each_action_and_each_message_is_a_notice_of_its_own():
    keys = {
        group_key(event(1)),
        group_key(event(1, pb.EVENT_KIND_DELAYED)),
        group_key(event(1, pb.EVENT_KIND_RELAYED)),
        group_key(event(1, message_id="01OTHER")),
    }
    assert len(keys) == 4
    assert group_key(event(1, pb.EVENT_KIND_DELIVERED)) is None
    with pytest.raises(ValueError, match="one action"):
        notice_of([event(1), event(2, pb.EVENT_KIND_DELAYED)])


def test_a_recipient_reported_twice_is_one_block():
    """A redelivered event can meet its own first copy in the window."""
    notice = notice_of([event(1), event(1), event(2)])
    assert notice is not None
    assert [r.result.recipient for r in notice.recipients] == ["r1@d1.test", "r2@d2.test"]


@pytest.mark.parametrize(
    ("kind", "notify", "reported"),
    [
        (pb.EVENT_KIND_FAILED, ("", "NEVER", "FAILURE"), ["a@x.test", "c@x.test"]),
        (pb.EVENT_KIND_FAILED, ("SUCCESS", "DELAY", "SUCCESS,DELAY"), []),
        (pb.EVENT_KIND_EXPIRED, ("NEVER", "FAILURE,DELAY", ""), ["b@x.test", "c@x.test"]),
        (pb.EVENT_KIND_DELAYED, ("", "FAILURE", "DELAY"), ["a@x.test", "c@x.test"]),
        (pb.EVENT_KIND_RELAYED, ("", "SUCCESS", "NEVER"), ["b@x.test"]),
    ],
)
def test_only_the_recipients_who_asked_are_reported(kind, notify, reported):
    ev = event(1, kind, recipients=("a@x.test", "b@x.test", "c@x.test"), notify=notify)
    notice = notice_of([ev])
    assert wanted(ev) == len(reported)
    if not reported:
        assert notice is None
        return
    assert notice is not None
    assert [r.result.recipient for r in notice.recipients] == reported
    assert [r.orcpt for r in notice.recipients] == [f"rfc822;{r.upper()}" for r in reported]


def test_notify_never_gets_no_dsn_at_all():
    ev = event(1, recipients=("a@x.test",), notify=("NEVER",))
    result = plan([ev])
    assert (result.outputs, result.skipped) == ([], "not_requested")


def test_never_a_dsn_to_the_null_sender():
    result = plan([event(1, mail_from="")])
    assert (result.outputs, result.skipped) == ([], "null_sender")


def test_kinds_that_make_no_dsn():
    result = plan([event(1, pb.EVENT_KIND_DELIVERED)])
    assert (result.outputs, result.skipped) == ([], "not_ours")


def test_ret_full_content_is_only_for_the_failed_notice():
    ev = event(1, pb.EVENT_KIND_DELAYED)
    ev.original_content = b"Subject: x\r\n\r\nbody\r\n"  # a producer should not, but still
    ev.options.ret = "FULL"
    notice = notice_of([ev])
    assert notice is not None
    assert notice.original_content == b""
    assert not notice.withheld
