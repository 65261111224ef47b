"""Delivery status notifications (RFC 3464, RFC 3462 multipart/report) — no I/O.

Built with the standard library's email package, which knows how to write
``message/delivery-status`` (a series of header blocks); we only decide
what goes into the fields. One :class:`~mailyard.bounce.notice.Notice` —
one message, one action, a block per recipient — makes one DSN:

- per message (§2.2): Reporting-MTA, Original-Envelope-Id when the client
  gave ENVID (decoded from xtext, in its own case: RFC 3461 §6.3 (a),
  RFC 3464 §2.2.1), our queue id (the one the client's ``250`` named),
  Arrival-Date;
- per recipient (§2.3): Original-Recipient when the client gave ORCPT
  (its value decoded, RFC 3461 §6.3 (d); never otherwise), Final-Recipient,
  Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date (not for
  a suppressed recipient: nothing was attempted), and for a delay
  Will-Retry-Until (§2.3.9: only in delayed DSNs);
- the third part (RFC 3462): a failure of a ``RET=FULL`` message returns
  the whole message as message/rfc822 (RFC 3461 §4.3); everything else
  its headers as text/rfc822-headers. A message too large to return is
  returned by its headers, as Postfix does: cutting it would break MIME.

The generator runs with compat32 and CRLF, so the returned message keeps
its bytes (the default policy would refold and re-encode its headers).
"""

from __future__ import annotations

import email
import io
import re
from datetime import datetime
from email.generator import BytesGenerator
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime

from mailyard import xtext
from mailyard.bounce.notice import Action, Notice, Reported
from mailyard.v1 import message_pb2 as pb

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired
_WIRE = compat32.clone(linesep="\r\n")

SUBJECTS = {
    Action.FAILED: "Undelivered Mail Returned to Sender",
    Action.DELAYED: "Delayed Mail (still being retried)",
    Action.RELAYED: "Successful Mail Delivery Report",
}
# The class of status each action reports (RFC 3464 §2.3.4).
_CLASSES = {Action.FAILED: "", Action.DELAYED: "4", Action.RELAYED: "2"}


def dsn_status(event_kind: int, reply: pb.SmtpReply) -> str:
    """The Status field of a failure: the server's enhanced code, or one from its class."""
    if event_kind == pb.EVENT_KIND_EXPIRED:
        return EXPIRED_STATUS
    if _STATUS.match(reply.status):
        return reply.status
    return f"{reply.code // 100}.0.0"


def status_of(action: Action, recipient: Reported) -> str:
    if action is Action.FAILED:
        kind = pb.EVENT_KIND_EXPIRED if recipient.expired else pb.EVENT_KIND_FAILED
        return dsn_status(kind, recipient.result.reply)
    wanted = _CLASSES[action]
    status = recipient.result.reply.status
    return status if _STATUS.match(status) and status[0] == wanted else f"{wanted}.0.0"


def reply_text(reply: pb.SmtpReply) -> str:
    return " ".join(part for part in (str(reply.code), reply.status, reply.text) if part)


def diagnostic_code(result: pb.RecipientResult) -> str:
    """``smtp; 550 5.1.1 …`` for a remote reply, ``X-Mailyard; …`` for our own verdicts."""
    text = reply_text(result.reply)
    return f"smtp; {text}" if result.remote_mta else f"X-Mailyard; {text}"


def original_recipient(orcpt: str) -> str:
    """``rfc822;Orig+2BTag@x`` → ``rfc822;Orig+Tag@x``: the type as given, the address decoded."""
    kind, _, address = orcpt.partition(";")
    return f"{kind};{xtext.for_dsn_field(address)}"


def build_dsn(
    notice: Notice, *, reporting_mta: str, dsn_id: str, now: datetime, quote_limit: int = 0
) -> bytes:
    """The whole DSN message, CRLF line endings, ready to be queued.

    ``quote_limit`` is only named in the text when a RET=FULL message was
    too large to return.
    """
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = f"<{notice.mail_from}>"
    report["Subject"] = SUBJECTS[notice.action]
    report["Date"] = format_datetime(now)
    report["Message-ID"] = f"<{dsn_id}@{reporting_mta}>"
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-replies to this

    human = _human_part(notice, reporting_mta, quote_limit)
    report.attach(MIMEText(human, "plain", "us-ascii" if human.isascii() else "utf-8"))
    report.attach(_status_part(notice, reporting_mta))
    report.attach(_returned(notice))

    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_WIRE).flatten(report)
    return out.getvalue()


