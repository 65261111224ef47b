"""Which events become which notice, for whom — pure, no I/O.

One notice per message and action (RFC 3464 §2.3.3): the ``failed``,
``expired`` and ``suppressed`` events of a message that come together make
one "failed" DSN with a block per recipient (a suppressed one was never
tried: the queue held it back, ``550 5.7.1``), its ``delayed`` events one "delayed" DSN, its
``relayed`` events one "relayed" DSN. Which events come together is the
window's business (``window.py``); this module says what a group of them
is worth:

- only the recipients whose NOTIFY asks for that action (RFC 3461 §4.1:
  none with ``NEVER``, failures and delays by default, success only when
  asked) — a group whose recipients all said no is no notice at all;
- never a notice to the null sender (RFC 3461 §6.2, RFC 5321 §4.5.5),
  which is what stops bounce loops;
- ENVID and ORCPT as the client gave them, to be shown decoded (§6.3);
- for a failure of a ``RET=FULL`` message, the message itself, when the
  event could carry it (``bounce.max_quoted_message``); else its headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from mailyard import wire
from mailyard.notify import Condition, wants
from mailyard.v1 import message_pb2 as pb


class Action(StrEnum):
    """The DSN's Action field (RFC 3464 §2.3.3), one notice each."""

    FAILED = "failed"
    DELAYED = "delayed"
    RELAYED = "relayed"


ACTIONS = {
    pb.EVENT_KIND_FAILED: Action.FAILED,
    pb.EVENT_KIND_EXPIRED: Action.FAILED,
    pb.EVENT_KIND_SUPPRESSED: Action.FAILED,
    pb.EVENT_KIND_DELAYED: Action.DELAYED,
    pb.EVENT_KIND_RELAYED: Action.RELAYED,
}
CONDITIONS = {
    Action.FAILED: Condition.FAILURE,
    Action.DELAYED: Condition.DELAY,
    Action.RELAYED: Condition.SUCCESS,
}

GroupKey = tuple[str, Action]


@dataclass(frozen=True, slots=True)
class Reported:
    """One recipient's block."""

    result: pb.RecipientResult
    expired: bool  # failed because the lifetime passed (Status 4.4.7)
    suppressed: bool  # not sent to: on the suppression list (5.7.1), nothing attempted
    orcpt: str  # as the client gave it ("" when not given)
    last_attempt: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class Notice:
    action: Action
    message_id: str
    mail_from: str
    received_at: datetime
    envid: str  # xtext, as given
    ret: str  # FULL | HDRS | ""
    recipients: tuple[Reported, ...]
    original_headers: bytes
    original_content: bytes  # the whole message: a failure with RET=FULL only
    will_retry_until: datetime | None  # delayed notices

    @property
    def withheld(self) -> bool:
        """RET=FULL asked for the message, but it was too large to carry."""
        return self.action is Action.FAILED and self.ret == "FULL" and not self.original_content


def action_of(event: pb.DeliveryEvent) -> Action | None:
    """The notice an event belongs to; None for kinds that make no DSN."""
    return ACTIONS.get(event.kind)


def group_key(event: pb.DeliveryEvent) -> GroupKey | None:
    action = action_of(event)
    if action is None:
        return None
    return (event.message_id or event.queue_id, action)


def requests(event: pb.DeliveryEvent) -> list[pb.RecipientOptions]:
    """Each result's DSN requests (the defaults where the event has none)."""
    if len(event.recipient_options) == len(event.results):
        return list(event.recipient_options)
    return [pb.RecipientOptions() for _ in event.results]


def wanted(event: pb.DeliveryEvent) -> int:
    """How many of the event's recipients asked for its notice."""
    action = action_of(event)
    if action is None:
        return 0
    condition = CONDITIONS[action]
    return sum(wants(options.notify, condition) for options in requests(event))


def notice_of(events: Sequence[pb.DeliveryEvent]) -> Notice | None:
    """The one notice that events of one message and action make; None if nobody wants it.

    Recipients come in the order of the events, each once (a redelivered
    event can bring one twice).
    """
    if not events:
        return None
    first = events[0]
    action = action_of(first)
    if action is None or not first.mail_from:
        return None
    condition = CONDITIONS[action]
    reported: list[Reported] = []
    seen: set[str] = set()
    headers = content = b""
    retry_until: datetime | None = None
    for event in events:
        if action_of(event) is not action:
            raise ValueError("a notice is made of events of one action")
        headers = headers or event.original_headers
        content = content or event.original_content
        if event.HasField("expires_at"):
            retry_until = wire.to_datetime(event.expires_at)
        for result, options in zip(event.results, requests(event), strict=True):
            if result.recipient in seen or not wants(options.notify, condition):
                continue
            seen.add(result.recipient)
            reported.append(
                Reported(
                    result=result,
                    expired=event.kind == pb.EVENT_KIND_EXPIRED,
                    suppressed=event.kind == pb.EVENT_KIND_SUPPRESSED,
                    orcpt=options.orcpt,
                    last_attempt=wire.to_datetime(event.occurred_at),
                    attempts=event.attempts,
                )
            )
    if not reported:
        return None
    return Notice(
        action=action,
        message_id=first.message_id,
        mail_from=first.mail_from,
        received_at=wire.to_datetime(first.received_at),
        envid=first.options.envid,
        ret=first.options.ret,
        recipients=tuple(reported),
        original_headers=headers,
        original_content=content if action is Action.FAILED else b"",
        will_retry_until=retry_until if action is Action.DELAYED else None,
    )
