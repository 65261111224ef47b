"""A message's class (``transactional``, ``bulk``, …): which lane it is delivered in — no I/O.

The class is the first of:

1. the AUTH user's ``class`` in the users file (ingress puts it on the
   message; the operator's word about that user);
2. ``queue.sender_classes``: the envelope sender's domain, exactly, or a
   ``.domain`` key for every subdomain below it, the nearest first (as
   ``delivery.tls_policies``); the null sender matches no key;
3. the ``X-Mailyard-Class:`` header the application set (the first that
   names a class in ``queue.classes``; case does not matter);
4. ``transactional``.

DSNs and TLS reports that Mailyard makes itself are transactional whatever
they carry: a notice must not wait behind a campaign.

The header is removed from every message, whatever decided the class, before
the message is signed and delivered: it is an instruction to us, not part of
the mail. A class name that ``queue.classes`` does not have (in the header,
or on a message from an ingress whose users file names a class this queue
does not know, as while a change of ``queue.classes`` rolls out) is ignored
and reported, and the next source decides.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mailyard.config import TRANSACTIONAL
from mailyard.content import remove_fields
from mailyard.v1 import message_pb2 as pb

HEADER = b"X-Mailyard-Class"
# Made by Mailyard itself: always transactional.
GENERATED = frozenset({pb.ORIGIN_DSN, pb.ORIGIN_TLSRPT})


class Source(StrEnum):
    """What decided a message's class (a bounded metric label)."""

    USER = "user"
    SENDER = "sender"
    HEADER = "header"
    DEFAULT = "default"
    GENERATED = "generated"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A class name that was given but is not in ``queue.classes``."""

    source: Source  # USER or HEADER
    name: str  # as given (cut short), for the log line


@dataclass(frozen=True, slots=True)
class Decision:
    mail_class: str
    source: Source
    ignored: tuple[Ignored, ...] = ()


@dataclass(frozen=True)
class ClassPolicy:
    """``queue.classes`` (the names) and ``queue.sender_classes``."""

    classes: Collection[str] = frozenset({TRANSACTIONAL})
    sender_classes: Mapping[str, str] | None = None

    def sender_class(self, mail_from: str) -> str | None:
        """The class ``sender_classes`` gives the envelope sender, or None."""
        if not self.sender_classes or "@" not in mail_from:
            return None
        domain = mail_from.rpartition("@")[2].lower().rstrip(".")
        exact = self.sender_classes.get(domain)
        if exact is not None:
            return exact
        labels = domain.split(".")
        for start in range(1, len(labels)):  # the nearest parent first
            parent = self.sender_classes.get("." + ".".join(labels[start:]))
            if parent is not None:
                return parent
        return None

    def decide(
        self,
        *,
        origin: int,
        user_class: str,
        mail_from: str,
        header_values: Sequence[bytes],
    ) -> Decision:
        """The class of a message, from what ingress and the message say."""
        ignored: list[Ignored] = []
        if user_class and user_class not in self.classes:
            ignored.append(Ignored(Source.USER, user_class[:64]))
        named: str | None = None
        for raw in header_values:
            value = raw.decode("ascii", "replace").strip().lower()
            if value in self.classes:
                named = named or value
            else:
                ignored.append(Ignored(Source.HEADER, value[:64]))
        found = tuple(ignored)
        if origin in GENERATED:
            return Decision(TRANSACTIONAL, Source.GENERATED, found)
        if user_class in self.classes:
            return Decision(user_class, Source.USER, found)
        by_sender = self.sender_class(mail_from)
        if by_sender is not None:  # config validation made it one of the classes
            return Decision(by_sender, Source.SENDER, found)
        if named is not None:
            return Decision(named, Source.HEADER, found)
        return Decision(TRANSACTIONAL, Source.DEFAULT, found)


def classify(
    message: pb.AcceptedMessage, policy: ClassPolicy
) -> tuple[pb.AcceptedMessage, Decision]:
    """The message without its ``X-Mailyard-Class:`` fields and with its class set,
    and how the class was decided. The message handed in is left as it was."""
    original = message.content
    content, values = remove_fields(original, HEADER)
    decision = policy.decide(
        origin=message.origin,
        user_class=message.mail_class,
        mail_from=message.mail_from,
        header_values=values,
    )
    if content is original and message.mail_class == decision.mail_class:
        return message, decision
    classified = pb.AcceptedMessage()
    classified.CopyFrom(message)
    classified.content = content
    classified.mail_class = decision.mail_class
    return classified, decision
