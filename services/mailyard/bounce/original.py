"""The original message a bounce or a complaint quotes, and what it tells us — no I/O.

Reports quote what they are about: RFC 3462 and RFC 5965 as a
``message/rfc822`` or ``text/rfc822-headers`` part, the plain-text bounces
of qmail and Exim after a line such as ``--- Below this line is a copy of
the message.``. From its header section the bounce service, which keeps no
state, learns what it did not put in the VERP address: the original
envelope sender (``X-Mailyard-Envelope-From``, which the queue adds), the
message id (our ``Received:`` header), the ``Return-Path`` (a VERP address
of ours: ARF reports come to the feedback address, not to it) and ``To:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

from mailyard.addresses import is_clean_mailbox

ENVELOPE_FROM = "x-mailyard-envelope-from"  # queue/returnpath.py writes it
# A line that says the original follows, in plain-text bounces.
_COPY_FOLLOWS = re.compile(
    r"^\s*-{2,}.*(copy of the message|original message|returned message|undelivered message"
    r"|message headers? follow|below this line).*$",
    re.IGNORECASE | re.MULTILINE,
)
_ID = r"([0-9A-HJKMNP-TV-Z]{26})"  # mailyard/ids.py


@dataclass(frozen=True, slots=True)
class Original:
    """What the quoted header section says; empty strings where it says nothing."""

    envelope_from: str
    message_id: str
    return_path: str
    to: tuple[str, ...]


NOTHING = Original("", "", "", ())


def quoted_headers(report: Message) -> Message | None:
    """The header section of the message ``report`` is about, if it quotes one."""
    for part in report.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind in ("text/rfc822-headers", "text/global-headers"):
            return HeaderParser().parsestr(_text(part).lstrip())
    if report.is_multipart():
        return None
    text = _text(report)
    match = _COPY_FOLLOWS.search(text)
    if match is None:
        return None
    return HeaderParser().parsestr(text[match.end() :].lstrip("\r\n").lstrip())


def read_original(headers: Message | None, *, hostname: str) -> Original:
    """``hostname``: ours, whose ``Received: … by <hostname> (Mailyard) … id <id>`` names the id."""
    if headers is None:
        return NOTHING
    return Original(
        envelope_from=_mailbox(headers.get(ENVELOPE_FROM, "")),
        message_id=_message_id(headers.get_all("received") or [], hostname),
        return_path=_mailbox(headers.get("return-path", "")),
        to=tuple(
            address
            for _, address in getaddresses([str(v) for v in headers.get_all("to") or []])
            if is_clean_mailbox(address) and "@" in address
        ),
    )


def _message_id(received: list[str], hostname: str) -> str:
    pattern = re.compile(rf"\bby {re.escape(hostname)} \(Mailyard\) with \S+ id {_ID}\b")
    for field in received:  # topmost first: the last hop comes first
        match = pattern.search(" ".join(str(field).split()))
        if match:
            return match.group(1)
    return ""


def _mailbox(value: object) -> str:
    """One clean address from a field such as ``<a@b>``, else ''."""
    address = parseaddr(str(value))[1]
    return address if "@" in address and is_clean_mailbox(address) else ""


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "ascii", errors="replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""
