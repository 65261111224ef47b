"""The ``Feedback-ID:`` header of Gmail's feedback loop — no I/O.

Gmail's Postmaster Tools report spam complaints per Feedback-ID value:
``Feedback-ID: <campaign>:<customer>:<mail type>:<sender id>``, up to four
colon-separated fields of which the last, the sender id (the same for all of
a sender's mail), is required and the others may be empty. Gmail counts it
only when a DKIM signature of the sending domain covers it, so it is added
before signing and signed (``signing.py``).

Where each field comes from is configuration (``queue.feedback_id``): the
sender id is fixed, the others come from headers the application sets (an
``X-Campaign-ID`` per campaign, say), and the customer, when no header
names it, is the submission login. A message that has a ``Feedback-ID``
already keeps it: the application knows better.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import compat32

from mailyard.content import header_block

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")  # the fields are identifiers: no colons, no spaces
FIELD_LIMIT = 64


@dataclass(frozen=True, slots=True)
class FeedbackIdSource:
    sender_id: str
    campaign_header: str = ""
    customer_header: str = ""
    mail_type_header: str = ""


def feedback_id(headers: Mapping[str, str], login: str, source: FeedbackIdSource) -> str:
    """The header's value: campaign, customer, mail type and sender id."""

    def field(name: str) -> str:
        return _clean(headers.get(name.lower(), "")) if name else ""

    customer = field(source.customer_header) or _clean(login)
    campaign = field(source.campaign_header)
    mail_type = field(source.mail_type_header)
    return ":".join((campaign, customer, mail_type, _clean(source.sender_id)))


def with_feedback_id(content: bytes, login: str, source: FeedbackIdSource) -> bytes:
    """``content`` with a ``Feedback-ID:`` field on top, unless it has one."""
    block = header_block(content, limit=None).decode("ascii", "replace")
    parsed = HeaderParser(policy=compat32).parsestr(block)
    if "Feedback-ID" in parsed:
        return content
    headers = {name.lower(): str(value) for name, value in parsed.items()}
    value = feedback_id(headers, login, source)
    return f"Feedback-ID: {value}\r\n".encode("ascii") + content


def _clean(value: str) -> str:
    return _UNSAFE.sub("-", value.strip())[:FIELD_LIMIT].strip("-")
