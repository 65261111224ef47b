"""The delivery service: take jobs, attempt them, report every recipient's fate.

``delivery.concurrency`` is the number of jobs one process works on at once,
whatever the batches they came in. A job holds its slot from its first DNS
query until its outcome is stored with :meth:`Work.complete`, which also
records it as finished: if the process dies, its batch comes back without
the jobs that were done, and only the transactions in flight at that moment
can be sent twice (Postfix's window).

Every delivery lane (a class of ``queue.classes``) is consumed, each with a
prefetch of its own, so a bulk flood fills its lane's window and never the
transactional lane's. Slots go by the classes' weights while jobs of several
wait (``slots.py``): transactional mail is not held back by bulk, and bulk is
never starved. The transactional lane prefetches ``delivery.concurrency``
batches (a quiet system's one-job batches can fill every slot); another lane
its weighted share of that, at least one: what a flood of it holds in memory
is bounded by that many batches (of up to ``queue.delivery_batch.max_jobs``).

One deadline (``delivery.attempt_timeout``) covers a batch, so it is never
held near the broker's consumer_timeout: a job cut off mid-attempt is
deferred (``451 4.4.1``); a job that never got a slot goes back in line
unchanged, not counted as an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailyard import wire
from mailyard.broker import Broker, Consumer, Output, Publish, QueueName, Work
from mailyard.broker.service import ConsumingService
from mailyard.classify import Classifier
from mailyard.config import TRANSACTIONAL, ConfigError, Settings, SourceAddressConfig
from mailyard.delivery import metrics
from mailyard.delivery.attempt import Deliverer
from mailyard.delivery.backoff import BackoffPolicy, ThrottlingRules
from mailyard.delivery.dane_lookup import DaneLookup
from mailyard.delivery.egress import KEY, Egress, sources_from
from mailyard.delivery.expiry import Expiries
from mailyard.delivery.gate import Gate, Held, HeldReason, Permit
from mailyard.delivery.mtasts_fetch import MtaSts
from mailyard.delivery.outcome import Outcome, RecipientOutcome
from mailyard.delivery.plan import by_outcome, plan_hold, plan_report
from mailyard.delivery.pool import SessionPool
from mailyard.delivery.resolver import MxResolver
from mailyard.delivery.routes import Router, smarthost_from
from mailyard.delivery.safety import Safety
from mailyard.delivery.shaping import Destination, ShapingTable
from mailyard.delivery.slots import JobSlots
from mailyard.delivery.smtp import bound_socket, opportunistic_tls_context, verifying_tls_context
from mailyard.delivery.tlspolicy import TlsMode, TlsPolicies
from mailyard.delivery.tlsresult import PolicyType, ReportedPolicy, ResultType
from mailyard.delivery.tlsrpt_send import TlsReporter
from mailyard.events import Quoting
from mailyard.filewatch import Watched
from mailyard.reply import Reply
from mailyard.v1 import members_pb2 as mpb
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

SITE_CACHE_SIZE = 10_000
SITE_CACHE_SECONDS = 60.0


class DeliveryService(ConsumingService):
    name = "delivery"

    def __init__(
        self, settings: Settings, broker: Broker, *, deliverer: Deliverer | None = None
    ) -> None:
        super().__init__(broker)
        self.settings = settings
        bounce = settings.bounce
        self.quoting = Quoting(bounce.max_quoted_headers, bounce.max_quoted_message)
        self.config = config = settings.delivery
        self.classifier = Classifier(
            settings.bounce.classification.rules_files,
            key="bounce.classification.rules_files",
        )
        shaping = config.shaping
        backoff = shaping.backoff
        self.membership = broker.membership(
            "delivery", interval=shaping.heartbeat_interval.total_seconds()
        )
        self.gate = Gate(
            ShapingTable(shaping),
            ThrottlingRules(backoff.rules_files, key="delivery.shaping.backoff.rules_files"),
            BackoffPolicy(
                recovery_interval=backoff.recovery_interval.total_seconds(),
                pause_after=backoff.pause_after,
                pause=backoff.pause.total_seconds(),
            ),
            self.membership,
            max_wait=shaping.max_wait.total_seconds(),
            named=frozenset(settings.metrics.destinations),
        )
        self.pool = SessionPool(
            enabled=config.connection_reuse,
            max_idle=config.idle_connection_timeout.total_seconds(),
            keep_idle=self.gate.may_keep_idle,
        )
        self.gate.trim = lambda key, keep: self.pool.trim(
            key, keep, lambda: self.gate.sessions_of(key)
        )
        self.membership.on_change(self._members_changed)
        smarthost = config.smarthost
        resolver = MxResolver(
            config.nameservers,
            timeout=config.dns_timeout.total_seconds(),
            ipv6=config.ipv6,
            cache_size=config.dns_cache_size,
            dnssec=config.dane.enabled,
        )
        safety = Safety.build(config.prohibited_networks, settings.hostname)
        verifying = verifying_tls(config.tls_ca_file)
        self.tlsrpt = (
            TlsReporter(
                config.tlsrpt,
                hostname=settings.hostname,
                resolver=resolver,
                broker=broker,
                safety=safety,
                tls_context=verifying,
            )
            if config.tlsrpt.enabled
            else None
        )
        self.deliverer = deliverer or Deliverer(
            Router(
                resolver,
                smarthost=(
                    smarthost_from(
                        smarthost.host,
                        smarthost.port,
                        smarthost.domains,
                        tls=smarthost.tls,
                        username=smarthost.username,
                        password_file=smarthost.password_file,
                    )
                    if smarthost
                    else None
                ),
                safety=safety,
                tls=TlsPolicies(
                    TlsMode(config.tls),
                    {domain: TlsMode(mode) for domain, mode in config.tls_policies.items()},
                ),
                mta_sts=(
                    MtaSts(
                        resolver,
                        https_port=config.mta_sts.https_port,
                        timeout=config.mta_sts.fetch_timeout.total_seconds(),
                        tls_context=verifying,
                        safety=safety,
                        cache_size=config.mta_sts.cache_size,
                        on_failure=self._policy_fetch_failed if self.tlsrpt else None,
                    )
                    if config.mta_sts.enabled
                    else None
                ),
                dane=DaneLookup(resolver, port=config.port) if config.dane.enabled else None,
            ),
            self.pool,
            port=config.port,
            helo_name=settings.hostname,
            opportunistic_tls=opportunistic_tls_context(),
            verifying_tls=verifying,
            connect_timeout=config.connect_timeout.total_seconds(),
            command_timeout=config.command_timeout.total_seconds(),
            tlsrpt=self.tlsrpt,
            gate=self.gate,
            max_transactions=shaping.default.max_messages_per_connection,
            egress=egress_from(config.source_addresses),
        )
        self.classes = dict(settings.queue.classes)
        self.slots = JobSlots(config.concurrency, self.classes)
        # Jobs being attempted here, and those finished here lately (by key):
        # a copy of a job (split again after a crash of the queue service) that
        # arrives while the first is under way waits for it instead of racing it.
        # (The future, None until a copy waits for it.)
        self._attempting: dict[str, asyncio.Future[None] | None] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        # Domain -> (until, destination), for domains that may be on a site.
        self._sites: dict[str, tuple[float, Destination]] = {}
        self.named_destinations = frozenset(settings.metrics.destinations)
        # A job may wait max_wait for its destination, then has attempt_timeout
        # for its attempt: the wait never eats into the attempt.
        limit = config.attempt_timeout + config.shaping.max_wait
        self._deadlines: Expiries[Deadline] = Expiries(
            limit.total_seconds(), Deadline.fire, Deadline.over
        )

    def consumers(self) -> list[Consumer]:
        return [
            self.broker.consumer(
                QueueName.DELIVERY,
                pb.DeliveryJob,
                self.on_jobs,
                prefetch=lane_prefetch(self.config.concurrency, self.classes, lane),
                lane=lane,
            )
            for lane in self.classes
        ]

    async def started(self) -> None:
        # Before the first job: the others must count us in, we them, so that
        # nobody takes more than its share of a destination's limits.
        await self.membership.start(self._heartbeat)
        self._members_changed()
        self.pool.start()
        if self.tlsrpt is not None:
            self.tlsrpt.start()

    async def stopped(self) -> None:
        self._deadlines.close()
        await self.pool.close()
        if self.tlsrpt is not None:
            await self.tlsrpt.stop()  # the broker is still there for report mail
        await self.membership.stop()

    def _heartbeat(self) -> mpb.Heartbeat:
        return mpb.Heartbeat(hostname=socket.gethostname(), destinations=self.gate.report())

    def _members_changed(self) -> None:
        metrics.SHAPING_MEMBERS.set(self.membership.count)

    def _policy_fetch_failed(self, domain: str, result: ResultType, reason: str) -> None:
        if self.tlsrpt is not None:
            self.tlsrpt.failure(ReportedPolicy(PolicyType.STS, domain), result, reason=reason)

    async def on_jobs(self, work: Work[pb.DeliveryJob]) -> Sequence[Output]:
        """Attempt the jobs of a batch side by side; what is left goes back in line.

        A job whose handling raises makes the whole input come back after
        the others are stored; their finished records leave only it to be
        tried again, and parked if it keeps failing.
        """
        jobs = work.items
        if work.redelivered or any(job.may_repeat for job in jobs):
            # Not in the record of finished jobs: any of these may have been
            # in flight when an earlier process died.
            metrics.POSSIBLE_DUPLICATES.inc(len(jobs))
        deadline = Deadline()
        self._deadlines.add(deadline)
        metrics.IN_FLIGHT.inc(len(jobs))
        runs: list[asyncio.Task[Output | None]] = []
        results: list[Output | BaseException | None]
        try:
            if len(jobs) == 1:
                # The common batch (one job: a message to one domain) runs in
                # this task: a task and a gather for it showed in the profile.
                results = [await self._run(work, jobs[0], deadline)]
            else:
                runs = [asyncio.create_task(self._run(work, job, deadline)) for job in jobs]
                results = await asyncio.gather(*runs, return_exceptions=True)
        finally:
            deadline.cancel()
            for run in runs:
                run.cancel()  # only when this handler itself was cancelled (shutdown)
            metrics.IN_FLIGHT.dec(len(jobs))
        back_in_line: list[Output] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            if result is not None:
                back_in_line.append(result)
        return back_in_line

    async def _run(
        self, work: Work[pb.DeliveryJob], job: pb.DeliveryJob, deadline: Deadline
    ) -> Output | None:
        """One job: through its destination's gate, attempt, store the outcome.
        Returns the job itself when the deadline came before its attempt did."""
        key = wire.job_message_id(job)
        if key in self._attempting:
            try:
                with deadline.guard():
                    await self._after_first(key)
            except asyncio.CancelledError:
                if not deadline.cut_off():
                    raise
                metrics.DEADLINE_EXCEEDED.inc()
                return Publish(QueueName.DELIVERY, (job,))
        if key in self._finished:
            metrics.SKIPPED_HERE.inc()
            return None
        self._attempting[key] = None
        try:
            return await self._admitted(work, job, key, deadline)
        finally:
            waited_for = self._attempting.pop(key)
            if waited_for is not None:
                waited_for.set_result(None)

    async def _after_first(self, key: str) -> None:
        """Wait while the same job is under way here (its future is made only now:
        a copy is rare, and a future for every job showed in the profile)."""
        while key in self._attempting:
            first = self._attempting[key]
            if first is None:
                first = self._attempting[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(first)

    async def _admitted(
        self, work: Work[pb.DeliveryJob], job: pb.DeliveryJob, key: str, deadline: Deadline
    ) -> Output | None:
        permit: Permit | None = None
        try:
            with deadline.guard():
                destination = await self._destination(job)
                # Transactional first at a busy destination; every other class after it.
                priority = 0 if self.slots.class_of(job.mail_class) == TRANSACTIONAL else 1
                ticket = await self.gate.enter(destination, priority=priority)
                if isinstance(ticket, Permit):
                    permit = ticket
                    await self.slots.acquire(job.mail_class)
        except asyncio.CancelledError:
            if permit is not None:
                self.gate.leave(permit, ())
            if not deadline.cut_off():
                raise
            metrics.DEADLINE_EXCEEDED.inc()
            return Publish(QueueName.DELIVERY, (job,))
        if permit is None:
            assert isinstance(ticket, Held)
            await self._hold(work, job, destination.key, ticket)
            return None
        try:
            # The destination's share is given back as soon as the attempt is
            # over: storing its outcome holds the job slot, not the destination.
            outcomes: list[RecipientOutcome] = []
            try:
                outcomes = await self._attempt(job, deadline, permit)
            finally:
                self.gate.leave(
                    permit,
                    [o.reply for o in outcomes],
                    sent=any(o.remote_mta for o in outcomes),
                )
            now = datetime.now(UTC)
            outputs = plan_report(
                job,
                outcomes,
                now=now,
                quoting=self.quoting,
                classifier=self.classifier,
                hears=self.broker.hears,
            )
            account = self._accounting(job, outcomes, now)
            cleared = await work.complete(job, outputs)
            self._remember_finished(key)
        except BaseException:
            self.slots.release()
            raise
        # Sent but not yet out of the duplicate window (its record is not
        # durable and its batch not acked): the slot stays taken till then,
        # so that a crash repeats at most delivery.concurrency transactions.
        if cleared.done():
            self.slots.release()
        else:
            cleared.add_done_callback(self._release_slot)
        account()
        return None

    def _release_slot(self, _cleared: asyncio.Future[None]) -> None:
        self.slots.release()

    async def _destination(self, job: pb.DeliveryJob) -> Destination:
        """The job's destination; a domain's site is remembered for a minute
        (its MX hosts change rarely, and the lookup costs at full speed)."""
        domain = job.domain
        if not self.gate.table.needs_mx(domain):
            return self.gate.destination(domain)
        now = asyncio.get_running_loop().time()
        known = self._sites.get(domain)
        if known is not None and known[0] > now:
            return known[1]
        mx_names = await self.deliverer.mx_names(job)
        destination = self.gate.destination(domain, mx_names)
        if mx_names:  # none: the lookup failed; ask again next time
            if len(self._sites) >= SITE_CACHE_SIZE:
                self._sites.pop(next(iter(self._sites)))
            self._sites[domain] = (now + SITE_CACHE_SECONDS, destination)
        return destination

    async def _hold(
        self, work: Work[pb.DeliveryJob], job: pb.DeliveryJob, destination: str, held: Held
    ) -> None:
        """Back to the retry ladder without an attempt; past its lifetime, a deferral
        that the queue expires (with why it was held in the failure notice)."""
        now = datetime.now(UTC)
        metrics.SHAPING_HELD.labels(self.gate.label(destination), held.reason.value).inc()
        if now < wire.to_datetime(job.expires_at) or not job.HasField("expires_at"):
            await work.complete(
                job, [plan_hold(job, reason=held.reason, pause_left=held.pause_left, now=now)]
            )
            return
        why = {
            HeldReason.PAUSED: f"{destination} is paused after replies that asked us to slow down",
            HeldReason.BUSY: f"{destination} took no more mail from us in time",
            HeldReason.NO_SHARE: f"{destination}'s connection limit left this process no share",
        }[held.reason]
        reply = Reply(451, "4.4.5", f"not tried: {why}")
        outputs = plan_report(
            job,
            [RecipientOutcome(r, reply) for r in job.recipients],
            now=now,
            quoting=self.quoting,
            classifier=self.classifier,
            hears=self.broker.hears,
        )
        await work.complete(job, outputs)

    def _remember_finished(self, key: str) -> None:
        self._finished[key] = None
        while len(self._finished) > 100_000:
            self._finished.popitem(last=False)

    async def _attempt(
        self, job: pb.DeliveryJob, deadline: Deadline, permit: Permit
    ) -> list[RecipientOutcome]:
        started = asyncio.get_running_loop().time()
        # Transactional first among the jobs waiting for the destination.
        try:
            with deadline.guard():
                outcomes = await self.deliverer.attempt(job, permit)
        except asyncio.CancelledError:
            if not deadline.cut_off():
                raise
            metrics.DEADLINE_EXCEEDED.inc()
            timeout = self.config.attempt_timeout.total_seconds()
            cut_off = Reply(451, "4.4.1", f"delivery attempt cut off after {timeout:g}s")
            outcomes = [RecipientOutcome(r, cut_off) for r in job.recipients]
        metrics.JOBS.inc()
        metrics.ATTEMPT_SECONDS.observe(asyncio.get_running_loop().time() - started)
        return outcomes

    def _accounting(
        self, job: pb.DeliveryJob, outcomes: list[RecipientOutcome], now: datetime
    ) -> Callable[[], None]:
        """Metrics and log lines for after the outcome is stored (worked out before,
        so that a job that cannot be accounted fails before it counts as done)."""
        age = (now - wire.to_datetime(job.received_at)).total_seconds()
        destination = job.domain if job.domain in self.named_destinations else "other"
        grouped = by_outcome(outcomes)

        def account() -> None:
            for outcome, group in grouped.items():
                if group:
                    metrics.DESTINATION_RECIPIENTS.labels(destination, outcome.value).inc(
                        len(group)
                    )
                for result in group:
                    metrics.RECIPIENTS.labels(outcome.value, result.reply.status_class).inc()
                    extra = {
                        "message_id": job.message_id,
                        "queue_id": job.queue_id,
                        "to": result.recipient,
                        "relay": result.remote_mta or "none",
                        "delay": round(age, 3),
                        "attempt": job.attempts + 1,
                        "reply": str(result.reply),
                    }
                    if outcome is Outcome.DELIVERED:
                        metrics.LATENCY_SECONDS.observe(age)
                    else:
                        bounce_class = self.classifier.classify(result.reply)
                        metrics.CLASSIFIED.labels(outcome.value, bounce_class.value).inc()
                        extra["class"] = bounce_class.value
                    log.info(outcome.value, extra=extra)

        return account


def egress_from(entries: Sequence[SourceAddressConfig]) -> Egress:
    """The egress addresses, each bound once now: one that is not this host's stops
    start-up (ConfigError naming it) rather than deferring the mail it serves."""
    sources = sources_from(entries)
    for index, source in enumerate(sources):
        try:
            bound_socket(source.address).close()
        except OSError as exc:
            raise ConfigError(
                f"{KEY}.{index}.address: cannot bind {source.address} on this host "
                f"({exc.strerror or exc}): delivery connects from it, so it must be one of "
                "this host's (or pod's) own addresses (docs/scaling.md, egress addresses)"
            ) from exc
    return Egress(sources)


def lane_prefetch(concurrency: int, weights: Mapping[str, int], lane: str) -> int:
    """Batches a lane's consumer holds at once: all of ``concurrency`` for the
    transactional lane (single-job batches, a quiet system, fill every slot),
    a weighted share of it for another (what a flood of it can hold)."""
    if lane == TRANSACTIONAL:
        return concurrency
    return max(1, math.ceil(concurrency * weights[lane] / sum(weights.values())))


def verifying_tls(ca_file: Path | None) -> Callable[[], ssl.SSLContext]:
    """The context for ``verify``; with ``tls_ca_file``, built again when the file changes."""
    if ca_file is None:
        context = verifying_tls_context(None)
        return lambda: context
    watched = Watched(
        "delivery.tls_ca_file", (ca_file,), lambda paths: verifying_tls_context(str(paths[0]))
    )
    return lambda: watched.value


class Deadline:
    """The end of a batch's time: when it comes, what is still waiting or attempting is cut off.

    (An ``asyncio.timeout`` per job cost a timer each; the profile showed it.
    Every batch has as long, so one timer serves them all: ``expiry.py``.)
    A guarded task is cancelled at the deadline; :meth:`cut_off` tells the
    task that catches the CancelledError whether it was this, and if so
    takes the cancellation back so the task can go on storing its outcome.
    """

    __slots__ = ("_guarded", "finished", "passed")

    def __init__(self) -> None:
        self.passed = False
        self.finished = False  # the batch is over: nothing is left to cut off
        self._guarded: set[asyncio.Task[Any]] = set()

    def fire(self) -> None:
        self.passed = True
        for task in self._guarded:
            task.cancel()

    def over(self) -> bool:
        return self.finished

    def guard(self) -> _Guard:
        """``with deadline.guard():`` the current task is cut off at the deadline."""
        return _Guard(self)

    def cut_off(self) -> bool:
        if not self.passed:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def cancel(self) -> None:
        self.finished = True


class _Guard:
    """A class, not ``@contextlib.contextmanager``: its generator machinery,
    three times a job, showed in the delivery profile."""

    __slots__ = ("_deadline", "_task")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        if self._deadline.passed:
            raise asyncio.CancelledError
        self._task = asyncio.current_task()
        if self._task is not None:
            self._deadline._guarded.add(self._task)

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._deadline._guarded.discard(self._task)
