"""VERP return paths out, asynchronous bounces and complaints back, on the real pipeline.

With ``bounce.return_path_domain`` set, the sink sees each recipient's mail
come from its own signed VERP address; a bounce or an ARF report sent back
through ingress SMTP to that address becomes a ``bounced`` or ``complained``
event on the events exchange (bound like an outside subscriber would bind);
a forged address changes nothing but a counter.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailyard import verp
from mailyard.v1 import message_pb2 as pb
from tests.integration.test_events import subscribe, take
from tests.support.pipeline import Pipeline, message, wait_until

SECRET = b"integration-verp-secret-0123456789"
DOMAIN = "bounces.test"


def start(pipeline_factory, tmp_path: Path) -> Pipeline:
    secret = tmp_path / "verp-secret"
    secret.write_bytes(SECRET + b"\n")
    return pipeline_factory(
        overrides={"bounce": {"return_path_domain": DOMAIN, "verp_secret_file": str(secret)}}
    )


def dsn_for(delivered_content: bytes, return_path: str, recipient: str) -> bytes:
    """A Postfix-style RFC 3464 bounce quoting the header section that was delivered."""
    headers = delivered_content.split(b"\r\n\r\n", 1)[0].decode()
    return (
        "From: MAILER-DAEMON@mx.alpha.test (Mail Delivery System)\r\n"
        f"To: <{return_path}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        f"<{recipient}>: mailbox unavailable\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.alpha.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: "
        "User unknown in local recipient table\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{return_path}>\r\n{headers}\r\n"
        "\r\n--B--\r\n"
    ).encode()


def arf_for(delivered_content: bytes, return_path: str) -> bytes:
    """A Yahoo-style ARF report (RFC 5965) with the original attached, recipient redacted."""
    headers = delivered_content.split(b"\r\n\r\n", 1)[0].decode()
    headers = "\r\n".join(
        "To: redacted@alpha.test" if line.startswith("To:") else line
        for line in headers.split("\r\n")
    )
    return (
        "From: feedback@fbl.alpha.test\r\nTo: fbl@bounces.test\r\nSubject: FW: report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
        "\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "\r\n--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: AlphaFBL/1.0\r\nVersion: 1\r\n"
        "\r\n--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{return_path}>\r\n{headers}\r\n\r\nThe body.\r\n"
        "\r\n--F--\r\n"
    ).encode()


def events_of(queue: str | None, seen: list[pb.DeliveryEvent]) -> list[pb.DeliveryEvent]:
    if queue is not None:
        seen.extend(take(queue))
    return seen


def test_verp_out_and_an_async_bounce_back_is_a_bounced_event(pipeline_factory, tmp_path):
    pipeline = start(pipeline_factory, tmp_path)
    events = None if pipeline.embedded else subscribe(pipeline.prefix, ["bounced", "complained"])
    recipients = ["jane@alpha.test", "bob@alpha.test"]
    assert pipeline.send("app@sender.test", recipients, message("verp"))[0] == 250

    # One transaction per recipient, each from its own signed return path.
    delivered = pipeline.sink.wait_for(lambda m: len(m) == 2, 20, "two deliveries")
    keys = verp.Keyring((SECRET,))
    by_recipient = {}
    for received in delivered:
        [recipient] = received.recipients
        local, _, domain = received.mail_from.rpartition("@")
        assert domain == DOMAIN
        assert verp.parse(keys, local) == verp.Verp(recipient, None, None, 0)
        assert received.content.startswith(b"X-Mailyard-Envelope-From: <app@sender.test>\r\n")
        by_recipient[recipient] = received
    assert sorted(by_recipient) == sorted(recipients)

    jane = by_recipient["jane@alpha.test"]
    bounce = dsn_for(jane.content, jane.mail_from, "jane@alpha.test")
    assert pipeline.send("", [jane.mail_from], bounce)[0] == 250

    bounce_process = pipeline.process("bounce")
    bounce_process.wait_metric("mailyard_bounce_async_total", 1, 20, result="bounced")
    if events is not None:
        seen: list[pb.DeliveryEvent] = []
        wait_until(lambda: events_of(events, seen), 20, "the bounced event")
        [event] = seen
        assert event.kind == pb.EVENT_KIND_BOUNCED
        [result] = event.results
        assert result.recipient == "jane@alpha.test"
        assert result.bounce_class == "InvalidRecipient"
        assert (result.reply.code, result.reply.status) == (550, "5.1.1")
        assert event.mail_from == "app@sender.test"  # for entries scoped to the sender
        assert event.verified
        assert event.message_id  # from our Received: header, quoted in the bounce
    # No DSN went anywhere for it: a report is never answered.
    time.sleep(1)
    assert len(pipeline.sink.received()) == 2


def test_a_forged_verp_address_changes_nothing_but_a_counter(pipeline_factory, tmp_path):
    pipeline = start(pipeline_factory, tmp_path)
    events = None if pipeline.embedded else subscribe(pipeline.prefix, ["bounced", "complained"])
    # Shaped like ours, signed with a secret that is not.
    forged = verp.return_path(
        verp.Keyring((b"somebody-else-secret-0123456789",)),
        domain=DOMAIN,
        message_id="01JAXW3M6B7Q8R9S0T1V2W3X4Y",
        recipient="victim@alpha.test",
    )
    content = message("orig", sender="app@sender.test").replace(
        b"someone@alpha.test", b"victim@alpha.test"
    )
    assert pipeline.send("", [forged], dsn_for(content, forged, "victim@alpha.test"))[0] == 250
    bounce_process = pipeline.process("bounce")
    bounce_process.wait_metric("mailyard_bounce_async_total", 1, 20, result="forged")
    assert bounce_process.metric("mailyard_bounce_async_total", result="bounced") == 0
    if events is not None:
        time.sleep(1)  # the events, had there been any, were stored before the count
        assert take(events) == []


@pytest.mark.adapters("rabbitmq")  # the event is what this is about; subscribers bind queues
def test_an_arf_complaint_is_a_complained_event_with_the_original_recipient(
    pipeline_factory, tmp_path
):
    pipeline = start(pipeline_factory, tmp_path)
    events = subscribe(pipeline.prefix, ["bounced", "complained"])
    assert pipeline.send("app@sender.test", ["pat@alpha.test"], message("deals"))[0] == 250
    [delivered] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the delivery")
    report = arf_for(delivered.content, delivered.mail_from)
    assert pipeline.send("", ["fbl@bounces.test"], report)[0] == 250

    seen: list[pb.DeliveryEvent] = []
    wait_until(lambda: events_of(events, seen), 20, "the complained event")
    [event] = seen
    assert event.kind == pb.EVENT_KIND_COMPLAINED
    assert [r.recipient for r in event.results] == ["pat@alpha.test"]  # despite the redaction
    assert event.feedback_type == "abuse"
    assert event.verified
    assert event.mail_from == "app@sender.test"
    assert event.reporter == "AlphaFBL/1.0"
    bounce_process = pipeline.process("bounce")
    assert bounce_process.metric("mailyard_bounce_complaints_total", feedback_type="abuse") == 1
