"""Splitting an accepted message into delivery jobs, one per destination.

Like Postfix's qmgr: recipients are grouped by domain (one SMTP transaction
per destination), in chunks of at most ``max_recipients_per_job``. Mail for a
local domain is never relayed: it becomes a job for the bounce service.
Exact duplicate recipients are delivered once. Every job carries its
message's class (``classes.py``), which picks its delivery lane.

With VERP on (``return_path``), each remote recipient gets a job of its own
with its own envelope sender: a transaction carries one recipient, as with
KumoMTA's and the ESPs' VERP, so one message to n recipients of a domain
costs n transactions instead of ⌈n/50⌉ (on the same pooled sessions: the
price is the MAIL/RCPT/DATA round trips and the body sent n times). The null
sender is never rewritten: a DSN or a report must not be answered.

Recipients on the suppression list are held back here, where each address
is a plain string already (one dict lookup each; none while the list is
empty): they keep their place in the chunking, so queue ids do not depend
on the list, and each job's held recipients come back as a job of their
own (never published) for the planner to report (``suppress.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from mailyard import ids, wire
from mailyard.addresses import domain_of
from mailyard.config import TRANSACTIONAL
from mailyard.suppression.entries import Entry, sender_domain
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

# (message id, recipient) -> the envelope sender for that recipient's job.
ReturnPath = Callable[[str, str], str]

Recipient = tuple[str, pb.RecipientOptions | None]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Held:
    """Recipients of one would-be job that the suppression list holds back."""

    job: pb.DeliveryJob  # their job (its queue id), with only them; never published
    entries: tuple[Entry, ...]  # why, in the order of job.recipients


@dataclass
class Split:
    remote: list[pb.DeliveryJob] = field(default_factory=list)
    local: list[pb.DeliveryJob] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)


def split_message(
    message: pb.AcceptedMessage,
    *,
    local_domains: Collection[str],
    max_recipients_per_job: int,
    lifetime: timedelta,
    suppressions: SuppressionState | None = None,
    now: datetime = EPOCH,
    return_path: ReturnPath | None = None,
) -> Split:
    """The message's jobs, less what ``suppressions`` holds back at ``now``
    (left at the epoch, every entry still applies: it errs on not sending)."""
    by_domain: dict[str, list[Recipient]] = {}
    seen: set[str] = set()
    options = list(message.recipient_options)
    if options and len(options) != len(message.recipients):
        options = []  # not one per recipient: a producer's bug; the defaults apply
    held: dict[str, Entry] = {}
    check = suppressions if suppressions else None  # an empty list costs nothing
    sender = sender_domain(message.mail_from) if check is not None else ""
    for index, recipient in enumerate(message.recipients):
        local, _, _ = recipient.rpartition("@")
        domain = domain_of(recipient)
        address = f"{local}@{domain}"
        if address not in seen:
            seen.add(address)
            by_domain.setdefault(domain, []).append((address, options[index] if options else None))
            if check is not None and domain not in local_domains:
                entry = check.lookup(address, sender, now)
                if entry is not None:
                    held[address] = entry

    expires_at = wire.later(message.received_at, lifetime)
    split = Split()
    index = 0
    verp = return_path if message.mail_from else None
    for domain, recipients in by_domain.items():
        is_local = domain in local_domains
        per_job = 1 if verp is not None and not is_local else max_recipients_per_job
        for start in range(0, len(recipients), per_job):
            index += 1
            chunk = recipients[start : start + per_job]
            queue_id = ids.queue_id(message.message_id, index)
            if held and any(address in held for address, _ in chunk):
                kept = [r for r in chunk if r[0] not in held]
                away = [r for r in chunk if r[0] in held]
                job = _job(message, queue_id, domain, away, expires_at)
                split.held.append(Held(job, tuple(held[address] for address, _ in away)))
                if not kept:
                    continue
                chunk = kept
            job = _job(message, queue_id, domain, chunk, expires_at)
            if verp is not None and not is_local:
                job.return_path = verp(message.message_id, chunk[0][0])
            (split.local if is_local else split.remote).append(job)
    return split


def _job(
    message: pb.AcceptedMessage,
    queue_id: str,
    domain: str,
    chunk: list[Recipient],
    expires_at: Timestamp,
) -> pb.DeliveryJob:
    job = pb.DeliveryJob(
        message_id=message.message_id,
        queue_id=queue_id,
        domain=domain,
        mail_from=message.mail_from,
        recipients=[address for address, _ in chunk],
        content=message.content,
        received_at=message.received_at,
        expires_at=expires_at,
        attempts=0,
        origin=message.origin,
        options=message.options,
        mail_class=message.mail_class or TRANSACTIONAL,
    )
    if any(option is not None for _, option in chunk):
        job.recipient_options.extend(option or pb.RecipientOptions() for _, option in chunk)
    return job


def delivery_batches(
    jobs: Iterable[pb.DeliveryJob], *, max_jobs: int, max_bytes: int
) -> list[list[pb.DeliveryJob]]:
    """Jobs grouped by class and destination domain (a batch goes down one
    lane), in chunks of at most ``max_jobs`` and ``max_bytes`` encoded (a
    bigger job goes alone), in arrival order."""
    by_domain: dict[tuple[str, str], list[pb.DeliveryJob]] = {}
    for job in jobs:
        by_domain.setdefault((job.mail_class, job.domain), []).append(job)
    batches: list[list[pb.DeliveryJob]] = []
    for same_domain in by_domain.values():
        batch: list[pb.DeliveryJob] = []
        size = 0
        for job in same_domain:
            job_size = job.ByteSize()
            if batch and (len(batch) >= max_jobs or size + job_size > max_bytes):
                batches.append(batch)
                batch, size = [], 0
            batch.append(job)
            size += job_size
        batches.append(batch)
    return batches
