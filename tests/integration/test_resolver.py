"""MX resolution against the real DNS server on loopback."""

from __future__ import annotations

import asyncio
import random

import pytest

from mailyard.delivery.dane import TlsaRecord
from mailyard.delivery.resolver import MailHost, MxResolver, RouteError, TlsaAnswer


def resolver(dns_server, **options) -> MxResolver:
    options.setdefault("timeout", 2.0)
    return MxResolver([dns_server.address], ipv6=False, rng=random.Random(1), **options)


def route(dns_server, domain: str, **options) -> list[MailHost]:
    return asyncio.run(resolver(dns_server, **options).route(domain))


def test_mx_hosts_in_preference_order(dns_server) -> None:
    assert route(dns_server, "beta.test") == [
        MailHost("mx1.beta.test", ("127.0.0.3",)),
        MailHost("mx2.beta.test", ("127.0.0.4",)),
    ]


def test_domain_without_mx_is_its_own_mail_host(dns_server) -> None:
    assert route(dns_server, "gamma.test") == [MailHost("gamma.test", ("127.0.0.5",))]


def test_cname_is_followed(dns_server) -> None:
    assert route(dns_server, "alias.test") == [MailHost("mx.alpha.test", ("127.0.0.2",))]


@pytest.mark.parametrize(
    ("domain", "code", "status", "kind"),
    [
        ("nullmx.test", 556, "5.1.10", "null_mx"),
        ("nxdomain.test", 550, "5.1.2", "nxdomain"),
        ("servfail.test", 451, "4.4.3", "servfail"),
        ("timeout.test", 451, "4.4.3", "timeout"),
    ],
)
def test_failures_say_whether_to_try_again(dns_server, domain, code, status, kind) -> None:
    with pytest.raises(RouteError) as failure:
        route(dns_server, domain, timeout=1.0)
    assert (failure.value.reply.code, failure.value.reply.status) == (code, status)
    assert failure.value.kind == kind


def test_routes_are_cached_for_their_ttl(dns_server) -> None:
    async def run() -> list[int]:
        mx = resolver(dns_server, cache_size=100)
        counts = [dns_server.query_count("shortttl.test", "MX")]
        await mx.route("shortttl.test")
        await mx.route("shortttl.test")
        counts.append(dns_server.query_count("shortttl.test", "MX"))
        await asyncio.sleep(1.2)  # the MX record's TTL is 1 second
        await mx.route("shortttl.test")
        counts.append(dns_server.query_count("shortttl.test", "MX"))
        return counts

    before, cached, expired = asyncio.run(run())
    assert cached - before == 1
    assert expired - before == 2


def test_failures_are_not_cached(dns_server) -> None:
    async def run() -> int:
        mx = resolver(dns_server, cache_size=100)
        before = dns_server.query_count("servfail.test", "MX")
        for _ in range(3):
            with pytest.raises(RouteError):
                await mx.route("servfail.test")
        return dns_server.query_count("servfail.test", "MX") - before

    assert asyncio.run(run()) >= 3


def test_a_domain_that_does_not_exist_is_remembered_for_the_soa_minimum(dns_server) -> None:
    """RFC 2308: NXDOMAIN holds for min(SOA TTL, SOA MINIMUM): 60 s in the test zone."""
    lookups = dns_server.query_count("nxdomain.test", "MX")

    async def twice() -> list[RouteError]:
        mx = resolver(dns_server, cache_size=100)
        errors = []
        for _ in range(2):
            with pytest.raises(RouteError) as failure:
                await mx.route("nxdomain.test")
            errors.append(failure.value)
        return errors

    first, second = asyncio.run(twice())
    assert first.negative_ttl == 60
    assert second is first  # from the cache
    assert dns_server.query_count("nxdomain.test", "MX") - lookups == 1


def test_no_mx_is_remembered_for_the_soa_minimum_too(dns_server) -> None:
    lookups = dns_server.query_count("gamma.test", "MX")

    async def twice() -> None:
        mx = resolver(dns_server, cache_size=100)
        for _ in range(2):
            assert await mx.route("gamma.test") == [MailHost("gamma.test", ("127.0.0.5",))]

    asyncio.run(twice())
    assert dns_server.query_count("gamma.test", "MX") - lookups == 1


def test_temporary_failures_are_never_remembered(dns_server) -> None:
    lookups = dns_server.query_count("servfail.test", "MX")

    async def twice() -> None:
        mx = resolver(dns_server, cache_size=100, timeout=1.0)
        for _ in range(2):
            with pytest.raises(RouteError):
                await mx.route("servfail.test")

    asyncio.run(twice())
    assert dns_server.query_count("servfail.test", "MX") - lookups >= 2


# --- DNSSEC (the AD bit) and TLSA, for DANE ------------------------------------------

