"""The HTTPS client of delivery: MTA-STS policies (GET) and TLS reports (POST).

Both go to URLs that remote domains choose, so both get the same rules: names
are resolved through ``delivery.nameservers`` (aiohttp's resolver is replaced
by ours), addresses in ``delivery.prohibited_networks`` are never connected to
(an IP address written in the URL included: aiohttp does not resolve those, so
it is checked here), the certificate is checked with ``delivery.tls_ca_file``
(or the system store), redirects are not followed, and every request has a
total timeout.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mailyard.delivery.resolver import MxResolver
from mailyard.delivery.safety import Safety


class ProhibitedUrl(OSError):
    """The URL names an address delivery must not connect to (or is not https)."""


def session(
    resolver: MxResolver,
    safety: Safety | None,
    tls_context: ssl.SSLContext,
    timeout: float,
) -> aiohttp.ClientSession:
    """A session for one request or a few; close it (``async with``) when done."""
    connector = aiohttp.TCPConnector(resolver=SafeResolver(resolver, safety), ssl=tls_context)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


def check_url(url: str, safety: Safety | None) -> None:
    """Raise :class:`ProhibitedUrl` unless ``url`` is https to a name or an allowed address."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ProhibitedUrl(f"{url!r} is not an https:// URL with a host")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: SafeResolver filters its addresses
    if safety is not None and not safety.allows(parts.hostname):
        raise ProhibitedUrl(f"{parts.hostname} is in delivery.prohibited_networks")


class SafeResolver(AbstractResolver):
    """aiohttp's name lookups through delivery's resolver, with prohibited networks left out."""

    def __init__(self, resolver: MxResolver, safety: Safety | None) -> None:
        self.resolver = resolver
        self.safety = safety

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.resolver.host(host, port)
        addresses = [a for a in found.addresses if self.safety is None or self.safety.allows(a)]
        if not addresses:
            raise ProhibitedUrl(f"{host} has no address outside delivery.prohibited_networks")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None
