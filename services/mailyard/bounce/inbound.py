"""What mail for our local domains means: a bounce, a complaint, or neither — no I/O.

Each envelope recipient of a local job is judged on its own, in this order:

1. **The address.** A VERP address on ``bounce.return_path_domain``
   (``mailyard/verp.py``) whose HMAC fails is ``forged``: dropped, whatever
   the content says. One that verifies names the recipient (or, hashed,
   the message and a hash of the recipient).
2. **A complaint** — an ARF report (RFC 5965, ``arf.py``) to the
   return-path domain or to ``fbl@`` a local domain — is ``complained``.
   Its recipient: our VERP address (the envelope's, or the quoted
   original's Return-Path), else the report's Original-Rcpt-To, else the
   original's single To: — the last two unverified (anyone can write them).
3. **A bounce** to a verified VERP address (``failures.py``: flufl.bounce,
   then RFC 3464's fields) with a permanent failure is ``bounced``, with the
   VERP recipient (not the bounce's Final-Recipient: after a forward they
   differ, and the address is whom we sent to), the reply and its class.
   Only temporary failures: ``delayed``. A report nobody can read:
   ``unparsable``. Anything else (an auto-reply, RFC 3834, goes to the
   return path too; a reply): ``not_a_bounce``.
4. A bounce to any other local address proves nothing about our mail:
   ``unsigned``, no event.

Nothing here makes an event from a report whose address did not verify,
except complaints (which the event marks ``verified: false``).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from enum import StrEnum
from functools import cached_property

from mailyard import verp, wire
from mailyard.addresses import AddressError, parse_address
from mailyard.bounce.arf import Feedback, read_feedback
from mailyard.bounce.failures import Failure, Reading, Unreadable, read_failures
from mailyard.bounce.original import Original, quoted_headers, read_original
from mailyard.broker import EventKind
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

FEEDBACK_MAILBOX = "fbl"  # fbl@<any local domain> takes complaints


class Result(StrEnum):
    """``mailyard_bounce_async_total{result}``: what became of one envelope recipient."""

    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DELAYED = "delayed"
    FORGED = "forged"
    UNSIGNED = "unsigned"
    UNPARSABLE = "unparsable"
    NOT_A_BOUNCE = "not_a_bounce"


@dataclass(frozen=True, slots=True)
class Verdict:
    address: str  # the envelope recipient: ours
    result: Result
    event: pb.DeliveryEvent | None = None
    detail: str = ""  # for the log
    feedback_type: str = ""  # complained: the bounded label (arf.FEEDBACK_TYPES)

    @property
    def kind(self) -> EventKind | None:
        if self.event is None:
            return None
        return EventKind.BOUNCED if self.result is Result.BOUNCED else EventKind.COMPLAINED


@dataclass(frozen=True, slots=True)
class Mailboxes:
    """What our local addresses mean."""

    hostname: str  # whose Received: header names our message ids
    return_path_domain: str | None = None
    keyring: verp.Keyring | None = None


class _Content:
    """The job's content, parsed once and only when a verdict needs it."""

    def __init__(self, raw: bytes, hostname: str) -> None:
        self.raw = raw
        self.hostname = hostname

    @cached_property
    def message(self) -> Message:
        # compat32: flufl.bounce's detectors expect the classic Message API.
        return email.message_from_bytes(self.raw, policy=email.policy.compat32)

    @cached_property
    def feedback(self) -> Feedback | None:
        return read_feedback(self.message)

    @cached_property
    def reading(self) -> Reading | Unreadable:
        try:
            return read_failures(self.message)
        except Unreadable as exc:
            return exc

    @cached_property
    def original(self) -> Original:
        return read_original(quoted_headers(self.message), hostname=self.hostname)


Classify = Callable[[Reply], str]


def judge(
    job: pb.DeliveryJob, *, mailboxes: Mailboxes, classify: Classify, now: datetime
) -> list[Verdict]:
    content = _Content(job.content, mailboxes.hostname)
    return [
        _judge_one(address, job, content, mailboxes, classify, now) for address in job.recipients
    ]


def _judge_one(
    address: str,
    job: pb.DeliveryJob,
    content: _Content,
    mailboxes: Mailboxes,
    classify: Classify,
    now: datetime,
) -> Verdict:
    local, _, domain = address.rpartition("@")
    domain = domain.lower()
    ours: verp.Verp | None = None
    if mailboxes.keyring is not None and domain == mailboxes.return_path_domain:
        parsed = verp.parse(mailboxes.keyring, local)
        if isinstance(parsed, verp.Forged):
            return Verdict(address, Result.FORGED, detail=parsed.reason)
        ours = parsed
    try:
        return _judge_content(address, local, domain, job, content, ours, mailboxes, classify, now)
    except Exception as exc:  # a parser's bug must be a drop reason, never a crash or a loop
        return Verdict(address, Result.UNPARSABLE, detail=f"{type(exc).__name__}: {exc}")


