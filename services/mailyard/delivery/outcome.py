"""What became of one recipient in one attempt — one type from the SMTP client to the event.

2xx delivered, 4xx deferred (back into the retry ladder), 5xx failed (a DSN).
:data:`EVENT_KINDS` is the one table from outcome to event kind; protobuf is
made once, in :meth:`RecipientOutcome.to_pb`, when the event is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailyard.broker import EventKind
from mailyard.delivery.tlspolicy import TlsSummary
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


EVENT_KINDS: dict[Outcome, EventKind] = {
    Outcome.DELIVERED: EventKind.DELIVERED,
    Outcome.DEFERRED: EventKind.DEFERRED,
    Outcome.FAILED: EventKind.FAILED,
}


def outcome_of(reply: Reply) -> Outcome:
    if reply.is_positive:
        return Outcome.DELIVERED
    if reply.is_transient:
        return Outcome.DEFERRED
    return Outcome.FAILED


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    recipient: str
    reply: Reply
    remote_mta: str = ""  # the host that replied; "" when none was reached
    elapsed: float = 0.0  # seconds from the start of the attempt to the reply
    tls: TlsSummary | None = None  # None when no server was reached
    next_hop_dsn: bool = False  # that server offered DSN: NOTIFY and the rest went on to it

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.reply)

    def to_pb(self, bounce_class: str = "") -> pb.RecipientResult:
        return pb.RecipientResult(
            recipient=self.recipient,
            reply=pb.SmtpReply(
                code=self.reply.code, status=self.reply.status, text=self.reply.text
            ),
            remote_mta=self.remote_mta,
            elapsed_ms=min(round(self.elapsed * 1000), 2**32 - 1),
            tls=(
                pb.TlsSession(
                    policy=str(self.tls.policy),
                    version=self.tls.version,
                    cipher=self.tls.cipher,
                    verified=self.tls.verified,
                )
                if self.tls is not None
                else None
            ),
            bounce_class=bounce_class,
            # Only a delivery hands the NOTIFY=SUCCESS on (RFC 3461 §5.2.2).
            next_hop_dsn=self.next_hop_dsn and self.outcome is Outcome.DELIVERED,
        )
