"""build_dsn: RFC 3464 delivery status notifications, read back with the stdlib parser."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from mailyard import wire
from mailyard.bounce.dsn import build_dsn, diagnostic_code, dsn_status
from mailyard.v1 import message_pb2 as pb

RECEIVED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
OCCURRED = datetime(2024, 1, 2, 4, 0, 0, tzinfo=UTC)
NOW = datetime(2024, 1, 3, 0, 0, 0, tzinfo=UTC)
ORIGINAL_HEADERS = (
    b"Received: from client.example ([192.0.2.7])\r\n"
    b"From: Sender <sender@example.com>\r\n"
    b"To: a@example.net\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <orig-1@example.com>\r\n"
)


def result(recipient, code, status, text, remote_mta=""):
    return pb.RecipientResult(
        recipient=recipient,
        reply=pb.SmtpReply(code=code, status=status, text=text),
        remote_mta=remote_mta,
    )


def event(kind=pb.EVENT_KIND_FAILED, results=None, headers=ORIGINAL_HEADERS):
    if results is None:
        results = [
            result("a@example.net", 550, "5.1.1", "No such user", "mx.example.net"),
            result("b@example.net", 554, "", "Host or domain name not found"),
        ]
    return pb.DeliveryEvent(
        kind=kind,
        message_id="01MSG",
        queue_id="01MSG.1",
        domain="example.net",
        mail_from="sender@example.com",
        results=results,
        received_at=wire.timestamp(RECEIVED),
        occurred_at=wire.timestamp(OCCURRED),
        attempts=3,
        original_headers=headers,
    )


def build(ev=None) -> bytes:
    return build_dsn(ev or event(), reporting_mta="mx.test", dsn_id="DSN1", now=NOW)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(msg: EmailMessage) -> list[EmailMessage]:
    return list(msg.iter_parts())


def status_blocks(msg: EmailMessage) -> list[EmailMessage]:
    return parts(msg)[1].get_payload()


def test_is_a_multipart_report_with_three_parts():
    msg = parse(build())
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert msg.defects == []


def test_top_level_headers():
    raw = build()
    msg = parse(raw)
    assert b"\r\nTo: <sender@example.com>\r\n" in raw
    assert [a.addr_spec for a in msg["To"].addresses] == ["sender@example.com"]
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.test>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Message-ID"] == "<DSN1@mx.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert parsedate_to_datetime(msg["Date"]) == NOW


def test_every_line_ends_in_crlf():
    raw = build()
    assert raw.endswith(b"\r\n")
    for line in raw.split(b"\r\n"):
        assert b"\n" not in line
        assert b"\r" not in line


def test_per_message_fields():
    per_message = status_blocks(parse(build()))[0]
    assert per_message["Reporting-MTA"] == "dns; mx.test"
    assert per_message["X-Mailyard-Queue-ID"] == "01MSG.1"
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == RECEIVED
    assert "Final-Recipient" not in per_message


def test_per_recipient_fields_for_a_remote_reply():
    block = status_blocks(parse(build()))[1]
    assert block["Final-Recipient"] == "rfc822; a@example.net"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert block["Remote-MTA"] == "dns; mx.example.net"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert parsedate_to_datetime(block["Last-Attempt-Date"]) == OCCURRED


def test_per_recipient_fields_for_our_own_verdict():
    block = status_blocks(parse(build()))[2]
    assert block["Final-Recipient"] == "rfc822; b@example.net"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.0.0"  # derived from the code's class
    assert "Remote-MTA" not in block
    assert block["Diagnostic-Code"] == "X-Mailyard; 554 Host or domain name not found"


def test_one_block_per_recipient_in_order():
    results = [result(f"r{i}@example.net", 550, "5.1.1", "unknown", "mx") for i in range(5)]
    blocks = status_blocks(parse(build(event(results=results))))
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        f"rfc822; r{i}@example.net" for i in range(5)
    ]


def test_expired_event_has_status_4_4_7():
    ev = event(
        kind=pb.EVENT_KIND_EXPIRED,
        results=[
            result("a@example.net", 451, "4.7.1", "Greylisted", "mx.example.net"),
            result("b@example.net", 451, "4.4.7", "delivery time expired"),
        ],
    )
    msg = parse(build(ev))
    blocks = status_blocks(msg)
    assert [b["Status"] for b in blocks[1:]] == ["4.4.7", "4.4.7"]
    assert [b["Action"] for b in blocks[1:]] == ["failed", "failed"]
    assert blocks[1]["Diagnostic-Code"] == "smtp; 451 4.7.1 Greylisted"
    assert blocks[2]["Diagnostic-Code"] == "X-Mailyard; 451 4.4.7 delivery time expired"
    human = parts(msg)[0].get_content()
    assert "tried 3 times and has given up" in human


def test_human_readable_part():
    human = parts(parse(build()))[0].get_content()
    assert "This is the mail system at host mx.test." in human
    assert "queue id 01MSG.1" in human
    assert "the error is permanent" in human
    assert "<a@example.net> (said mx.example.net): 550 5.1.1 No such user" in human
    assert "<b@example.net>: 554 Host or domain name not found" in human


def test_original_headers_are_quoted():
    quoted = parts(parse(build()))[2]
    assert quoted.get_payload().replace("\r\n", "\n") == ORIGINAL_HEADERS.decode().replace(
        "\r\n", "\n"
    )
    assert ORIGINAL_HEADERS in build()


def test_non_ascii_original_headers_are_replaced():
    headers = b"Subject: caf\xc3\xa9\r\nFrom: a@example.com\r\n"
    raw = build(event(headers=headers))
    assert b"Subject: caf??\r\nFrom: a@example.com\r\n" in raw
    assert raw.isascii()


@pytest.mark.parametrize(
    ("kind", "code", "status", "expected"),
    [
        (pb.EVENT_KIND_FAILED, 550, "5.1.1", "5.1.1"),
        (pb.EVENT_KIND_FAILED, 550, "", "5.0.0"),
        (pb.EVENT_KIND_FAILED, 554, "bogus", "5.0.0"),
        (pb.EVENT_KIND_FAILED, 451, "", "4.0.0"),
        (pb.EVENT_KIND_EXPIRED, 550, "5.1.1", "4.4.7"),
        (pb.EVENT_KIND_EXPIRED, 451, "", "4.4.7"),
    ],
)
def test_dsn_status(kind, code, status, expected):
    assert dsn_status(kind, pb.SmtpReply(code=code, status=status, text="x")) == expected


def test_diagnostic_code():
    assert diagnostic_code(result("a@x", 550, "5.1.1", "No", "mx.x")) == "smtp; 550 5.1.1 No"
    assert diagnostic_code(result("a@x", 550, "", "No", "mx.x")) == "smtp; 550 No"
    assert diagnostic_code(result("a@x", 554, "5.4.4", "no MX")) == "X-Mailyard; 554 5.4.4 no MX"


def test_the_bounce_class_is_named_for_people_and_for_programs():
    classified = result("a@example.net", 550, "5.1.1", "No such user", "mx.example.net")
    classified.bounce_class = "InvalidRecipient"
    plain = result("b@example.net", 554, "", "odd")
    msg = parse(build(event(results=[classified, plain])))
    blocks = status_blocks(msg)
    assert blocks[1]["X-Mailyard-Bounce-Class"] == "InvalidRecipient"
    assert "X-Mailyard-Bounce-Class" not in blocks[2]
    human = parts(msg)[0].get_content()
    assert "No such user\r\n    class: InvalidRecipient\r\n<b@example.net>" in human
