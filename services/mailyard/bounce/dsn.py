"""Delivery status notifications (RFC 3464, RFC 3462 multipart/report) — no I/O.

Built with the standard library's email package, which knows how to write
``message/delivery-status`` (a series of header blocks); we only decide
what goes into the fields.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime

from mailyard.v1 import message_pb2 as pb

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired


def dsn_status(event_kind: int, reply: pb.SmtpReply) -> str:
    """The Status field: the server's enhanced code, or one derived from its class."""
    if event_kind == pb.EVENT_KIND_EXPIRED:
        return EXPIRED_STATUS
    if _STATUS.match(reply.status):
        return reply.status
    return f"{reply.code // 100}.0.0"


def reply_text(reply: pb.SmtpReply) -> str:
    return " ".join(part for part in (str(reply.code), reply.status, reply.text) if part)


def diagnostic_code(result: pb.RecipientResult) -> str:
    """``smtp; 550 5.1.1 …`` for a remote reply, ``X-Mailyard; …`` for our own verdicts."""
    text = reply_text(result.reply)
    return f"smtp; {text}" if result.remote_mta else f"X-Mailyard; {text}"


def build_dsn(event: pb.DeliveryEvent, *, reporting_mta: str, dsn_id: str, now: datetime) -> bytes:
    """The whole DSN message, CRLF line endings, ready to be queued."""
    expired = event.kind == pb.EVENT_KIND_EXPIRED
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = f"<{event.mail_from}>"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = f"<{dsn_id}@{reporting_mta}>"
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-replies to this

    human = _human_part(event, reporting_mta, expired)
    report.attach(MIMEText(human, "plain", "us-ascii" if human.isascii() else "utf-8"))
    report.attach(_status_part(event, reporting_mta))
    headers = Message()
    headers.set_type("text/rfc822-headers")
    # Without SMTPUTF8, header bytes are ASCII; anything else is replaced.
    headers.set_payload(
        event.original_headers.decode("ascii", errors="replace").replace("\ufffd", "?")
    )
    report.attach(headers)

    out = io.BytesIO()
    BytesGenerator(out, policy=SMTP).flatten(report)  # type: ignore[arg-type]  # typeshed wants EmailMessage
    return out.getvalue()


def _human_part(event: pb.DeliveryEvent, reporting_mta: str, expired: bool) -> str:
    if event.kind == pb.EVENT_KIND_SUPPRESSED:
        why = (
            f"was not sent to the recipients below: they are on the suppression list "
            f"of {reporting_mta} (an earlier message to them bounced, or they complained "
            "or asked not to get mail). The line after each says since when and why."
        )
    elif expired:
        why = (
            f"could not be delivered to the recipients below within the time allowed; "
            f"{reporting_mta} tried {event.attempts} times and has given up."
        )
    else:
        why = "could not be delivered to the recipients below; the error is permanent."
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        f"Your message (queue id {event.queue_id}) {why}",
        "",
        "For further assistance, send mail to your postmaster and include this",
        "notification. The technical details follow.",
        "",
    ]
    for result in event.results:
        via = f" (said {result.remote_mta})" if result.remote_mta else ""
        lines.append(f"<{result.recipient}>{via}: {reply_text(result.reply)}")
        if result.bounce_class:
            lines.append(f"    class: {result.bounce_class}")
    return "\n".join(lines) + "\n"


def _status_part(event: pb.DeliveryEvent, reporting_mta: str) -> Message:
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["X-Mailyard-Queue-ID"] = event.queue_id
    per_message["Arrival-Date"] = format_datetime(event.received_at.ToDatetime(tzinfo=UTC))
    blocks: list[Message | str] = [per_message]
    for result in event.results:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {result.recipient}"
        block["Action"] = "failed"
        block["Status"] = dsn_status(event.kind, result.reply)
        if result.remote_mta:
            block["Remote-MTA"] = f"dns; {result.remote_mta}"
        block["Diagnostic-Code"] = diagnostic_code(result)
        if result.bounce_class:  # an extension field (RFC 3464 §2.4): what it means
            block["X-Mailyard-Bounce-Class"] = result.bounce_class
        if event.kind != pb.EVENT_KIND_SUPPRESSED:  # nothing was attempted
            block["Last-Attempt-Date"] = format_datetime(event.occurred_at.ToDatetime(tzinfo=UTC))
        blocks.append(block)
    status = Message()
    status.set_type("message/delivery-status")
    status.set_payload(blocks)
    return status
