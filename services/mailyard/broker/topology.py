"""The names of everything Mailyard keeps on a broker, whichever adapter holds it.

All names start with the configured prefix so that several installs (or test
runs) can share one broker.

    <p>.inbound        accepted messages (ingress, bounce → queue)
    <p>.delivery       delivery jobs (queue, retry ladder → delivery)
    <p>.deferred       attempts that ended in a 4xx (delivery → queue)
    <p>.retry.<delay>  the retry ladder; each rung hands its jobs back to <p>.delivery
    <p>.bounce         events that become DSNs (events → bounce); one consumer at a time
    <p>.local          mail for ingress.local_domains (queue → bounce)
    <p>.parking        poison and undecodable messages, with reason headers
    <p>.events         delivered / deferred / failed / expired / bounced / complained /
                       delayed / relayed / suppressed
    <p>.suppression    log: suppression list changes
    <p>.done           log: delivery jobs finished (consulted when a batch comes back)

How each adapter lays these out (quorum queues, a topic exchange and streams
on RabbitMQ; tables of one SQLite file for the embedded spool) is its own
business; services only use the roles in :class:`QueueName`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from mailyard.durations import format_duration


class QueueName(StrEnum):
    """The work queues a service can publish to or consume from, by role."""

    INBOUND = "inbound"
    DELIVERY = "delivery"
    DEFERRED = "deferred"
    BOUNCE = "bounce"
    LOCAL = "local"


class EventKind(StrEnum):
    """Routing keys on the events exchange."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    EXPIRED = "expired"
    # Asynchronous reports from the bounce service: a bounce that came back
    # to a VERP address, an ARF complaint. Subscribers (webhooks) bind to them
    # like to any kind; the bounce service that makes them puts them on the
    # suppression list itself.
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DELAYED = "delayed"  # a delay warning is due (queue.delay_warning)
    RELAYED = "relayed"  # NOTIFY=SUCCESS, delivered to a next hop without DSN
    SUPPRESSED = "suppressed"  # not sent to: the recipient is on the suppression list


# Events that a DSN depends on: they must reach the bounce queue.
BOUNCE_EVENTS = (
    EventKind.FAILED,
    EventKind.EXPIRED,
    EventKind.DELAYED,
    EventKind.RELAYED,
    EventKind.SUPPRESSED,
)


# Short rungs of the ladder for the jobs delivery puts back without an
# attempt (delivery/gate.py: a destination busy, paused, or not this
# process's to serve), longer each time the same job is put back.
HOLD_DELAYS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2))


@dataclass(frozen=True)
class Topology:
    prefix: str
    retry_delays: tuple[timedelta, ...]
    delivery_limit: int
    # The bounce queue hands its events to one consumer at a time (RabbitMQ's
    # single active consumer), so that one process sees every notice of a
    # message (bounce/window.py). False only for a queue declared before that.
    single_active_bounce: bool = True

    def queue(self, role: QueueName) -> str:
        return f"{self.prefix}.{role.value}"

    @property
    def inbound(self) -> str:
        return self.queue(QueueName.INBOUND)

    @property
    def delivery(self) -> str:
        return self.queue(QueueName.DELIVERY)

    @property
    def deferred(self) -> str:
        return self.queue(QueueName.DEFERRED)

    @property
    def bounce(self) -> str:
        return self.queue(QueueName.BOUNCE)

    @property
    def local(self) -> str:
        return self.queue(QueueName.LOCAL)

    @property
    def parking(self) -> str:
        return f"{self.prefix}.parking"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def suppression(self) -> str:
        return f"{self.prefix}.suppression"

    @property
    def members(self) -> str:
        """The fanout exchange of heartbeats (broker/members.py)."""
        return f"{self.prefix}.members"

    @property
    def done(self) -> str:
        return f"{self.prefix}.done"

    def retry_queue(self, delay: timedelta) -> str:
        return f"{self.prefix}.retry.{format_duration(delay)}"

    @property
    def work_queues(self) -> tuple[str, ...]:
        return tuple(self.queue(role) for role in QueueName)

    @property
    def retry_queues(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.retry_queue(d) for d in self.retry_delays))

    @property
    def logs(self) -> tuple[str, ...]:
        return (self.suppression, self.done)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue (and log), for listing and for cleaning up."""
        return (*self.work_queues, *self.retry_queues, self.parking, *self.logs)

    def role(self, name: str) -> str:
        """``"<p>.retry.5m"`` → ``"retry.5m"``: the name without the prefix."""
        return name.removeprefix(self.prefix + ".")
