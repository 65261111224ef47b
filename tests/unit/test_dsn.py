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
from mailyard.bounce.notice import notice_of
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


def build(ev=None, *more) -> bytes:
    notice = notice_of([ev or event(), *more])
    assert notice is not None
    return build_dsn(notice, reporting_mta="mx.test", dsn_id="DSN1", now=NOW)


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
    # The id the client's 250 named ("queued as ..."), not one destination's.
    assert per_message["X-Mailyard-Queue-ID"] == "01MSG"
    assert "Original-Envelope-Id" not in per_message  # no ENVID given
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
    assert "queue id 01MSG" in human
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


# --- what the sender asked for (RFC 3461) -------------------------------------

FULL_MESSAGE = (
    ORIGINAL_HEADERS + b"\r\nThe quarterly figures are attached.\r\n.a line with a dot\r\n"
)


def asking(ev, *, ret="", envid="", requests=None):
    """``ev`` with the sender's DSN requests: (notify, orcpt) per result."""
    ev.options.CopyFrom(pb.MessageOptions(ret=ret, envid=envid))
    if requests is not None:
        ev.recipient_options.extend(pb.RecipientOptions(notify=n, orcpt=o) for n, o in requests)
    return ev


def test_envid_and_orcpt_are_echoed_decoded_in_their_own_case():
    """RFC 3461 §6.3 (a), (d); RFC 3464 §2.2.1: the envelope id is case-sensitive."""
    ev = asking(
        event(),
        envid="MixedCase+2Bx",
        requests=[("", "rfc822;Mixed+2BTag@Example.COM"), ("", "")],
    )
    blocks = status_blocks(parse(build(ev)))
    assert blocks[0]["Original-Envelope-Id"] == "MixedCase+x"
    assert blocks[1]["Original-Recipient"] == "rfc822;Mixed+Tag@Example.COM"
    assert "Original-Recipient" not in blocks[2]  # §6.3 (d): not without ORCPT


def test_original_recipient_comes_first_in_its_block():
    ev = asking(event(), requests=[("", "rfc822;A@Example.NET"), ("", "")])
    raw = build(ev)
    assert b"\r\nOriginal-Recipient: rfc822;A@Example.NET\r\nFinal-Recipient: rfc822; a@" in raw


def test_an_orcpt_that_decodes_to_a_line_break_stays_encoded():
    ev = asking(event(), requests=[("", "rfc822;x+0D+0ABcc:+20evil@x"), ("", "")])
    raw = build(ev)
    assert b"Original-Recipient: rfc822;x+0D+0ABcc:+20evil@x\r\n" in raw
    assert b"\r\nBcc:" not in raw


def test_ret_full_returns_the_whole_message_as_message_rfc822():
    ev = asking(event(), ret="FULL")
    ev.original_content = FULL_MESSAGE
    raw = build(ev)
    msg = parse(raw)
    returned = parts(msg)[2]
    assert returned.get_content_type() == "message/rfc822"
    [inner] = returned.get_payload()
    assert inner["Subject"] == "Quarterly report"
    assert "quarterly figures are attached" in inner.get_payload()
    assert FULL_MESSAGE in raw  # byte for byte, headers unfolded and unchanged
    assert msg.defects == []


def test_an_eight_bit_message_returned_says_so():
    ev = asking(event(), ret="FULL")
    ev.original_content = b"Subject: caf\xc3\xa9\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    raw = build(ev)
    assert b"Content-Type: message/rfc822\r\nMIME-Version: 1.0\r\n" in raw
    assert b"Content-Transfer-Encoding: 8bit\r\n\r\nSubject: caf\xc3\xa9\r\n" in raw


@pytest.mark.parametrize("ret", ["HDRS", ""])
def test_hdrs_and_the_default_return_the_headers(ret):
    ev = asking(event(), ret=ret)
    quoted = parts(parse(build(ev)))[2]
    assert quoted.get_content_type() == "text/rfc822-headers"
    assert "attached" not in quoted.get_payload()


def test_a_ret_full_message_too_large_to_carry_is_returned_by_its_headers():
    ev = asking(event(), ret="FULL")  # the event could not carry it: no content
    notice = notice_of([ev])
    assert notice is not None
    assert notice.withheld
    raw = build_dsn(notice, reporting_mta="mx.test", dsn_id="D", now=NOW, quote_limit=1000)
    msg = parse(raw)
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "too large to return in full (over 1000 octets)" in parts(msg)[0].get_content()


# --- delayed and relayed (RFC 3464 §2.3.3) -------------------------------------

UNTIL = datetime(2024, 1, 7, 3, 4, 5, tzinfo=UTC)


def delayed_event():
    ev = event(
        kind=pb.EVENT_KIND_DELAYED,
        results=[result("slow@example.net", 451, "4.7.1", "Greylisted", "mx.example.net")],
    )
    ev.results[0].bounce_class = "Greylisted"
    ev.expires_at.CopyFrom(wire.timestamp(UNTIL))
    return ev


def test_a_delayed_notice():
    msg = parse(build(asking(delayed_event(), envid="E+2B1")))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    per_message, block = status_blocks(msg)
    assert per_message["Original-Envelope-Id"] == "E+1"
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.7.1"
    assert block["Diagnostic-Code"] == "smtp; 451 4.7.1 Greylisted"
    assert parsedate_to_datetime(block["Will-Retry-Until"]) == UNTIL
    human = parts(msg)[0].get_content()
    assert "has not been delivered yet" in human
    assert "you need not send it again" in human
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"


def relayed_event():
    return event(
        kind=pb.EVENT_KIND_RELAYED,
        results=[result("ok@example.net", 250, "2.0.0", "OK queued", "mx.example.net")],
    )


def test_a_relayed_notice():
    ev = asking(relayed_event(), requests=[("SUCCESS", "rfc822;OK@Example.NET")])
    msg = parse(build(ev))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    _, block = status_blocks(msg)
    assert block["Original-Recipient"] == "rfc822;OK@Example.NET"
    assert block["Action"] == "relayed"
    assert block["Status"] == "2.0.0"
    assert block["Remote-MTA"] == "dns; mx.example.net"
    assert "Will-Retry-Until" not in block  # §2.3.9: delayed DSNs only
    assert "X-Mailyard-Bounce-Class" not in block
    assert "do not send delivery notifications" in parts(msg)[0].get_content()


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        (pb.EVENT_KIND_DELAYED, "", "4.0.0"),
        (pb.EVENT_KIND_DELAYED, "5.1.1", "4.0.0"),  # never a class the action contradicts
        (pb.EVENT_KIND_RELAYED, "", "2.0.0"),
        (pb.EVENT_KIND_RELAYED, "2.6.0", "2.6.0"),
    ],
)
def test_the_status_is_of_the_actions_class(kind, status, expected):
    code = 451 if kind == pb.EVENT_KIND_DELAYED else 250
    ev = event(kind=kind, results=[result("r@example.net", code, status, "x", "mx")])
    asking(ev, requests=[("SUCCESS,DELAY", "")])
    assert status_blocks(parse(build(ev)))[1]["Status"] == expected
