"""Who an asynchronous bounce says failed, and with what reply — no I/O.

Two readers, each doing what it does best:

- **flufl.bounce** (``all_failures``) knows the layouts MTAs have sent over
  the years — RFC 3464, qmail's QSBMF, Exim's, Postfix's and old
  Exchange's plain text, Yahoo's, AOL's, … — and says which addresses
  failed, permanently or for now; it does not say why;
- **RFC 3464** ``message/delivery-status`` (the standard library's email
  package parses its field blocks) says why: ``Status`` (RFC 3463),
  ``Diagnostic-Code`` (the remote reply, §2.3.6), ``Remote-MTA``.

A failure's reply comes from its DSN fields when there are any, else from
the text next to the address in the human-readable part (``550 5.1.1 …``,
qmail's ``(#5.1.1)``). The bounce class is then the Classifier's business.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from email.message import Message

from flufl.bounce import all_failures

from mailyard.addresses import is_clean_mailbox
from mailyard.reply import Reply

log = logging.getLogger(__name__)

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_DIAGNOSTIC = re.compile(r"^([245]\d\d)(?:[ -]+([245]\.\d{1,3}\.\d{1,3}))?[ -]*(.*)$", re.DOTALL)
_REPLY_IN_TEXT = re.compile(r"(?<![\d.])([45]\d\d)[ -]+(?:#?([45]\.\d{1,3}\.\d{1,3})\s+)?(\S.*)")
_STATUS_IN_TEXT = re.compile(r"#?(?<![\d.])([45]\.\d{1,3}\.\d{1,3})(?![\d.]\d)")
_TEXT_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient the bounce reports as failed for good."""

    recipient: str  # Final-Recipient, or what flufl.bounce found
    reply: Reply
    remote_mta: str = ""
    original_recipient: str = ""  # Original-Recipient (RFC 3461 ORCPT), when given


@dataclass(frozen=True, slots=True)
class Reading:
    failures: tuple[Failure, ...] = ()
    delayed: tuple[str, ...] = ()  # temporary failures: a warning, not a bounce
    reporter: str = ""  # Reporting-MTA
    is_report: bool = False  # a multipart/report of delivery status, readable or not

    @property
    def says_anything(self) -> bool:
        return bool(self.failures or self.delayed)


class Unreadable(Exception):
    """flufl.bounce or the email package gave up on this message."""


@dataclass
class _Block:
    recipient: str
    original: str
    action: str
    status: str
    diagnostic: str
    remote_mta: str
    extra: dict[str, str] = field(default_factory=dict)


def read_failures(message: Message) -> Reading:
    """What ``message`` reports, permanent failures first; :class:`Unreadable` if nothing can."""
    try:
        temporary, permanent = all_failures(message)
        blocks, reporter = _status_blocks(message)
    except Exception as exc:  # a detector's bug must be a drop reason, not a crash
        raise Unreadable(f"{type(exc).__name__}: {exc}") from exc
    failures: dict[str, Failure] = {}
    delayed: list[str] = []
    for block in blocks:
        if block.action.startswith(("fail", "error")) or (
            not block.action and block.status.startswith("5")
        ):
            reply = _dsn_reply(block.status, block.diagnostic)
            failures.setdefault(
                block.recipient.lower(),
                Failure(block.recipient, reply, block.remote_mta, block.original),
            )
        elif block.action.startswith("delayed"):
            delayed.append(block.recipient)
    text = _human_text(message)
    for address in sorted(a.decode("ascii", "replace") for a in permanent):
        if is_clean_mailbox(address) and address.lower() not in failures:
            failures[address.lower()] = Failure(address, _reply_in_text(text, address))
    delayed += [a.decode("ascii", "replace") for a in temporary]
    return Reading(
        failures=tuple(failures.values()),
        delayed=tuple(dict.fromkeys(a for a in delayed if a.lower() not in failures)),
        reporter=reporter,
        is_report=message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "delivery-status",
    )


