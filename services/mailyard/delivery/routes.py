"""Where a destination's mail goes: its MX hosts, or the smarthost.

``delivery.smarthost`` sends all mail (or only its ``domains``) to one relay,
as Postfix's ``relayhost``; every other domain is looked up in DNS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailyard.delivery.resolver import MailHost, MxResolver
from mailyard.delivery.safety import Safety


@dataclass(frozen=True, slots=True)
class Smarthost:
    host: str
    port: int
    domains: frozenset[str] = frozenset()  # empty: every domain

    def serves(self, domain: str) -> bool:
        return not self.domains or domain in self.domains


class Router:
    def __init__(
        self,
        resolver: MxResolver,
        *,
        smarthost: Smarthost | None = None,
        safety: Safety | None = None,
    ) -> None:
        self.resolver = resolver
        self.smarthost = smarthost
        self.safety = safety

    async def route(self, domain: str) -> list[MailHost]:
        """Hosts to try, in order; RouteError when there is none (or none that is safe)."""
        if self.smarthost is not None and self.smarthost.serves(domain):
            # The operator named it: exempt from prohibited_networks.
            return [await self.resolver.host(self.smarthost.host, self.smarthost.port)]
        hosts = await self.resolver.route(domain)
        return self.safety.filter(domain, hosts) if self.safety is not None else hosts


def smarthost_from(host: str, port: int, domains: Iterable[str]) -> Smarthost:
    return Smarthost(host, port, frozenset(domains))
