"""Finding where a domain's mail goes: MX, then addresses (dnspython).

DNS answers become routes or :class:`RouteError` with the SMTP-style reply
that explains it: NXDOMAIN and null MX are permanent, SERVFAIL and timeouts
temporary. dnspython's exceptions stop here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailyard.config import parse_host_port
from mailyard.delivery.expiring import ExpiringCache
from mailyard.delivery.mx import MxRecord, exchangers_in_order, is_null_mx
from mailyard.reply import Reply


@dataclass(frozen=True, slots=True)
class MailHost:
    name: str
    addresses: tuple[str, ...]
    port: int | None = None  # None: delivery.port


class RouteError(Exception):
    """No host to deliver to; ``reply`` says why and whether to try again."""

    def __init__(self, reply: Reply, kind: str, *, negative_ttl: float = 0.0) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.kind = kind  # bounded label: nxdomain, null_mx, no_address, servfail, timeout
        self.negative_ttl = negative_ttl  # how long the answer holds (RFC 2308); 0: not kept


class _Temporary(Exception):
    pass


class MxResolver:
    def __init__(
        self,
        nameservers: list[str],
        *,
        timeout: float,
        ipv6: bool,
        cache_size: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_host_port(server, default_port=53))
                for server in nameservers
            ]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        # Routes are kept for the smallest TTL of the answers they came from:
        # a busy destination is looked up once a TTL, not once a message. A
        # domain that does not exist is remembered too, for its SOA minimum
        # (RFC 2308), so a list full of typos does not query it per message.
        self._routes: ExpiringCache[str, list[MailHost] | RouteError] = ExpiringCache(cache_size)
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 3.0)
        self._ipv6 = ipv6
        self._rng = rng or random.Random()  # noqa: S311 (load spreading, not secrets)

    async def route(self, domain: str) -> list[MailHost]:
        """Hosts to try, in order, each with its addresses."""
        now = time.monotonic()
        cached = self._routes.get(domain, now)
        if cached is not None:
            if isinstance(cached, RouteError):
                raise cached
            return cached
        try:
            hosts, ttl = await self._resolve(domain)
        except RouteError as exc:
            if exc.negative_ttl > 0:
                self._routes.put(domain, exc, now + exc.negative_ttl)
            raise
        if ttl > 0:
            self._routes.put(domain, hosts, now + ttl)
        return hosts

    async def _resolve(self, domain: str) -> tuple[list[MailHost], float]:
        try:
            answer = await self._resolver.resolve(domain, "MX", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise RouteError(
                Reply(550, "5.1.2", f"Host or domain name not found: {domain} does not exist"),
                "nxdomain",
                negative_ttl=_nxdomain_ttl(exc),
            ) from None
        except dns.exception.Timeout:
            raise RouteError(
                Reply(451, "4.4.3", f"DNS lookup of MX for {domain} timed out"), "timeout"
            ) from None
        except (dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            raise RouteError(
                Reply(451, "4.4.3", f"DNS lookup of MX for {domain} failed: {exc}"), "servfail"
            ) from None

        records = [
            MxRecord(rdata.preference, _host_name(rdata.exchange)) for rdata in (answer.rrset or [])
        ]
        if is_null_mx(records):
            raise RouteError(
                Reply(556, "5.1.10", f"Domain {domain} does not accept mail (null MX, RFC 7505)"),
                "null_mx",
            )
        # No MX at all: the domain itself is the implicit MX (RFC 5321 §5.1).
        names = exchangers_in_order(records, self._rng) if records else [domain]

        # NODATA (no MX): kept for the SOA minimum, as RFC 2308 says.
        ttl = _remaining(answer) if records else _negative_ttl(answer.response)
        hosts: list[MailHost] = []
        temporary: list[str] = []
        for name in names:
            try:
                addresses, address_ttl = await self._addresses(name)
            except _Temporary as exc:
                temporary.append(str(exc))
                continue
            if addresses:
                hosts.append(MailHost(name, addresses))
                ttl = min(ttl, address_ttl)
        if hosts:
            return hosts, ttl
        if temporary:
            raise RouteError(
                Reply(
                    451, "4.4.3", f"DNS lookup of mail hosts for {domain} failed: {temporary[0]}"
                ),
                "servfail",
            )
        what = "MX hosts have" if records else "domain has no MX and"
        raise RouteError(
            Reply(550, "5.4.4", f"Unable to route: {domain}'s {what} no address records"),
            "no_address",
        )

    async def host(self, name: str, port: int) -> MailHost:
        """One named host (a smarthost: A/AAAA, no MX), or RouteError."""
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return MailHost(name, (name,), port)
        try:
            addresses, _ = await self._addresses(name)
        except _Temporary as exc:
            raise RouteError(
                Reply(451, "4.4.3", f"DNS lookup of {name} failed: {exc}"), "servfail"
            ) from None
        if not addresses:
            raise RouteError(
                Reply(451, "4.4.4", f"Unable to route: {name} has no address records"),
                "no_address",
            )
        return MailHost(name, addresses, port)

    async def txt(self, name: str) -> tuple[list[str], float]:
        """A name's TXT records (each one's strings joined) and how long the answer
        holds; ``[]`` with the negative TTL when there are none. A failed lookup
        is a RouteError (``servfail``)."""
        try:
            answer = await self._resolver.resolve(name, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            return [], _nxdomain_ttl(exc)
        except dns.exception.DNSException as exc:
            raise RouteError(
                Reply(451, "4.4.3", f"DNS lookup of TXT {name} failed: {type(exc).__name__}"),
                "servfail",
            ) from None
        if answer.rrset is None:
            return [], _negative_ttl(answer.response)
        records = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset]
        return records, _remaining(answer)

    async def _addresses(self, name: str) -> tuple[tuple[str, ...], float]:
        kinds = ["A", "AAAA"] if self._ipv6 else ["A"]
        results = await asyncio.gather(*(self._lookup(name, kind) for kind in kinds))
        addresses = tuple(address for found, _ in results for address in found)
        return addresses, min(ttl for found, ttl in results if found) if addresses else 0.0

    async def _lookup(self, name: str, kind: str) -> tuple[list[str], float]:
        try:
            answer = await self._resolver.resolve(name, kind, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return [], 0.0
        except dns.exception.DNSException as exc:
            raise _Temporary(f"{kind} {name}: {type(exc).__name__}") from None
        return [rdata.address for rdata in (answer.rrset or [])], _remaining(answer)


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 §5: the smaller of the SOA's TTL and its MINIMUM field; 0 if no SOA."""
    if response is None:
        return 0.0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0


def _nxdomain_ttl(error: dns.resolver.NXDOMAIN) -> float:
    responses = error.responses()  # type: ignore[no-untyped-call]
    return min((_negative_ttl(r) for r in responses.values()), default=0.0)


def _remaining(answer: dns.resolver.Answer) -> float:
    """Seconds this answer may still be used (its TTL, as dnspython tracks it)."""
    return max(0.0, answer.expiration - time.time())


def _host_name(name: dns.name.Name) -> str:
    """Lower case, no final dot; the root (a null MX's exchange) is ``""``."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()
