"""Where a destination's mail goes, and how: its MX hosts or the smarthost, and the TLS it gets.

``delivery.smarthost`` sends all mail (or only its ``domains``) to one relay,
as Postfix's ``relayhost``, with its own TLS mode and, optionally, AUTH;
every other domain is looked up in DNS and gets the mode of
``delivery.tls_policies`` (``tlspolicy.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailyard.delivery.resolver import MailHost, MxResolver
from mailyard.delivery.safety import Safety
from mailyard.delivery.smtp import Login
from mailyard.delivery.tlspolicy import TlsMode, TlsPolicies
from mailyard.filewatch import Watched


@dataclass(frozen=True, slots=True)
class Smarthost:
    host: str
    port: int
    domains: frozenset[str] = frozenset()  # empty: every domain
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    username: str = ""
    # The password, read again when its file changes: a rotated Secret
    # reaches the next new session without a restart.
    password: Watched[str] | None = None

    def serves(self, domain: str) -> bool:
        return not self.domains or domain in self.domains

    def login(self) -> Login | None:
        if not self.username or self.password is None:
            return None
        return Login(self.username, self.password.value)


@dataclass(frozen=True, slots=True)
class Route:
    hosts: list[MailHost]
    tls: TlsMode
    smarthost: Smarthost | None = None


class Router:
    def __init__(
        self,
        resolver: MxResolver,
        *,
        smarthost: Smarthost | None = None,
        safety: Safety | None = None,
        tls: TlsPolicies | None = None,
    ) -> None:
        self.resolver = resolver
        self.smarthost = smarthost
        self.safety = safety
        self.tls = tls or TlsPolicies()

    async def route(self, domain: str) -> Route:
        """Hosts to try, in order, and the TLS mode; RouteError when there is no
        host (or none that is safe)."""
        if self.smarthost is not None and self.smarthost.serves(domain):
            # The operator named it: exempt from prohibited_networks.
            host = await self.resolver.host(self.smarthost.host, self.smarthost.port)
            return Route([host], self.smarthost.tls, self.smarthost)
        hosts = await self.resolver.route(domain)
        if self.safety is not None:
            hosts = self.safety.filter(domain, hosts)
        return Route(hosts, self.tls.mode_for(domain))


def smarthost_from(
    host: str,
    port: int,
    domains: Iterable[str],
    *,
    tls: str = "opportunistic",
    username: str = "",
    password_file: Path | None = None,
) -> Smarthost:
    """Raises ``FileProblem`` naming the key when the password file cannot be read."""
    password = None
    if password_file is not None:
        password = Watched("delivery.smarthost.password_file", (password_file,), _read_password)
    return Smarthost(host, port, frozenset(domains), TlsMode(tls), username, password)


def _read_password(paths: tuple[Path, ...]) -> str:
    password = paths[0].read_text().rstrip("\r\n")
    if not password:
        raise ValueError(f"{paths[0]} is empty")
    return password
