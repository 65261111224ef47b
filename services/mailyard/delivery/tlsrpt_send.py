"""SMTP TLS Reporting (RFC 8460), the I/O part: the interval timer, the TXT lookup, sending.

Delivery tells :class:`TlsReporter` of every TLS negotiation it starts
(``attempt.py``) and of every MTA-STS policy it could not fetch
(``mtasts_fetch.py``); the counting itself is ``tlsrpt.py``. At the end of
each ``delivery.tlsrpt.interval`` (aligned to the epoch: UTC midnight for a
day), after a random pause of up to a tenth of the interval (at most an
hour: §4.1 asks not to flood receivers at 00:00), every domain counted gets
its ``_smtp._tls`` TXT record looked up, and a domain that publishes one gets
its report: as mail (``mailto:``), stored on ``<prefix>.inbound`` for our
own pipeline to sign and deliver; and by POST (``https:``) with delivery's
HTTPS client (``https.py``: our resolver, prohibited networks left out, the
certificate checked with ``delivery.tls_ca_file``, no redirects, a timeout).
A POST that fails is not tried again: that endpoint misses one report.

Each replica reports for itself: report ids carry a token of the process,
and receivers add reports up by report-id (§4.4). On shutdown the counts of
the interval under way are sent at once, for the time that passed, within
:data:`FLUSH_SECONDS`; what cannot be sent by then is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from mailyard import ids
from mailyard.broker import Broker, Publish, PublishError, QueueName
from mailyard.config import TlsRptConfig
from mailyard.delivery import https, metrics
from mailyard.delivery.resolver import MxResolver, RouteError
from mailyard.delivery.safety import Safety
from mailyard.delivery.tlsresult import ReportedPolicy, ResultType
from mailyard.delivery.tlsrpt import (
    Counted,
    DomainReport,
    Record,
    TlsCounts,
    interval_end,
    parse_record,
    report_document,
    report_id,
)
from mailyard.delivery.tlsrpt_mail import MEDIA_TYPE, compress, report_mail, report_message

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # for the last, partial interval: within the chart's 10s margin after the grace
MAX_SPREAD_SECONDS = 3600.0
CONCURRENT_DOMAINS = 8  # lookups and sends at once, so a big interval does not flood DNS


class ReportRefused(Exception):
    """The HTTPS endpoint answered, but not with a 2xx."""


class TlsReporter:
    def __init__(
        self,
        config: TlsRptConfig,
        *,
        hostname: str,
        resolver: MxResolver,
        broker: Broker,
        safety: Safety | None,
        tls_context: Callable[[], ssl.SSLContext],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.hostname = hostname
        self.resolver = resolver
        self.broker = broker
        self.safety = safety
        self.tls_context = tls_context
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (spreading load, not secrets)
        self.replica = secrets.token_hex(4)  # this process, in every report id
        self.counts = TlsCounts(
            clock(),
            max_domains=config.max_domains,
            max_failure_details=config.max_failure_details,
        )
        self._sequence = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- counting: delivery calls these for every TLS negotiation it starts ----------

    def success(self, policy: ReportedPolicy) -> None:
        self._account(self.counts.success(policy), "success")

    def failure(
        self,
        policy: ReportedPolicy,
        result: ResultType,
        *,
        mx: str = "",
        address: str = "",
        reason: str = "",
    ) -> None:
        counted = self.counts.failure(policy, result, mx=mx, address=address, reason=reason)
        self._account(counted, "failure")

    def _account(self, counted: Counted, result: str) -> None:
        if counted is Counted.NO_ROOM:
            metrics.TLSRPT_DROPPED.labels(counted.value).inc()
            return
        if counted is Counted.NO_DETAIL:
            metrics.TLSRPT_DROPPED.labels(counted.value).inc()
        metrics.TLSRPT_SESSIONS.labels(result).inc()

    # --- the interval timer ----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tlsrpt")

    async def stop(self) -> None:
        """Send what was counted so far (within FLUSH_SECONDS), then stop."""
        self._stopping.set()
        try:
            async with asyncio.timeout(FLUSH_SECONDS):
                if self._task is not None:
                    await self._task  # an interval being sent finishes, without its pause
                await self.send(self.counts.take(self._clock()))
        except TimeoutError:
            log.warning("TLS reports not sent at shutdown: out of time")
        finally:
            if self._task is not None:
                self._task.cancel()

    async def _run(self) -> None:
        interval = self.config.interval
        spread = min(interval.total_seconds() / 10, MAX_SPREAD_SECONDS)
        while not self._stopping.is_set():
            end = interval_end(self._clock(), interval)
            if await self._wait((end - self._clock()).total_seconds()):
                return
            reports = self.counts.take(end)
            if reports:
                await self._wait(self._rng.uniform(0, spread))
                await self.send(reports)

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less when stopping; True if stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._stopping.wait()
        return self._stopping.is_set()

    # --- sending ---------------------------------------------------------------------

    async def send(self, reports: list[DomainReport]) -> None:
        """Each domain's report to where its ``_smtp._tls`` record says, if it has one."""
        if not reports:
            return
        log.info("TLS reports due", extra={"domains": len(reports)})
        slots = asyncio.Semaphore(CONCURRENT_DOMAINS)

        async def one(report: DomainReport) -> None:
            async with slots:
                try:
                    await self._send_one(report)
                except Exception:  # one domain's trouble must not stop the others' reports
                    log.exception("TLS report failed", extra={"domain": report.domain})

        await asyncio.gather(*(one(report) for report in reports))

    async def _send_one(self, report: DomainReport) -> None:
        name = f"_smtp._tls.{report.domain}"
        try:
            records, _ = await self.resolver.txt(name)
        except RouteError as exc:
            metrics.TLSRPT_LOOKUPS.labels("failed").inc()
            log.warning(
                "TLS report not sent: TXT lookup failed",
                extra={"domain": report.domain, "reason": str(exc)},
            )
            return
        record = parse_record(records)
        if record is None:
            metrics.TLSRPT_LOOKUPS.labels("none").inc()
            return
        metrics.TLSRPT_LOOKUPS.labels("found").inc()
        self._sequence += 1
        sequence = self._sequence
        identifier = report_id(report.start, self.replica, sequence, self.hostname)
        document = report_document(
            report,
            organization=self.config.organization,
            contact=self.config.contact,
            report_id=identifier,
        )
        compressed = compress(document)
        if record.mailto:
            await self._mail(report, record, compressed, identifier, f"{self.replica}{sequence}")
        for url in record.https:
            await self._post(report, url, compressed, identifier)

    async def _mail(
        self,
        report: DomainReport,
        record: Record,
        compressed: bytes,
        identifier: str,
        unique_id: str,
    ) -> None:
        now = self._clock()
        content = report_mail(
            report,
            compressed,
            organization=self.config.organization,
            contact=self.config.contact,
            recipients=record.mailto,
            report_id=identifier,
            unique_id=unique_id,
            now=now,
        )
        message_id = ids.new_message_id()
        message = report_message(
            content, record.mailto, message_id=message_id, helo=self.hostname, now=now
        )
        try:
            await self.broker.store([Publish(QueueName.INBOUND, (message,))])
        except PublishError as exc:
            self._failed("mailto", report, ", ".join(record.mailto), identifier, exc)
            return
        metrics.TLSRPT_REPORTS.labels("mailto", "sent").inc()
        log.info(
            "TLS report queued",
            extra={
                "domain": report.domain,
                "report_id": identifier,
                "message_id": message_id,
                "to": list(record.mailto),
            },
        )

    async def _post(
        self, report: DomainReport, url: str, compressed: bytes, identifier: str
    ) -> None:
        timeout = self.config.timeout.total_seconds()
        try:
            https.check_url(url, self.safety)
            async with (
                https.session(self.resolver, self.safety, self.tls_context(), timeout) as http,
                http.post(
                    url,
                    data=compressed,
                    headers={"Content-Type": MEDIA_TYPE},
                    allow_redirects=False,
                ) as response,
            ):
                if not 200 <= response.status < 300:
                    raise ReportRefused(f"HTTP {response.status} {response.reason or ''}".strip())
        except (ReportRefused, aiohttp.ClientError, TimeoutError, RouteError, OSError) as exc:
            self._failed("https", report, url, identifier, exc)
            return
        metrics.TLSRPT_REPORTS.labels("https", "sent").inc()
        log.info(
            "TLS report posted",
            extra={"domain": report.domain, "report_id": identifier, "url": url},
        )

    def _failed(
        self, method: str, report: DomainReport, to: str, identifier: str, exc: BaseException
    ) -> None:
        metrics.TLSRPT_REPORTS.labels(method, "failed").inc()
        log.warning(
            "TLS report not sent",
            extra={
                "domain": report.domain,
                "report_id": identifier,
                "method": method,
                "to": to,
                "reason": str(exc) or type(exc).__name__,
            },
        )
