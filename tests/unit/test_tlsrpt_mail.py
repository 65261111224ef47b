"""A TLS report as it travels (RFC 8460 §5): gzip, file name, the multipart/report mail."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy

from mailyard.delivery.tlsresult import ResultType
from mailyard.delivery.tlsrpt import DomainReport, TlsCounts, no_policy, report_document
from mailyard.delivery.tlsrpt_mail import (
    MEDIA_TYPE,
    compress,
    file_name,
    report_mail,
    report_message,
    submitter_of,
)
from mailyard.v1 import message_pb2 as pb

START = datetime(2026, 12, 1, tzinfo=UTC)
END = START + timedelta(days=1)
NOW = END + timedelta(minutes=17)
REPORT_ID = "20261201T000000Z.a1b2.7@mx.mailyard.example"
# §5.1: sender "!" policy-domain "!" begin-timestamp "!" end-timestamp ["!" unique-id] "." extension
FILE_NAME = re.compile(
    r"^(?P<sender>[a-z0-9.-]+)!(?P<domain>[a-z0-9.-]+)!(?P<begin>\d+)!(?P<end>\d+)(![A-Za-z0-9]+)?\.json\.gz$"
)


def a_report() -> DomainReport:
    tally = TlsCounts(START, max_domains=10, max_failure_details=10)
    policy = no_policy("example.net")
    tally.success(policy)
    tally.success(policy)
    tally.failure(
        policy, ResultType.STARTTLS_NOT_SUPPORTED, mx="mx.example.net", address="192.0.2.1"
    )
    [report] = tally.take(END)
    return report


def document(report: DomainReport) -> dict[str, object]:
    return report_document(
        report, organization="Example Inc.", contact="tlsrpt@Example.com", report_id=REPORT_ID
    )


def mail(
    report: DomainReport | None = None, recipients: tuple[str, ...] = ("tlsrpt@example.net",)
) -> Message:
    report = report or a_report()
    content = report_mail(
        report,
        compress(document(report)),
        organization="Example Inc.",
        contact="tlsrpt@example.com",
        recipients=recipients,
        report_id=REPORT_ID,
        unique_id="a1b27",
        now=NOW,
    )
    assert b"\r\n" in content
    assert b"\n" not in content.replace(b"\r\n", b"")
    return message_from_bytes(content, policy=default_policy)


def test_gzip_holds_the_json_and_is_the_same_for_the_same_report() -> None:
    report = a_report()
    compressed = compress(document(report))
    assert compressed[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(compressed)) == document(report)
    assert compress(document(report)) == compressed  # no timestamp in the gzip header


def test_the_file_name_is_section_5_1_s() -> None:
    name = file_name("example.com", a_report(), "a1b27")
    assert name == "example.com!example.net!1796083200!1796169600!a1b27.json.gz"
    match = FILE_NAME.match(name)
    assert match is not None
    assert int(match["begin"]) == int(START.timestamp())
    assert int(match["end"]) == int(END.timestamp())


def test_the_submitter_is_the_contact_s_domain() -> None:
    assert submitter_of("TLS@Mail.Example.COM") == "mail.example.com"


def test_the_mail_is_a_multipart_report_of_type_tlsrpt() -> None:
    message = mail()
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    human, attachment = message.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert "example.net" in human.get_content()
    assert "2 successful and 1 failed" in human.get_content()
    assert attachment.get_content_type() == MEDIA_TYPE
    assert attachment.get_content_disposition() == "attachment"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert FILE_NAME.match(attachment.get_filename())
    assert attachment.get_filename().startswith("example.com!example.net!")


def test_the_attachment_decodes_to_the_report() -> None:
    report = a_report()
    _, attachment = mail(report).iter_parts()
    decoded = json.loads(gzip.decompress(attachment.get_content()))
    assert decoded == document(report)
    summary = decoded["policies"][0]["summary"]
    assert summary == {"total-successful-session-count": 2, "total-failure-session-count": 1}


def test_the_headers_are_section_5_3_s() -> None:
    message = mail(recipients=("a@example.net", "b@reports.example"))
    assert message["TLS-Report-Domain"] == "example.net"
    assert message["TLS-Report-Submitter"] == "example.com"
    assert " ".join(message["Subject"].split()) == (
        f"Report Domain: example.net Submitter: example.com Report-ID: <{REPORT_ID}>"
    )
    assert message["From"].addresses[0].addr_spec == "tlsrpt@example.com"
    assert message["From"].addresses[0].display_name == "Example Inc."
    assert [a.addr_spec for a in message["To"].addresses] == ["a@example.net", "b@reports.example"]
    assert message["Message-ID"] == f"<{REPORT_ID}>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"].datetime == NOW
    assert message["MIME-Version"] == "1.0"


def test_the_report_enters_the_pipeline_from_the_null_sender() -> None:
    accepted = report_message(
        b"content", ("a@example.net",), message_id="01JREPORT", helo="mx.mailyard.example", now=NOW
    )
    assert accepted.mail_from == ""
    assert list(accepted.recipients) == ["a@example.net"]
    assert accepted.origin == pb.ORIGIN_TLSRPT
    assert accepted.client.helo == "mx.mailyard.example"
    assert accepted.received_at.ToDatetime(tzinfo=UTC) == NOW
