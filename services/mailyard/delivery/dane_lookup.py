"""Which TLSA records an MX host has, found as RFC 7672 §2.2 says (the DNS half of DANE).

A host's TLSA records count only when DNSSEC vouches for them, and are
looked up only when it vouched for the host's address records too (§2.2):
otherwise DANE does not apply and the host gets its route's own TLS. An
authenticated "there are none" (NXDOMAIN, NODATA) means the same.

The records are looked up at ``_<port>._tcp.`` + the host's CNAME-expanded
name first, then the MX host name itself (§2.2.3). This is an
approximation of §2.2.3: the resolver's AD bit covers the whole CNAME chain
at once, so a chain signed only at its first link counts as insecure here
(no DANE), where §2.2.3 would still look for TLSA at the MX host name.

A lookup that fails (SERVFAIL, which is also what a validating resolver
answers for bogus signatures, or no answer at all) makes the host unusable
(§2.1.1, TLSRPT's ``dnssec-invalid``): the next MX, then the retry ladder.
"""

from __future__ import annotations

from mailyard.delivery import metrics, tlspolicy
from mailyard.delivery.dane import Tlsa
from mailyard.delivery.resolver import MailHost, MxResolver, RouteError
from mailyard.delivery.smtp import HostUnusable
from mailyard.delivery.tlsresult import ResultType


class DaneLookup:
    def __init__(self, resolver: MxResolver, *, port: int) -> None:
        self.resolver = resolver
        self.port = port  # delivery.port: the records are those of _<port>._tcp

    async def tlsa(self, host: MailHost) -> Tlsa | None:
        """The host's authenticated TLSA RRset; None when DANE does not apply to it.

        Raises HostUnusable when the lookup failed.
        """
        if not host.secure:
            metrics.DANE_LOOKUPS.labels("insecure").inc()
            return None
        port = host.port or self.port
        result = "none"
        for base in dict.fromkeys(name for name in (host.canonical, host.name) if name):
            try:
                answer = await self.resolver.tlsa(f"_{port}._tcp.{base}")
            except RouteError as exc:
                metrics.DANE_LOOKUPS.labels("failed").inc()
                raise HostUnusable(
                    tlspolicy.tlsa_lookup_failed(host.name, exc.reply.text),
                    tls_failure=ResultType.DNSSEC_INVALID,
                ) from None
            if not answer.secure:
                result = "insecure"
            elif answer.records:
                metrics.DANE_LOOKUPS.labels("secure").inc()
                return Tlsa(host.name, base, answer.records)
        metrics.DANE_LOOKUPS.labels(result).inc()
        return None
