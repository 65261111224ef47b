"""ARF feedback reports (RFC 5965) — no I/O.

A mailbox provider's feedback loop (Yahoo's CFL, Microsoft's JMRP, AOL's,
Fastmail's, …) sends one when a recipient marks our mail as spam:
``multipart/report; report-type=feedback-report`` with a human-readable
part, a ``message/feedback-report`` part of fields (§3.1: Feedback-Type,
User-Agent, Version; §3.2: Original-Mail-From, Original-Rcpt-To,
Reporting-MTA, …) and the original message or its header section. Gmail
sends none to consumers' senders: its complaints are counted per
Feedback-ID in Postmaster Tools instead.

The email package parses a ``message/*`` part other than rfc822 and
delivery-status as one nested message, whose header fields are then the
report's fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr

from mailyard.addresses import is_clean_mailbox

# RFC 5965 §7.3's registry, and RFC 6591's auth-failure: bounded metric labels.
FEEDBACK_TYPES = ("abuse", "auth-failure", "fraud", "not-spam", "other", "virus")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


@dataclass(frozen=True, slots=True)
class Feedback:
    feedback_type: str  # lower case, as sent (a token); "other" when missing or odd
    original_rcpt_to: tuple[str, ...]  # §3.2 Original-Rcpt-To (may repeat)
    original_mail_from: str
    reporter: str  # Reporting-MTA, else User-Agent

    @property
    def label(self) -> str:
        """A bounded name for metrics: one of :data:`FEEDBACK_TYPES`."""
        return self.feedback_type if self.feedback_type in FEEDBACK_TYPES else "other"


def read_feedback(message: Message) -> Feedback | None:
    """The feedback report in ``message``, or None when it is not one."""
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "")).lower() != "feedback-report":
        return None
    fields = _fields(message)
    if fields is None:
        return None
    kind = " ".join(str(fields.get("feedback-type", "")).split()).lower()
    return Feedback(
        feedback_type=kind if _TOKEN.fullmatch(kind) else "other",
        original_rcpt_to=tuple(
            address
            for value in fields.get_all("original-rcpt-to") or []
            if (address := _mailbox(value))
        ),
        original_mail_from=_mailbox(fields.get("original-mail-from", "")),
        reporter=_reporter(fields),
    )


def _fields(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        if isinstance(payload, str):  # a generator that wrote it as text
            return HeaderParser().parsestr(payload.lstrip())
    return None


def _reporter(fields: Message) -> str:
    mta = " ".join(str(fields.get("reporting-mta", "")).split())
    _, semicolon, name = mta.partition(";")
    if semicolon:
        mta = name.strip()
    agent = " ".join(str(fields.get("user-agent", "")).split())
    return (mta or agent)[:200]


def _mailbox(value: object) -> str:
    address = parseaddr(str(value))[1]
    return address if "@" in address and is_clean_mailbox(address) else ""
