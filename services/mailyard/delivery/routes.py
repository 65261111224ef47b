"""Where a destination's mail goes, and how: its MX hosts or the smarthost, and the TLS it gets.

``delivery.smarthost`` sends all mail (or only its ``domains``) to one relay,
as Postfix's ``relayhost``, with its own TLS mode and, optionally, AUTH;
every other domain is looked up in DNS and gets the mode of
``delivery.tls_policies`` (``tlspolicy.py``), else its MTA-STS policy, else
``delivery.tls``.

Then, host by host and just before connecting to it (:meth:`Router.for_host`),
DANE may take over: an MX host with TLSA records DNSSEC vouches for gets
``dane`` whatever MTA-STS or ``delivery.tls`` said (RFC 8461 §2: MTA-STS
never overrides DANE). MTA-STS ``enforce`` still decides which MX hosts are
tried. Neither a ``tls_policies`` entry nor the smarthost is ever
DANE-checked: the operator's word wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from mailyard.delivery import metrics
from mailyard.delivery.dane import Tlsa
from mailyard.delivery.dane_lookup import DaneLookup
from mailyard.delivery.mtasts import Mode
from mailyard.delivery.mtasts_fetch import MtaSts
from mailyard.delivery.resolver import MailHost, MxResolver, RouteError
from mailyard.delivery.safety import Safety
from mailyard.delivery.smtp import Login
from mailyard.delivery.tlspolicy import DANE, MTA_STS, TlsMode, TlsPolicies
from mailyard.delivery.tlsresult import PolicyType, ReportedPolicy
from mailyard.filewatch import Watched
from mailyard.reply import Reply


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
    policy: str = ""  # what set ``tls``, for events and metrics: a mode, "mta-sts", "dane"
    # The published policy the sessions are held to, for TLSRPT; None when the
    # operator's configuration (or nothing at all) decided.
    reported: ReportedPolicy | None = None
    # Whether DANE may change the TLS of each host (Router.for_host): not where
    # the operator decided (tls_policies, the smarthost), nor with DANE off.
    dane: bool = False
    # The route as one host gets it under DANE: that host's TLSA records.
    tlsa: Tlsa | None = None

    @property
    def policy_name(self) -> str:
        return self.policy or self.tls.value


class Router:
    def __init__(
        self,
        resolver: MxResolver,
        *,
        smarthost: Smarthost | None = None,
        safety: Safety | None = None,
        tls: TlsPolicies | None = None,
        mta_sts: MtaSts | None = None,
        dane: DaneLookup | None = None,
    ) -> None:
        self.resolver = resolver
        self.smarthost = smarthost
        self.safety = safety
        self.tls = tls or TlsPolicies()
        self.mta_sts = mta_sts
        self.dane = dane

    async def route(self, domain: str, *, published: bool = True) -> Route:
        """Hosts to try, in order, and the TLS mode; RouteError when there is no
        host (or none that is safe).

        ``published=False`` leaves the destination's published policies (MTA-STS)
        out, for TLS reports: RFC 8460 §5.3 wants them delivered despite the very
        TLS failures they may report. The operator's modes still apply.
        """
        if self.smarthost is not None and self.smarthost.serves(domain):
            # The operator named it: exempt from prohibited_networks.
            host = await self.resolver.host(self.smarthost.host, self.smarthost.port)
            return Route([host], self.smarthost.tls, self.smarthost)
        hosts = await self.resolver.route(domain)
        if self.safety is not None:
            hosts = self.safety.filter(domain, hosts)
        configured = self.tls.configured(domain)
        if configured is not None:  # the operator's word wins, over DANE and MTA-STS
            return Route(hosts, configured)
        if not published:
            # A report's need wins over the published policies (DANE, MTA-STS).
            return Route(hosts, self.tls.default)
        if self.mta_sts is None:
            route = Route(hosts, self.tls.default)
        else:
            route = await self._mta_sts_route(domain, hosts)
        return replace(route, dane=True) if self.dane is not None else route

    async def mx_names(self, domain: str) -> list[str]:
        """The names of the hosts mail for ``domain`` goes to (the smarthost's, or the
        MX hosts), without the policies a route also takes: for telling its site."""
        if self.smarthost is not None and self.smarthost.serves(domain):
            return [self.smarthost.host]
        return [host.name for host in await self.resolver.route(domain)]

    async def for_host(self, route: Route, host: MailHost) -> Route:
        """The route as ``host`` gets it: DANE's when it has TLSA records DNSSEC vouches
        for, else the route unchanged. Raises HostUnusable when its TLSA lookup failed
        (RFC 7672 §2.1.1)."""
        if not route.dane or self.dane is None:
            return route
        return with_tlsa(route, await self.dane.tlsa(host))

    async def _mta_sts_route(self, domain: str, hosts: list[MailHost]) -> Route:
        """RFC 8461 §5: under ``enforce`` only the MX hosts the policy names, each
        verified for its name; under ``testing`` as before, the mismatch reported."""
        assert self.mta_sts is not None
        policy = await self.mta_sts.policy(domain)
        if policy is None or policy.mode is Mode.NONE:
            return Route(hosts, self.tls.default)
        matching = [host for host in hosts if policy.matches(host.name)]
        result = "match" if len(matching) == len(hosts) else "mismatch"
        metrics.MTA_STS_ROUTES.labels(policy.mode.value, result).inc()
        reported = ReportedPolicy(PolicyType.STS, domain, policy.lines(), policy.mx)
        if policy.mode is Mode.TESTING:
            return Route(hosts, self.tls.default, reported=reported)
        if not matching:
            names = ", ".join(host.name for host in hosts)
            raise RouteError(
                Reply(451, "4.7.5", f"no MX host of {domain} ({names}) matches its MTA-STS policy"),
                "mta_sts",
            )
        return Route(matching, TlsMode.VERIFY, policy=MTA_STS, reported=reported)


def with_tlsa(route: Route, tlsa: Tlsa | None) -> Route:
    """The route for a host with these authenticated TLSA records (None: as it was).

    DANE replaces whatever TLS the route had, MTA-STS's included; TLSRPT
    names the policy by its TLSA base domain (RFC 8460 §3).
    """
    if tlsa is None:
        return route
    reported = ReportedPolicy(PolicyType.TLSA, tlsa.base_domain, tlsa.strings())
    return replace(route, tls=TlsMode.DANE, policy=DANE, reported=reported, tlsa=tlsa)


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
