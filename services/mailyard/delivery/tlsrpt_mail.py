"""A TLS report as it travels (RFC 8460 §5): gzip, its file name, the report mail — no I/O.

The same gzip of the JSON goes in an HTTPS POST body and in the mail. The
mail is ``multipart/report; report-type="tlsrpt"`` (§5.3): a human-readable
part, then the report as ``application/tlsrpt+gzip`` named as §5.1 says,
with the ``TLS-Report-Domain`` and ``TLS-Report-Submitter`` fields and the
Subject of §5.3. It enters our own pipeline on ``<prefix>.inbound`` like a
DSN, so that the queue service DKIM-signs it (§5.3: receivers ignore an
unsigned report) and delivery retries it like any mail.

Its envelope sender is the null sender. §5.3 asks only for a DKIM signature
of the reporting domain, which follows the From: (``contact``), not the
envelope; a report is an automatic notice with nobody to tell of its fate
(RFC 5321 §4.5.5), and a null sender keeps the DSNs of abandoned ``rua``
mailboxes (common: records outlive their mailboxes) from landing on our
postmaster every interval, and from ever looping. A report that cannot be
delivered is still seen: a ``failed`` event and delivery's metrics.
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from typing import Any

from mailyard import wire
from mailyard.delivery.tlsrpt import DomainReport, rfc3339
from mailyard.v1 import message_pb2 as pb

MEDIA_TYPE = "application/tlsrpt+gzip"


def compress(document: dict[str, Any]) -> bytes:
    """The report, gzipped (§5.2). ``mtime=0``: the same report gives the same bytes."""
    text = json.dumps(document, ensure_ascii=True, separators=(",", ":"))
    return gzip.compress(text.encode("ascii"), mtime=0)


def file_name(submitter: str, report: DomainReport, unique_id: str) -> str:
    """§5.1: ``sender!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz``."""
    begin, end = int(report.start.timestamp()), int(report.end.timestamp())
    return f"{submitter}!{report.domain}!{begin}!{end}!{unique_id}.json.gz"


def submitter_of(contact: str) -> str:
    """§5.3: the TLS-Report-Submitter is the domain of the report's contact-info."""
    return contact.rpartition("@")[2].lower()


def report_mail(
    report: DomainReport,
    compressed: bytes,
    *,
    organization: str,
    contact: str,
    recipients: tuple[str, ...],
    report_id: str,
    unique_id: str,
    now: datetime,
) -> bytes:
    """The whole message, CRLF line endings, ready to be queued."""
    submitter = submitter_of(contact)
    mail = EmailMessage(policy=SMTP)
    mail["From"] = formataddr((organization, contact))
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = (
        f"Report Domain: {report.domain} Submitter: {submitter} Report-ID: <{report_id}>"
    )
    mail["Date"] = format_datetime(now.astimezone(UTC))
    mail["Message-ID"] = f"<{report_id}>"
    mail["TLS-Report-Domain"] = report.domain
    mail["TLS-Report-Submitter"] = submitter
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    mail.set_content(_human_part(report, organization, submitter), charset="us-ascii")
    mail.add_attachment(
        compressed,
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=file_name(submitter, report, unique_id),
    )
    for part in mail.iter_parts():
        del part["MIME-Version"]  # EmailMessage gives each part one; the message has it
    mail.set_type("multipart/report")  # add_attachment made it multipart/mixed
    mail.set_param("report-type", "tlsrpt")
    out = io.BytesIO()
    BytesGenerator(out, policy=SMTP).flatten(mail)
    return out.getvalue()


def _human_part(report: DomainReport, organization: str, submitter: str) -> str:
    organization = organization.encode("ascii", "replace").decode("ascii")
    return (
        f"This is an aggregate TLS report (RFC 8460) from {organization} ({submitter})\n"
        f"for {report.domain}, from {rfc3339(report.start)} to {rfc3339(report.end)}:\n"
        f"{report.successes} successful and {report.failures} failed TLS sessions.\n"
        "The report itself is the attached JSON file (gzip).\n"
    )


def report_message(
    content: bytes, recipients: tuple[str, ...], *, message_id: str, helo: str, now: datetime
) -> pb.AcceptedMessage:
    """The report mail as our pipeline takes it in: null sender, origin TLSRPT."""
    return pb.AcceptedMessage(
        message_id=message_id,
        mail_from="",
        recipients=list(recipients),
        content=content,
        received_at=wire.timestamp(now),
        client=pb.Client(address="", helo=helo),
        origin=pb.ORIGIN_TLSRPT,
    )
