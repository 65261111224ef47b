"""One delivery attempt for one job: route, then try hosts until one answers.

RFC 5321 §5.1: MX hosts in preference order, each of their addresses in
turn; a host we cannot use (no connection, bad greeting, broken TLS, a
failed TLSA lookup) sends us to the next one. The first host that accepts
MAIL FROM decides every recipient's fate for this attempt.

Every TLS negotiation a new session starts is told to the TLS reporter
(RFC 8460, ``tlsrpt_send.py``), under the policy the destination published
(``Route.reported``) or ``no-policy-found``: the first try's outcome only,
not the fallbacks after it. Not counted: ``tls: none`` (no TLS was tried),
the smarthost (not the destination's MX), and the sessions of report mail
itself (§5.3), which is delivered whatever its destination's TLS policy
says, so that reports neither stall on the failures they report nor make
reports of their own. Under a policy that only tests (MTA-STS ``testing``)
the certificate is checked as if it enforced, and the mail delivered as if
it did not: a failed check is counted, then the host tried again
opportunistically.

With ``delivery.source_addresses``, a new session binds to the address
``egress.py`` picks for the job and the MX address's family, and says its
EHLO name; a reused one is taken only if its address may carry the job.
An MX address none of the job's addresses can reach is skipped.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

from mailyard.delivery import metrics
from mailyard.delivery.egress import Egress, Mail, NoSource, Source
from mailyard.delivery.gate import Gate, Permit
from mailyard.delivery.outcome import RecipientOutcome
from mailyard.delivery.plan import recipient_options
from mailyard.delivery.pool import SessionPool
from mailyard.delivery.resolver import RouteError
from mailyard.delivery.routes import Route, Router
from mailyard.delivery.smtp import (
    HostUnusable,
    SessionLost,
    SmtpSession,
    SourceUnusable,
    close_session,
    open_session,
    send_transaction,
)
from mailyard.delivery.tlspolicy import TlsMode, TlsSummary, Verification
from mailyard.delivery.tlsresult import ReportedPolicy, ResultType
from mailyard.delivery.tlsrpt import no_policy
from mailyard.delivery.tlsrpt_send import TlsReporter
from mailyard.delivery.transaction import Dsn, Envelope
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

NO_HOST_ANSWERED = Reply(451, "4.4.1", "no mail host answered")


class Deliverer:
    def __init__(
        self,
        router: Router,
        pool: SessionPool,
        *,
        port: int,
        helo_name: str,
        opportunistic_tls: ssl.SSLContext,
        verifying_tls: Callable[[], ssl.SSLContext],
        connect_timeout: float,
        command_timeout: float,
        tlsrpt: TlsReporter | None = None,
        gate: Gate | None = None,
        max_transactions: int = 100,
        egress: Egress | None = None,
    ) -> None:
        self.router = router
        self.pool = pool
        self.port = port
        self.helo_name = helo_name
        self.opportunistic_tls = opportunistic_tls
        self.verifying_tls = verifying_tls  # the current one: its CA file may change
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.tlsrpt = tlsrpt
        self.gate = gate  # counts the sessions of each destination (delivery/gate.py)
        self.max_transactions = max_transactions  # without a permit
        self.egress = egress or Egress()

    async def mx_names(self, job: pb.DeliveryJob) -> list[str]:
        """The names of the hosts the job would go to, for telling its site; [] when
        they cannot be known now (the attempt then reports why)."""
        try:
            return await self.router.mx_names(job.domain)
        except RouteError:
            return []

    async def attempt(
        self, job: pb.DeliveryJob, permit: Permit | None = None
    ) -> list[RecipientOutcome]:
        """``permit``: the gate's, whose destination the sessions opened count towards."""
        recipients = list(job.recipients)
        started = time.perf_counter()

        def outcomes(
            replies: dict[str, Reply] | Reply,
            remote: str = "",
            tls: TlsSummary | None = None,
            dsn: bool = False,
        ) -> list[RecipientOutcome]:
            elapsed = time.perf_counter() - started
            return [
                RecipientOutcome(
                    r,
                    replies if isinstance(replies, Reply) else replies[r],
                    remote,
                    elapsed,
                    tls,
                    dsn,
                )
                for r in recipients
            ]

        try:
            route = await self.router.route(job.domain, published=job.origin != pb.ORIGIN_TLSRPT)
        except RouteError as exc:
            metrics.ROUTE_FAILURES.labels(exc.kind).inc()
            return outcomes(exc.reply)

        last_problem = NO_HOST_ANSWERED
        for host in route.hosts:
            try:
                reach = await self.router.for_host(route, host)  # DANE's, or the route itself
            except HostUnusable as exc:
                last_problem = self._unusable(job, host.name, exc)
                continue
            for address in host.addresses:
                try:
                    port = host.port or self.port
                    session, replies = await self._transact(
                        host.name, address, port, job, reach, permit
                    )
                except NoSource as exc:  # not the host's fault: no failure counted
                    if last_problem is NO_HOST_ANSWERED:
                        last_problem = exc.reply
                    continue
                except HostUnusable as exc:
                    last_problem = self._unusable(job, host.name, exc)
                    continue
                return outcomes(
                    replies,
                    session.mx,
                    summary(session, reach.policy_name),
                    # The transaction passed NOTIFY, ORCPT, RET and ENVID on (RFC 3461 §5.2).
                    dsn="DSN" in session.extensions,
                )
        # Every host failed before MAIL FROM. Even 5xx greetings are retried:
        # a host refusing everyone is more often broken than meaning it.
        reply = last_problem
        if reply.is_permanent:
            reply = Reply(451, reply.status.replace("5.", "4.", 1), reply.text)
        return outcomes(reply)

    def _count(self, session: SmtpSession, permit: Permit | None) -> None:
        """Make the new session count towards its destination's connections."""
        if permit is None or self.gate is None:
            session.max_transactions = self.max_transactions
            return
        gate, key = self.gate, permit.key
        session.destination = key
        session.max_transactions = permit.max_transactions
        gate.session_opened(key)
        session.on_close = lambda: gate.session_closed(key)

    def _unusable(self, job: pb.DeliveryJob, host: str, exc: HostUnusable) -> Reply:
        if isinstance(exc, SourceUnusable):  # ours to fix, not the host's
            log.warning("source address unusable", extra={"host": host, "reason": str(exc)})
            return exc.reply
        metrics.HOST_FAILURES.inc()
        log.info(
            "host unusable, trying the next",
            extra={"queue_id": job.queue_id, "host": host, "reason": str(exc)},
        )
        return exc.reply

    async def _transact(
        self,
        mx: str,
        address: str,
        port: int,
        job: pb.DeliveryJob,
        route: Route,
        permit: Permit | None,
    ) -> tuple[SmtpSession, dict[str, Reply]]:
        destination = permit.key if permit is not None else ""
        mail = Mail.of(job)
        suits, carries = suitable_for(mx, route, destination), self.egress.may_carry(mail)
        reused = self.pool.take(address, port, suits=lambda s: suits(s) and carries(s.source))
        if reused is not None:
            replies = await self._send(reused, job)
            if replies is not None:
                return reused, replies
            # It died while idle (the server timed it out): open a fresh one.
        if self.gate is not None and self.gate.must_make_room(destination):
            self.pool.evict_one(destination)  # an idle one to another of its hosts
        session = await self._open_from(mx, address, port, route, job, mail)
        self._count(session, permit)
        replies = await self._send(session, job)
        if replies is None:
            raise HostUnusable(
                Reply(451, "4.4.2", f"{mx}[{address}] hung up before answering MAIL FROM")
            )
        return session, replies

    async def _open_from(
        self, mx: str, address: str, port: int, route: Route, job: pb.DeliveryJob, mail: Mail
    ) -> SmtpSession:
        """A new session from the egress address whose turn it is; the next of its
        pool if that one cannot be bound. Raises NoSource when none can reach ``address``."""
        *others, last = self.egress.order(mail, address)
        for source in others:
            try:
                return await self._open(mx, address, port, route, job, source)
            except SourceUnusable as exc:
                self._unusable(job, mx, exc)
        return await self._open(mx, address, port, route, job, last)

    async def _send(self, session: SmtpSession, job: pb.DeliveryJob) -> dict[str, Reply] | None:
        """Replies per recipient; None if the session was dead before MAIL FROM."""
        try:
            replies = await send_transaction(session, envelope_of(job))
        except SessionLost:
            return None
        except BaseException:
            # Cancelled mid-transaction (the attempt deadline): the session's
            # state is unknown, so it must not go back to the pool.
            session.close()
            raise
        (_TLS_TRANSACTIONS if session.tls else _PLAIN_TRANSACTIONS).inc()
        if not self.pool.keep(session):
            await close_session(session)
        return replies

    async def _open(
        self,
        mx: str,
        address: str,
        port: int,
        route: Route,
        job: pb.DeliveryJob,
        source: Source | None = None,
    ) -> SmtpSession:
        mode = route.tls
        reported = self._reported(route, job)
        tries = [mode]
        if mode is TlsMode.OPPORTUNISTIC:
            # A broken handshake is no reason not to deliver: again in clear. Under
            # a testing policy, first as if it enforced (see the module's docstring).
            tries = [TlsMode.OPPORTUNISTIC, TlsMode.NONE]
            if reported is not None and route.reported is not None:
                tries.insert(0, TlsMode.VERIFY)
        for n, tried in enumerate(tries):
            try:
                session = await self._connect(mx, address, port, route, tried, source)
                break
            except HostUnusable as exc:
                if exc.tls_failure is not None and reported is not None and n == 0:
                    self._report_failure(reported, exc.tls_failure, mx, address, exc.reply.text)
                if exc.tls_failed and mode.requires_tls:
                    metrics.TLS_SESSIONS.labels(route.policy_name, "failed").inc()
                if not exc.tls_failed or n == len(tries) - 1:
                    raise
                log.info(
                    "TLS failed, trying again",
                    extra={"host": mx, "reason": str(exc), "next": tries[n + 1].value},
                )
        if reported is not None and self.tlsrpt is not None and n == 0:
            if session.tls:
                self.tlsrpt.success(reported)
            elif mode is TlsMode.OPPORTUNISTIC:
                reason = f"{session.where} did not offer STARTTLS, or refused it"
                self._report_failure(
                    reported, ResultType.STARTTLS_NOT_SUPPORTED, mx, address, reason
                )
        metrics.SESSIONS_OPENED.labels(_yes(session.tls), session.source or "default").inc()
        policy = route.policy_name
        metrics.TLS_SESSIONS.labels(policy, summary(session, policy).result).inc()
        return session

    def _reported(self, route: Route, job: pb.DeliveryJob) -> ReportedPolicy | None:
        """The policy a new session of this job is reported under; None: not reported."""
        if (
            self.tlsrpt is None
            or job.origin == pb.ORIGIN_TLSRPT
            or route.smarthost is not None
            or route.tls is TlsMode.NONE
        ):
            return None
        return route.reported or no_policy(job.domain)

    def _report_failure(
        self, policy: ReportedPolicy, result: ResultType, mx: str, address: str, reason: str
    ) -> None:
        if self.tlsrpt is not None:
            self.tlsrpt.failure(policy, result, mx=mx, address=address, reason=reason)

    async def _connect(
        self,
        mx: str,
        address: str,
        port: int,
        route: Route,
        mode: TlsMode,
        source: Source | None = None,
    ) -> SmtpSession:
        # DANE too handshakes without checking: the TLSA records do, afterwards.
        context = self.verifying_tls() if mode is TlsMode.VERIFY else self.opportunistic_tls
        return await open_session(
            mx=mx,
            address=address,
            port=port,
            helo_name=source.ehlo if source is not None else self.helo_name,
            tls_mode=mode,
            tls_context=context,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            login=route.smarthost.login() if route.smarthost is not None else None,
            tlsa=route.tlsa,
            source=source.address if source is not None else "",
        )