TLSA_TEXT = "3 1 1 " + "ab" * 32


def signed_domain(dns_server, name: str, *, sign_tlsa: bool = True) -> str:
    """``name``.test with one MX host, its A record and TLSA record, all signed
    (the TLSA record only with ``sign_tlsa``)."""
    domain, mx = f"{name}.test.", f"mx.{name}.test."
    dns_server.add(domain, "MX", f"10 {mx}")
    dns_server.add(mx, "A", "127.0.0.2")
    dns_server.add(f"_25._tcp.{mx}", "TLSA", TLSA_TEXT)
    dns_server.sign(domain, mx, *([f"_25._tcp.{mx}"] if sign_tlsa else []))
    return domain.rstrip(".")


def test_hosts_are_secure_only_when_the_resolver_vouches_and_we_asked(dns_server) -> None:
    domain = signed_domain(dns_server, "dnssec-hosts")
    [asked] = route(dns_server, domain, dnssec=True)
    assert asked == MailHost(f"mx.{domain}", ("127.0.0.2",), secure=True)
    [not_asked] = route(dns_server, domain)  # no AD in the query: none in the answer
    assert not not_asked.secure
    [unsigned] = route(dns_server, "alpha.test", dnssec=True)
    assert not unsigned.secure


def test_a_host_behind_a_cname_knows_its_canonical_name(dns_server) -> None:
    dns_server.add("dnssec-cname.test.", "MX", "10 mail.dnssec-cname.test.")
    dns_server.add("mail.dnssec-cname.test.", "CNAME", "smtp.dnssec-provider.test.")
    dns_server.add("smtp.dnssec-provider.test.", "A", "127.0.0.2")
    dns_server.sign("mail.dnssec-cname.test.")  # the chain's second link is not signed
    [host] = route(dns_server, "dnssec-cname.test", dnssec=True)
    assert (host.name, host.canonical, host.secure) == (
        "mail.dnssec-cname.test",
        "smtp.dnssec-provider.test",
        False,
    )
    dns_server.sign("smtp.dnssec-provider.test.")
    [host] = route(dns_server, "dnssec-cname.test", dnssec=True)
    assert host.secure


def test_tlsa_records_and_whether_they_were_authenticated(dns_server) -> None:
    signed = signed_domain(dns_server, "dnssec-tlsa")
    unsigned = signed_domain(dns_server, "dnssec-tlsa-unsigned", sign_tlsa=False)
    dns_server.sign("_25._tcp.nothing.dnssec-tlsa.test.")
    dns_server.fail("_25._tcp.broken.dnssec-tlsa.test.")

    async def run() -> list[TlsaAnswer | RouteError]:
        mx = resolver(dns_server, dnssec=True, timeout=1.0)
        found: list[TlsaAnswer | RouteError] = []
        for name in (
            f"_25._tcp.mx.{signed}",
            f"_25._tcp.mx.{unsigned}",
            "_25._tcp.nothing.dnssec-tlsa.test",  # NXDOMAIN, authenticated
            "_25._tcp.mx.alpha.test",  # NODATA below an existing name, not signed
            "_25._tcp.broken.dnssec-tlsa.test",
        ):
            try:
                found.append(await mx.tlsa(name))
            except RouteError as exc:
                found.append(exc)
        return found

    secure, insecure, denied, nodata, failed = asyncio.run(run())
    assert secure == TlsaAnswer((TlsaRecord(3, 1, 1, bytes.fromhex("ab" * 32)),), secure=True)
    assert insecure == TlsaAnswer(secure.records, secure=False)
    assert denied == TlsaAnswer((), secure=True)
    assert nodata == TlsaAnswer((), secure=False)
    assert isinstance(failed, RouteError)
    assert failed.kind == "servfail"


def test_tlsa_answers_are_cached_and_failures_are_not(dns_server) -> None:
    domain = signed_domain(dns_server, "dnssec-cache")
    name = f"_25._tcp.mx.{domain}"
    dns_server.fail("_25._tcp.down.dnssec-cache.test.")

    async def run() -> tuple[int, int]:
        mx = resolver(dns_server, dnssec=True, cache_size=100, timeout=1.0)
        before = dns_server.query_count(name, "TLSA")
        failed_before = dns_server.query_count("_25._tcp.down.dnssec-cache.test", "TLSA")
        for _ in range(3):
            await mx.tlsa(name)
            with pytest.raises(RouteError):
                await mx.tlsa("_25._tcp.down.dnssec-cache.test")
        return (
            dns_server.query_count(name, "TLSA") - before,
            dns_server.query_count("_25._tcp.down.dnssec-cache.test", "TLSA") - failed_before,
        )

    answered, failed = asyncio.run(run())
    assert answered == 1
    assert failed >= 3
