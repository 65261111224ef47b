"""What the bounce service adds to the suppression list for an event — pure decisions.

- A ``failed`` recipient whose bounce class says the address is gone
  (``classify.ADDRESS_GONE``: InvalidRecipient, BadDomain, InactiveMailbox)
  is suppressed for every sender, for ``suppression.hard_bounce_expiry``.
  Every other class (SpamBlock, PolicyRelated, ...) says something about
  the sender or the message, not the address: nothing is added.
- An ``expired`` recipient gets a strike, keyed by the message's id (an
  event delivered twice strikes once). The ``suppression.expired_strikes``-th
  strike within ``expired_strikes_window`` suppresses the address for
  ``expired_strikes_expiry``. Soft bounces never suppress on their own:
  only a message that gave up after ``queue.max_lifetime`` strikes.
- An address already suppressed for every sender gets nothing new (mail
  still in flight when it was added fails the same way), so its ``since``
  stays the first bounce.
- A ``bounced`` event (an asynchronous bounce to a VERP address, made by
  this service from mail that came back) suppresses like a ``failed`` one,
  when its class says the address is gone and its VERP address verified
  (anyone can mail a bounce to us; only our HMAC says it is about our mail).
- A ``complained`` event (an ARF report) suppresses with no expiry, scoped
  to the original envelope sender's domain when the report quotes it, else
  for every sender. A complaint whose recipient only the report names
  (``verified`` false: no VERP, or one the provider redacted) suppresses too
  unless ``suppression.unverified_complaints`` is off: anyone can write an
  ARF report, but without VERP every complaint is of that kind. An address
  already suppressed for that scope with no expiry gets nothing new.
- :func:`complaint` makes such an entry for any other caller.

The service plans one event at a time against the list as it stands after
the previous one's records (its handlers run side by side), so two expiries
at once count two. Two bounce replicas can still plan for one address at
the same moment; then a strike goes uncounted until the next expiry, which
errs on the side of sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailyard.addresses import AddressError
from mailyard.bounce.dsn import reply_text
from mailyard.classify import ADDRESS_GONE, BounceClass
from mailyard.suppression.entries import Entry, Source, normalize_address, sender_domain
from mailyard.suppression.records import Added, Record, Struck
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

_GONE = frozenset(c.value for c in ADDRESS_GONE)
MAX_REASON = 300  # characters of a reply kept as the reason


@dataclass(frozen=True, slots=True)
class SuppressionPolicy:
    hard_bounce_expiry: timedelta
    expired_strikes: int  # 0: off
    expired_strikes_window: timedelta
    expired_strikes_expiry: timedelta
    unverified_complaints: bool = True


def plan_suppressions(
    event: pb.DeliveryEvent,
    state: SuppressionState,
    policy: SuppressionPolicy,
    *,
    now: datetime,
) -> list[Record]:
    """The records to append for ``event``; [] for most."""
    if event.kind == pb.EVENT_KIND_BOUNCED:
        return _async_bounce(event, state, policy, now=now)
    if event.kind == pb.EVENT_KIND_COMPLAINED:
        return _complaint(event, state, policy, now=now)
    if event.kind == pb.EVENT_KIND_FAILED:
        return [
            Added(
                Entry(
                    address=result.recipient,
                    scope=None,
                    reason=_reason(result),
                    bounce_class=result.bounce_class,
                    source=Source.BOUNCE,
                    since=now,
                    expires=now + policy.hard_bounce_expiry,
                )
            )
            for result in event.results
            if result.bounce_class in _GONE and not _suppressed(state, result.recipient, now)
        ]
    if event.kind == pb.EVENT_KIND_EXPIRED and policy.expired_strikes:
        records: list[Record] = []
        since = now - policy.expired_strikes_window
        for result in event.results:
            address = result.recipient
            if _suppressed(state, address, now):
                continue
            new = not state.has_strike(address, event.message_id, since=since)
            count = state.strikes(address, since=since) + new
            if count < policy.expired_strikes:
                records.append(Struck(address, event.message_id, now))
                continue
            records.append(
                Added(
                    Entry(
                        address=address,
                        scope=None,
                        reason=f"{count} messages in a row expired; the last: {_reason(result)}",
                        bounce_class=BounceClass.MESSAGE_EXPIRED.value,
                        source=Source.BOUNCE,
                        since=now,
                        expires=now + policy.expired_strikes_expiry,
                    )
                )
            )
        return records
    return []


def complaint(
    address: str,
    *,
    scope: str | None,
    reason: str,
    now: datetime,
    bounce_class: str | None = None,
) -> Added:
    """The record for a complaint (an ARF report, RFC 5965): suppressed with no expiry.

    ``address`` as ``normalize_address`` spells it; ``scope`` the domain of
    the sender complained about, or None to stop all mail to the address.
    """
    return Added(
        Entry(
            address=address,
            scope=scope,
            reason=reason[:MAX_REASON],
            bounce_class=bounce_class,
            source=Source.COMPLAINT,
            since=now,
            expires=None,
        )
    )


def _async_bounce(
    event: pb.DeliveryEvent, state: SuppressionState, policy: SuppressionPolicy, *, now: datetime
) -> list[Record]:
    if not event.verified:
        return []
    records: list[Record] = []
    for result in event.results:
        address = _address(result.recipient)
        if address is None or result.bounce_class not in _GONE or _suppressed(state, address, now):
            continue
        reason = f"bounced after acceptance: {_reason(result)}"
        if event.reporter:
            reason += f", reported by {event.reporter}"
        records.append(
            Added(
                Entry(
                    address=address,
                    scope=None,
                    reason=reason[:MAX_REASON],
                    bounce_class=result.bounce_class,
                    source=Source.BOUNCE,
                    since=now,
                    expires=now + policy.hard_bounce_expiry,
                )
            )
        )
    return records


def _complaint(
    event: pb.DeliveryEvent, state: SuppressionState, policy: SuppressionPolicy, *, now: datetime
) -> list[Record]:
    if not event.verified and not policy.unverified_complaints:
        return []
    scope = sender_domain(event.mail_from) or None
    records: list[Record] = []
    for result in event.results:
        address = _address(result.recipient)
        if address is None:
            continue
        found = state.lookup(address, scope or "", now)
        if found is not None and found.expires is None:
            continue  # reported again: the entry stands
        reason = f"complaint ({event.feedback_type or 'abuse'})"
        if event.reporter:
            reason += f" from {event.reporter}"
        if not event.verified:
            reason += "; unverified: only the report names the recipient"
        records.append(complaint(address, scope=scope, reason=reason, now=now))
    return records


def _address(recipient: str) -> str | None:
    """A report's recipient as the list spells addresses; None if it is none."""
    try:
        return normalize_address(recipient)
    except AddressError:
        return None


def _suppressed(state: SuppressionState, address: str, now: datetime) -> bool:
    return state.lookup(address, "", now) is not None


def _reason(result: pb.RecipientResult) -> str:
    text = reply_text(result.reply)
    if result.remote_mta:
        text = f"{text} (said {result.remote_mta})"
    return text[:MAX_REASON]