def _judge_content(
    address: str,
    local: str,
    domain: str,
    job: pb.DeliveryJob,
    content: _Content,
    ours: verp.Verp | None,
    mailboxes: Mailboxes,
    classify: Classify,
    now: datetime,
) -> Verdict:
    feedback_address = local.lower() == FEEDBACK_MAILBOX or (
        mailboxes.return_path_domain is not None and domain == mailboxes.return_path_domain
    )
    if content.feedback is not None and feedback_address:
        return _complaint(address, job, content, content.feedback, ours, mailboxes, now)
    reading = content.reading
    if isinstance(reading, Unreadable):
        return Verdict(address, Result.UNPARSABLE, detail=str(reading))
    if ours is None:
        if reading.failures or reading.is_report:
            return Verdict(address, Result.UNSIGNED, detail="a bounce to an address of no VERP")
        return Verdict(address, Result.NOT_A_BOUNCE)
    return _bounce(address, job, content, reading, ours, classify, now)


def _bounce(
    address: str,
    job: pb.DeliveryJob,
    content: _Content,
    reading: Reading,
    ours: verp.Verp,
    classify: Classify,
    now: datetime,
) -> Verdict:
    if not reading.failures:
        if reading.delayed:
            return Verdict(address, Result.DELAYED, detail=", ".join(reading.delayed[:5]))
        if reading.is_report:
            return Verdict(address, Result.UNPARSABLE, detail="a report with no failure in it")
        return Verdict(address, Result.NOT_A_BOUNCE)
    failure = _ours(reading.failures, ours)
    if failure is None:
        return Verdict(address, Result.UNPARSABLE, detail="no failed recipient matches the hash")
    recipient = ours.recipient or failure.recipient
    if not _routable(recipient):
        return Verdict(address, Result.UNPARSABLE, detail="the failed recipient is no address")
    original = content.original
    result = pb.RecipientResult(
        recipient=recipient,
        reply=pb.SmtpReply(
            code=failure.reply.code, status=failure.reply.status, text=failure.reply.text
        ),
        remote_mta=failure.remote_mta,
        bounce_class=classify(failure.reply),
    )
    event = _event(
        pb.EVENT_KIND_BOUNCED,
        job,
        result,
        message_id=ours.message_id or original.message_id,
        mail_from=original.envelope_from,
        verified=True,
        reporter=reading.reporter or _from_domain(content.message),
        now=now,
    )
    return Verdict(address, Result.BOUNCED, event, detail=str(failure.reply))


def _ours(failures: tuple[Failure, ...], ours: verp.Verp) -> Failure | None:
    """The failure the VERP address is about.

    Readable: the one that names its recipient, else the first (mail
    forwarded elsewhere bounces with the final address; ours is whom we sent
    to). Hashed: only one whose address matches the hash.
    """
    for failure in failures:
        if ours.names(failure.recipient) or (
            failure.original_recipient and ours.names(failure.original_recipient)
        ):
            return failure
    return failures[0] if ours.recipient is not None else None


def _complaint(
    address: str,
    job: pb.DeliveryJob,
    content: _Content,
    feedback: Feedback,
    ours: verp.Verp | None,
    mailboxes: Mailboxes,
    now: datetime,
) -> Verdict:
    original = content.original
    candidates = [*feedback.original_rcpt_to, *original.to[:1]]
    if ours is None and original.return_path and mailboxes.keyring is not None:
        local, _, domain = original.return_path.rpartition("@")
        if domain.lower() == mailboxes.return_path_domain:
            parsed = verp.parse(mailboxes.keyring, local)
            ours = parsed if isinstance(parsed, verp.Verp) else None
    recipient, verified = "", False
    if ours is not None:
        verified = True
        recipient = ours.recipient or next((c for c in candidates if ours.names(c)), "")
    if not recipient:
        verified = False
        recipient = next((c for c in candidates if _routable(c)), "")
    if not recipient:
        return Verdict(
            address, Result.UNPARSABLE, detail="a complaint that names no recipient we can read"
        )
    event = _event(
        pb.EVENT_KIND_COMPLAINED,
        job,
        pb.RecipientResult(recipient=recipient),
        message_id=(ours.message_id if ours else None) or original.message_id,
        mail_from=original.envelope_from,
        verified=verified,
        reporter=feedback.reporter or _from_domain(content.message),
        now=now,
        feedback_type=feedback.feedback_type,
    )
    return Verdict(
        address,
        Result.COMPLAINED,
        event,
        detail=feedback.feedback_type,
        feedback_type=feedback.label,
    )


def _event(
    kind: pb.EventKind,
    job: pb.DeliveryJob,
    result: pb.RecipientResult,
    *,
    message_id: str,
    mail_from: str,
    verified: bool,
    reporter: str,
    now: datetime,
    feedback_type: str = "",
) -> pb.DeliveryEvent:
    """One report event (proto/mailyard/v1/message.proto says what each field holds)."""
    return pb.DeliveryEvent(
        kind=kind,
        message_id=message_id,
        queue_id=job.queue_id,
        domain=result.recipient.rpartition("@")[2].lower(),
        mail_from=mail_from,
        results=[result],
        occurred_at=wire.timestamp(now),
        feedback_type=feedback_type,
        verified=verified,
        reporter=reporter,
    )


def _routable(address: str) -> bool:
    try:
        parse_address(address)
    except AddressError:
        return False
    return True


def _from_domain(message: Message) -> str:
    sender = email.utils.parseaddr(str(message.get("from", "")))[1]
    return sender.rpartition("@")[2].lower()[:200]
