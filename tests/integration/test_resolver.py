"""MX resolution against the real DNS server on loopback."""

from __future__ import annotations

import asyncio
import random

import pytest

from mailyard.delivery.resolver import MailHost, MxResolver, RouteError


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
