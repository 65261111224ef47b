"""MTA-STS (RFC 8461), the I/O part: the ``_mta-sts`` TXT record and the policy over HTTPS.

The policy host ``mta-sts.<domain>`` is fetched with delivery's HTTPS client
(``https.py``): resolved through ``delivery.nameservers``, its addresses
outside ``delivery.prohibited_networks`` (a policy URL must not reach the
cluster's insides), its certificate checked with ``delivery.tls_ca_file``,
redirects not followed (§3.3).

§5.1's rules: a valid cached policy is used while the TXT id is unchanged
or DNS fails; a new id fetches again, and a failed fetch keeps the cached
policy; a TXT record with nothing fetched and nothing cached is as if the
domain had no policy. One fetch per domain at a time.

A fetch that fails is told to ``on_failure`` (the TLS reporter) with RFC
8460's name for it (§4.3.2.2): ``sts-webpki-invalid`` when the policy host's
certificate does not verify, ``sts-policy-invalid`` when what it served is
no policy, ``sts-policy-fetch-error`` for everything else (DNS, connection,
an HTTP status other than 200, a timeout).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

import aiohttp

from mailyard.delivery import https, metrics
from mailyard.delivery.expiring import ExpiringCache
from mailyard.delivery.mtasts import (
    MAX_POLICY_BYTES,
    Policy,
    PolicyError,
    parse_policy,
    record_id,
)
from mailyard.delivery.resolver import MxResolver, RouteError
from mailyard.delivery.safety import Safety
from mailyard.delivery.tlsresult import ResultType

log = logging.getLogger(__name__)

MIN_RECORD_SECONDS = 60.0  # a TXT answer is kept at least this long (a TTL of 0 is common)

FailureObserver = Callable[[str, ResultType, str], None]  # (domain, result, reason)


class FetchError(Exception):
    """The policy host answered, but not with the policy (an HTTP status other than 200)."""


class MtaSts:
    def __init__(
        self,
        resolver: MxResolver,
        *,
        https_port: int,
        timeout: float,
        tls_context: Callable[[], ssl.SSLContext],
        safety: Safety | None,
        cache_size: int,
        clock: Callable[[], float] = time.monotonic,
        on_failure: FailureObserver | None = None,
    ) -> None:
        self.resolver = resolver
        self.https_port = https_port
        self.timeout = timeout
        self.tls_context = tls_context
        self.safety = safety
        self.cache: ExpiringCache[str, Policy] = ExpiringCache(cache_size)
        # The TXT record's id by domain; "" when there is no valid record.
        self._records: ExpiringCache[str, str] = ExpiringCache(cache_size)
        self._clock = clock
        self._fetching: dict[str, asyncio.Task[Policy | None]] = {}
        self.on_failure = on_failure

    async def policy(self, domain: str) -> Policy | None:
        """The domain's policy, or None when it has none (or none could be had)."""
        now = self._clock()
        cached = self.cache.get(domain, now)
        try:
            record = await self._record(domain, now)
        except RouteError:
            return cached  # §5.1: DNS trouble does not void a cached policy
        if record is None or (cached is not None and cached.id == record):
            return cached
        fetching = self._fetching.get(domain)
        if fetching is None:
            fetching = asyncio.create_task(self._fetch(domain, record))
            self._fetching[domain] = fetching
            fetching.add_done_callback(lambda _: self._fetching.pop(domain, None))
        fetched = await asyncio.shield(fetching)
        return fetched if fetched is not None else cached

    async def _record(self, domain: str, now: float) -> str | None:
        kept = self._records.get(domain, now)
        if kept is None:
            records, ttl = await self.resolver.txt(f"_mta-sts.{domain}")
            kept = record_id(records) or ""
            self._records.put(domain, kept, now + max(ttl, MIN_RECORD_SECONDS))
        return kept or None

    async def _fetch(self, domain: str, record: str) -> Policy | None:
        url = f"https://mta-sts.{domain}:{self.https_port}/.well-known/mta-sts.txt"
        try:
            text = await self._download(url)
            policy = parse_policy(text, record)
        except (
            PolicyError,
            FetchError,
            aiohttp.ClientError,
            TimeoutError,
            RouteError,
            OSError,
        ) as exc:
            metrics.MTA_STS_FETCHES.labels("failed").inc()
            reason = str(exc) or type(exc).__name__
            log.warning(
                "MTA-STS policy could not be fetched",
                extra={"domain": domain, "url": url, "reason": reason},
            )
            if self.on_failure is not None:
                self.on_failure(domain, fetch_failure(exc), reason)
            return None
        metrics.MTA_STS_FETCHES.labels("ok").inc()
        self.cache.put(domain, policy, self._clock() + policy.max_age)
        log.info(
            "MTA-STS policy fetched",
            extra={"domain": domain, "id": record, "mode": policy.mode.value, "mx": policy.mx},
        )
        return policy

    async def _download(self, url: str) -> str:
        async with (
            https.session(self.resolver, self.safety, self.tls_context(), self.timeout) as http,
            http.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} from {url}")
            if response.content_type != "text/plain":
                raise PolicyError(f"Content-Type {response.content_type!r}, not text/plain")
            body = await response.content.read(MAX_POLICY_BYTES + 1)
            if len(body) > MAX_POLICY_BYTES:
                raise PolicyError(f"policy larger than {MAX_POLICY_BYTES} bytes")
            return body.decode("utf-8", "replace")


def fetch_failure(error: BaseException) -> ResultType:
    """RFC 8460 §4.3.2.2's name for why a policy could not be had."""
    if isinstance(error, PolicyError):
        return ResultType.STS_POLICY_INVALID
    if isinstance(error, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return ResultType.STS_WEBPKI_INVALID
    return ResultType.STS_POLICY_FETCH_ERROR
