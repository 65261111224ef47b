"""Finding where a domain's mail goes: MX, then addresses (dnspython); and TLSA for DANE.

DNS answers become routes or :class:`RouteError` with the SMTP-style reply
that explains it: NXDOMAIN and null MX are permanent, SERVFAIL and timeouts
temporary. dnspython's exceptions stop here.

With ``dnssec`` (``delivery.dane.enabled``) every query carries the AD bit
(RFC 6840 §5.7): the resolver in ``delivery.nameservers`` must validate
DNSSEC and says, with AD in its answer, that it did. We check no signature
ourselves; an answer without AD is "insecure", whatever the zone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailyard.config import parse_host_port
from mailyard.delivery.dane import TlsaRecord
from mailyard.delivery.expiring import ExpiringCache
from mailyard.delivery.mx import MxRecord, exchangers_in_order, is_null_mx
from mailyard.reply import Reply


@dataclass(frozen=True, slots=True)
class MailHost:
    name: str
    addresses: tuple[str, ...]
    port: int | None = None  # None: delivery.port
    # Its address records came DNSSEC-authenticated (AD): only then are its
    # TLSA records looked up (RFC 7672 §2.2). Always False without dnssec.
    secure: bool = False
    # The name its address records were found at after CNAMEs; "" when there
    # was no CNAME. The first TLSA base domain to try (RFC 7672 §2.2.3).
    canonical: str = ""


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    records: tuple[TlsaRecord, ...]  # () when there are none (NXDOMAIN, NODATA)
    secure: bool  # the records, or their absence, were DNSSEC-authenticated (AD)


class RouteError(Exception):
    """No host to deliver to; ``reply`` says why and whether to try again."""

    def __init__(self, reply: Reply, kind: str, *, negative_ttl: float = 0.0) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.kind = kind  # bounded label: nxdomain, null_mx, no_address, servfail, timeout
        self.negative_ttl = negative_ttl  # how long the answer holds (RFC 2308); 0: not kept


class _Temporary(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Found:
    """What an address lookup (A, AAAA, or both) found."""

    addresses: tuple[str, ...]
    ttl: float
    secure: bool = False
    canonical: str = ""


class MxResolver:
    def __init__(
        self,
        nameservers: list[str],
        *,
        timeout: float,
        ipv6: bool,
        cache_size: int = 0,
        dnssec: bool = False,
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
        self._tlsa: ExpiringCache[str, TlsaAnswer] = ExpiringCache(cache_size)
        if dnssec:
            # RFC 6840 §5.7: AD in a query asks for AD in the answer, without
            # the RRSIGs that DO would bring along.
            self._resolver.flags = dns.flags.RD | dns.flags.AD
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
                found = await self._addresses(name)
            except _Temporary as exc:
                temporary.append(str(exc))
                continue
            if found.addresses:
                hosts.append(MailHost(name, found.addresses, None, found.secure, found.canonical))
                ttl = min(ttl, found.ttl)
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
            addresses = (await self._addresses(name)).addresses
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

    async def tlsa(self, name: str) -> TlsaAnswer:
        """The TLSA records at ``name`` (``_25._tcp.<host>``), and whether DNSSEC vouched
        for them (or for there being none). Kept for their TTL, a denial for the SOA
        minimum. A lookup that fails (SERVFAIL, which is also how a validating
        resolver answers for data whose signatures are bogus, or a timeout) is a
        RouteError, and not kept."""
        now = time.monotonic()
        cached = self._tlsa.get(name, now)
        if cached is not None:
            return cached
        try:
            answer = await self._resolver.resolve(name, "TLSA", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses().values()  # type: ignore[no-untyped-call]
            found = TlsaAnswer((), bool(responses) and all(map(_authenticated, responses)))
            ttl = _nxdomain_ttl(exc)
        except dns.exception.Timeout:
            raise RouteError(
                Reply(451, "4.4.3", f"DNS lookup of TLSA {name} timed out"), "timeout"
            ) from None
        except dns.exception.DNSException as exc:
            raise RouteError(
                Reply(451, "4.4.3", f"DNS lookup of TLSA {name} failed: {type(exc).__name__}"),
                "servfail",
            ) from None
        else:
            secure = _authenticated(answer.response)
            if answer.rrset is None:
                found, ttl = TlsaAnswer((), secure), _negative_ttl(answer.response)
            else:
                records = tuple(
                    TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, rdata.cert)
                    for rdata in answer.rrset
                )
                found, ttl = TlsaAnswer(records, secure), _remaining(answer)
        if ttl > 0:
            self._tlsa.put(name, found, now + ttl)
        return found

    async def _addresses(self, name: str) -> _Found:
        kinds = ["A", "AAAA"] if self._ipv6 else ["A"]
        results = await asyncio.gather(*(self._lookup(name, kind) for kind in kinds))
        with_data = [f for f in results if f.addresses]
        if not with_data:
            return _Found((), 0.0)
        return _Found(
            tuple(address for f in with_data for address in f.addresses),
            min(f.ttl for f in with_data),
            secure=all(f.secure for f in with_data),
            canonical=with_data[0].canonical,
        )

    async def _lookup(self, name: str, kind: str) -> _Found:
        try:
            answer = await self._resolver.resolve(name, kind, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return _Found((), 0.0)
        except dns.exception.DNSException as exc:
            raise _Temporary(f"{kind} {name}: {type(exc).__name__}") from None
        canonical = _host_name(answer.canonical_name)
        return _Found(
            tuple(rdata.address for rdata in (answer.rrset or [])),
            _remaining(answer),
            secure=_authenticated(answer.response),
            canonical=canonical if canonical != name.lower().rstrip(".") else "",
        )


def _authenticated(response: dns.message.Message | None) -> bool:
    """The resolver vouched for this answer: AD (RFC 4035 §3.2.3), over the whole CNAME chain."""
    return response is not None and bool(response.flags & dns.flags.AD)


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
