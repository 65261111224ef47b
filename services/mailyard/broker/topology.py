"""The names of everything Mailyard keeps on a broker, whichever adapter holds it.

All names start with the configured prefix so that several installs (or test
runs) can share one broker.

    <p>.inbound        accepted messages (ingress, bounce → queue)
    <p>.delivery       delivery jobs of the transactional class: its lane (queue, retry
                       ladder → delivery)
    <p>.delivery.<class>  the lane of each other class in queue.classes (bulk, …)
    <p>.deferred       attempts that ended in a 4xx (delivery → queue)
    <p>.retry.<delay>  the retry ladder of the transactional lane; each rung hands its
                       jobs back to <p>.delivery
    <p>.retry.<delay>.<class>  the ladder of another lane, handing back to its lane
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

**Lanes.** The delivery role is one lane per message class, so that jobs of
one class never wait in line behind another's. A service names the role
(``QueueName.DELIVERY``); which lane a published job goes to is the job's own
``mail_class`` (:meth:`Topology.lane`), and a consumer names the lane it
takes from. The transactional lane keeps the names from before lanes
(``<p>.delivery``, ``<p>.retry.<delay>``), so jobs queued then, and whatever
watches those names, carry on. A class unknown here (one removed from
``queue.classes`` while jobs of it were waiting, or empty on a job from before
classes) is transactional.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from mailyard.config import TRANSACTIONAL
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
    # The delivery lanes, by class (queue.classes); transactional's is always
    # there, and first.
    lanes: tuple[str, ...] = (TRANSACTIONAL,)

    def __post_init__(self) -> None:
        lanes = tuple(dict.fromkeys((TRANSACTIONAL, *self.lanes)))
        object.__setattr__(self, "lanes", lanes)

    def lane(self, mail_class: str) -> str:
        """The lane a job of ``mail_class`` goes to: its own, else transactional's."""
        return mail_class if mail_class in self.lanes else TRANSACTIONAL

    def queue(self, role: QueueName, lane: str = TRANSACTIONAL) -> str:
        """The queue of ``role``; for the delivery role, of the ``lane`` (a class)."""
        if role is QueueName.DELIVERY:
            return self.lane_queue(lane)
        return f"{self.prefix}.{role.value}"

    def lane_queue(self, mail_class: str) -> str:
        lane = self.lane(mail_class)
        base = f"{self.prefix}.{QueueName.DELIVERY.value}"
        return base if lane == TRANSACTIONAL else f"{base}.{lane}"

    @property
    def inbound(self) -> str:
        return self.queue(QueueName.INBOUND)

    @property
    def delivery(self) -> str:
        """The transactional lane (the delivery queue from before lanes)."""
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

    def retry_queue(self, delay: timedelta, lane: str = TRANSACTIONAL) -> str:
        """The rung that waits ``delay`` and then hands its jobs back to ``lane``."""
        name = f"{self.prefix}.retry.{format_duration(delay)}"
        lane = self.lane(lane)
        return name if lane == TRANSACTIONAL else f"{name}.{lane}"

    @property
    def delivery_lanes(self) -> tuple[str, ...]:
        return tuple(self.lane_queue(lane) for lane in self.lanes)

    @property
    def work_queues(self) -> tuple[str, ...]:
        """Every queue a service consumes, the delivery role as its lanes."""
        names: list[str] = []
        for role in QueueName:
            names += self.delivery_lanes if role is QueueName.DELIVERY else [self.queue(role)]
        return tuple(names)

    @property
    def rungs(self) -> tuple[tuple[str, timedelta, str], ...]:
        """(rung, its delay, the lane it hands back to), each rung once, lane by lane."""
        rungs: dict[str, tuple[str, timedelta, str]] = {}
        for lane in self.lanes:
            for delay in self.retry_delays:
                name = self.retry_queue(delay, lane)
                rungs.setdefault(name, (name, delay, self.lane_queue(lane)))
        return tuple(rungs.values())

    @property
    def retry_queues(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.rungs)

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
