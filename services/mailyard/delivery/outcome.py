"""What a reply means for a recipient — no I/O.

2xx delivered, 4xx deferred (back into the retry ladder), 5xx failed (a DSN).
"""

from __future__ import annotations

from enum import StrEnum

from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"


def outcome_of(reply: Reply) -> Outcome:
    if reply.is_positive:
        return Outcome.DELIVERED
    if reply.is_transient:
        return Outcome.DEFERRED
    return Outcome.FAILED


def outcome_of_result(result: pb.RecipientResult) -> Outcome:
    return outcome_of(reply_from_pb(result.reply))


def recipient_result(recipient: str, reply: Reply, remote_mta: str = "") -> pb.RecipientResult:
    return pb.RecipientResult(
        recipient=recipient,
        reply=pb.SmtpReply(code=reply.code, status=reply.status, text=reply.text),
        remote_mta=remote_mta,
    )


def reply_from_pb(reply: pb.SmtpReply) -> Reply:
    return Reply(reply.code, reply.status, reply.text)