def _status_blocks(message: Message) -> tuple[list[_Block], str]:
    blocks: list[_Block] = []
    reporter = ""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if not isinstance(payload, list):
            continue
        for fields in payload:
            if not isinstance(fields, Message):
                continue
            reporter = reporter or _typed_value(fields.get("reporting-mta", ""))
            recipient = _address(fields.get("final-recipient", ""))
            if not recipient:
                continue  # the per-message block (RFC 3464 §2.2)
            blocks.append(
                _Block(
                    recipient=recipient,
                    original=_address(fields.get("original-recipient", "")),
                    action=str(fields.get("action", "")).strip().lower(),
                    status=_first_status(str(fields.get("status", ""))),
                    diagnostic=_typed_value(fields.get("diagnostic-code", "")),
                    remote_mta=_host(fields.get("remote-mta", "")),
                )
            )
    return blocks, reporter


def _dsn_reply(status: str, diagnostic: str) -> Reply:
    """``Status: 5.1.1`` and ``Diagnostic-Code: smtp; 550-5.1.1 The email account …``."""
    text = " ".join(diagnostic.split())
    code = 0
    said_status = ""
    match = _DIAGNOSTIC.match(text)
    if match:
        code = int(match.group(1))
        said_status = match.group(2) or ""
        text = match.group(3)
        if said_status:  # multi-line replies repeat "550-5.1.1" on every line (Gmail's do)
            text = re.sub(rf"\b{code}[ -]+{re.escape(said_status)}\s*", "", text)
    elif quoted := _REPLY_IN_TEXT.search(text):  # "host mx.example.org said: 550 5.1.1 …"
        code = int(quoted.group(1))
        said_status = quoted.group(2) or ""
    status = status or said_status or "5.0.0"
    return _reply(code, status, text)


def _reply_in_text(text: str, address: str) -> Reply:
    """The reply quoted near ``address`` in a plain-text bounce, else a bare 5.0.0."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if address.lower() in line.lower()), 0)
    window = " ".join(" ".join(lines[start : start + 8]).split())
    reply = _REPLY_IN_TEXT.search(window)
    if reply:
        return _reply(int(reply.group(1)), reply.group(2) or "", reply.group(3))
    status = _STATUS_IN_TEXT.search(window)
    words = window.replace(address, "").strip(" <>:")
    return _reply(0, status.group(1) if status else "5.0.0", words)


def _reply(code: int, status: str, text: str) -> Reply:
    """A consistent Reply: the status decides the class; a code of another class is dropped."""
    status = status if _STATUS.fullmatch(status) else ""
    if status and (code == 0 or str(code)[0] != status[0]):
        code = 550 if status[0] == "5" else 450
    if code == 0:
        code = 550
    return Reply(code, status, text.strip()[:_TEXT_LIMIT])


def _first_status(value: str) -> str:
    match = _STATUS.search(value)
    return match.group(0) if match else ""


def _typed_value(value: object) -> str:
    """``dns; mx.example.org`` → ``mx.example.org`` (RFC 3464 §2.1.2's type; value)."""
    text = " ".join(str(value).split())
    kind, semicolon, rest = text.partition(";")
    return rest.strip() if semicolon and " " not in kind.strip() else text


def _host(value: object) -> str:
    """``dns; gmail-smtp-in.l.google.com. (2607:…, the server for …)`` → the name alone."""
    name = _typed_value(value).split(" ", 1)[0]
    return name.rstrip(".")[:255]


def _address(value: object) -> str:
    address = _typed_value(value).strip().strip("<>").strip()
    return address if "@" in address and is_clean_mailbox(address) else ""


def _human_text(message: Message) -> str:
    """The first text/plain part (the human-readable one), or the whole body."""
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "ascii", errors="replace")
    payload = message.get_payload()
    return payload if isinstance(payload, str) else ""