def suitable_for(mx: str, route: Route, destination: str = "") -> Callable[[SmtpSession], bool]:
    """Which pooled sessions may carry this route's mail.

    Only those counted towards the job's own shaping ``destination``: a
    session another destination's limit counts must not carry this one's mail.

    A session that was not verified for this very host name, and in the way
    the route asks (the Web PKI for ``verify``, its TLSA records for
    ``dane``), never carries mail for a destination that requires it; under
    DANE with only unusable records, any encrypted session will do. A
    relay's mail goes only on a session logged in as its user.
    """
    login = route.smarthost.username if route.smarthost is not None else ""
    wanted = {TlsMode.VERIFY: Verification.WEBPKI, TlsMode.DANE: Verification.DANE}.get(route.tls)
    if route.tlsa is not None and not route.tlsa.usable:
        wanted = None

    def suits(session: SmtpSession) -> bool:
        if session.destination != destination:
            return False
        if route.tls.requires_tls and not session.tls:
            return False
        if wanted is not None and not (session.verification is wanted and session.mx == mx):
            return False
        return session.authenticated_as == login

    return suits


def summary(session: SmtpSession, policy: str) -> TlsSummary:
    return TlsSummary(policy, session.tls_version, session.cipher, session.verified)


_TLS_TRANSACTIONS = metrics.TRANSACTIONS.labels("yes")  # bound once: used per job
_PLAIN_TRANSACTIONS = metrics.TRANSACTIONS.labels("no")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def envelope_of(job: pb.DeliveryJob) -> Envelope:
    # The VERP return path when the queue set one; the sender as given otherwise.
    return Envelope(
        sender_of(job),
        tuple(job.recipients),
        job.content,
        dsn=dsn_of(job),
        smtputf8=needs_smtputf8(job),
    )


def sender_of(job: pb.DeliveryJob) -> str:
    """What goes out at MAIL FROM."""
    return job.return_path or job.mail_from


def dsn_of(job: pb.DeliveryJob) -> Dsn | None:
    options = recipient_options(job) if job.recipient_options else {}
    if not (job.options.ret or job.options.envid or options):
        return None
    return Dsn(
        ret=job.options.ret,
        envid=job.options.envid,
        notify={r: o.notify for r, o in options.items() if o.notify},
        orcpt={r: o.orcpt for r, o in options.items() if o.orcpt},
    )


def needs_smtputf8(job: pb.DeliveryJob) -> bool:
    """Only when an address is not ASCII: RFC 6531 §3.4 lets a UTF-8 body go without."""
    return job.options.smtputf8 and not all(
        address.isascii() for address in (sender_of(job), *job.recipients)
    )
