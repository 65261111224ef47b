"""What the suppression list holds: one :class:`Entry` per (address, scope) — no I/O.

An address is written as the queue service routes it: the local part as
given (it is the destination's business, RFC 5321 §2.4), ``@``, the domain
in lower case. So ``Bob@Example.COM`` and ``Bob@example.com`` are one entry,
``bob@example.com`` another. A scope is an envelope sender's domain (MAIL
FROM, lower case): an entry with a scope applies only to mail from that
domain; one without applies to every sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mailyard.addresses import AddressError, is_clean_mailbox


class Source(StrEnum):
    """Why an entry is there: who put it on the list."""

    BOUNCE = "bounce"  # a hard bounce (InvalidRecipient, BadDomain, InactiveMailbox) or strikes
    COMPLAINT = "complaint"  # a feedback-loop report: the recipient called it spam
    UNSUBSCRIBE = "unsubscribe"  # the recipient asked to stop
    MANUAL = "manual"  # `mailyard suppression add`


@dataclass(frozen=True, slots=True)
class Entry:
    address: str
    scope: str | None  # a sender domain; None: every sender
    reason: str
    bounce_class: str | None  # mailyard/classify.py's name of what caused it, if anything did
    source: Source
    since: datetime
    expires: datetime | None  # None: never

    def applies_at(self, now: datetime) -> bool:
        """Until ``expires`` (exclusive); an expired entry lets mail through with nothing to do."""
        return self.expires is None or now < self.expires

    def as_json(self) -> dict[str, Any]:
        """The fields of ``mailyard suppression list --json``, and nothing else."""
        return {
            "address": self.address,
            "scope": self.scope,
            "reason": self.reason,
            "class": self.bounce_class,
            "source": self.source.value,
            "since": rfc3339(self.since),
            "expires": rfc3339(self.expires) if self.expires is not None else None,
        }


def normalize_address(text: str) -> str:
    """``Bob@Example.COM`` → ``Bob@example.com``; AddressError when it is no mailbox.

    The same spelling as the queue service's split (``queue/split.py``), so
    that an entry and a recipient meet in one dictionary lookup.
    """
    local, at, domain = text.strip().rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{text!r} is not of the form local-part@domain")
    if not is_clean_mailbox(text.strip()) or " " in domain or len(text) > 254:
        raise AddressError(f"{text!r} is not a mailbox address")
    return f"{local}@{domain.lower()}"


def normalize_scope(text: str) -> str:
    """A sender domain, lower case: ``Example.COM`` → ``example.com``."""
    domain = text.strip().lower()
    if not domain or "@" in domain or not is_clean_mailbox(domain) or " " in domain:
        raise AddressError(f"{text!r} is not a domain")
    return domain


def sender_domain(mail_from: str) -> str:
    """The envelope sender's domain as scopes are written; "" for the null sender."""
    return mail_from.rpartition("@")[2].lower()


def rfc3339(moment: datetime) -> str:
    """``2025-06-01T10:00:00Z``: UTC, whole seconds."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