def _returned(notice: Notice) -> Message:
    if notice.original_content:
        original = email.message_from_bytes(notice.original_content, policy=compat32)
        part = MIMEMessage(original)
        if not notice.original_content.isascii():
            # RFC 2046 §5.2.1: message/rfc822 is 7bit, 8bit or binary, and says which.
            part["Content-Transfer-Encoding"] = "8bit"
        return part
    headers = Message()
    headers.set_type("text/rfc822-headers")
    # Without SMTPUTF8, header bytes are ASCII; anything else is replaced.
    headers.set_payload(
        notice.original_headers.decode("ascii", errors="replace").replace("\ufffd", "?")
    )
    return headers


def _human_part(notice: Notice, reporting_mta: str, quote_limit: int) -> str:
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    queue = f"Your message (queue id {notice.message_id})"
    if notice.action is Action.DELAYED:
        until = notice.will_retry_until
        lines.append(f"{queue} has not been delivered yet to the recipients below.")
        lines.append(
            f"{reporting_mta} keeps trying"
            + (f" until {format_datetime(until)}" if until is not None else "")
            + "; you need not send it again. A further notice follows only if it fails."
        )
    elif notice.action is Action.RELAYED:
        lines.append(f"{queue} was handed to the mail servers of the recipients below.")
        lines.append(
            "They do not send delivery notifications, so this is the last report "
            "you will get about these recipients."
        )
    else:
        lines.append(f"{queue} {_why_failed(notice, reporting_mta)}")
    lines += [
        "",
        "For further assistance, send mail to your postmaster and include this",
        "notification. The technical details follow.",
        "",
    ]
    if notice.withheld:
        limit = f" (over {quote_limit} octets)" if quote_limit else ""
        lines += [f"The message is too large to return in full{limit}; its header is.", ""]
    for recipient in notice.recipients:
        result = recipient.result
        via = f" (said {result.remote_mta})" if result.remote_mta else ""
        lines.append(f"<{result.recipient}>{via}: {reply_text(result.reply)}")
        if result.bounce_class and notice.action is not Action.RELAYED:
            lines.append(f"    class: {result.bounce_class}")
    return "\n".join(lines) + "\n"


def _why_failed(notice: Notice, reporting_mta: str) -> str:
    suppressed = sum(r.suppressed for r in notice.recipients)
    held_back = (
        f"they are on the suppression list of {reporting_mta} (an earlier message to them "
        "bounced, or they complained or asked not to get mail); the text after each says "
        "since when and why"
    )
    if suppressed == len(notice.recipients):
        return f"was not sent to the recipients below: {held_back}."
    if suppressed:
        others = "the error is permanent"
        if any(r.expired for r in notice.recipients):
            others += " or the time allowed ran out"
        return (
            "could not be delivered to the recipients below. Some were not sent to: "
            f"{held_back}. For the others {others}."
        )
    expired = [r for r in notice.recipients if r.expired]
    if not expired:
        return "could not be delivered to the recipients below; the error is permanent."
    attempts = max(r.attempts for r in expired)
    gave_up = f"{reporting_mta} tried {attempts} times and has given up"
    if len(expired) == len(notice.recipients):
        return f"could not be delivered to the recipients below within the time allowed; {gave_up}."
    return (
        "could not be delivered to the recipients below: some refused it, for the "
        f"others the time allowed ran out ({gave_up})."
    )


def _status_part(notice: Notice, reporting_mta: str) -> Message:
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    if notice.envid:
        per_message["Original-Envelope-Id"] = xtext.for_dsn_field(notice.envid)
    per_message["X-Mailyard-Queue-ID"] = notice.message_id
    per_message["Arrival-Date"] = format_datetime(notice.received_at)
    blocks: list[Message | str] = [per_message]
    for recipient in notice.recipients:
        blocks.append(_recipient_block(notice, recipient))
    status = Message()
    status.set_type("message/delivery-status")
    status.set_payload(blocks)
    return status


def _recipient_block(notice: Notice, recipient: Reported) -> Message:
    result = recipient.result
    block = Message()
    if recipient.orcpt:
        block["Original-Recipient"] = original_recipient(recipient.orcpt)
    block["Final-Recipient"] = f"rfc822; {result.recipient}"
    block["Action"] = notice.action.value
    block["Status"] = status_of(notice.action, recipient)
    if result.remote_mta:
        block["Remote-MTA"] = f"dns; {result.remote_mta}"
    block["Diagnostic-Code"] = diagnostic_code(result)
    if result.bounce_class and notice.action is not Action.RELAYED:
        # An extension field (RFC 3464 §2.4): what the failure means.
        block["X-Mailyard-Bounce-Class"] = result.bounce_class
    if not recipient.suppressed:  # held back by the queue: nothing was attempted
        block["Last-Attempt-Date"] = format_datetime(recipient.last_attempt)
    if notice.action is Action.DELAYED and notice.will_retry_until is not None:
        block["Will-Retry-Until"] = format_datetime(notice.will_retry_until)
    return block
