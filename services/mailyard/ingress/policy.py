"""What ingress answers at MAIL, RCPT and end of DATA — pure decisions, no I/O.

Relay control is the one rule that must never fail open: a client outside
``ingress.relay_networks`` that has not authenticated may only send to
``ingress.local_domains``, and only to plain local parts there. Old routing
tricks that could make some MTA forward mail (``user%other@local``, ``other!user@local``,
``"user@other"@local``) are refused like any other relay attempt. Source
routes (``<@hop:user@domain>``) are dropped by the SMTP parser before we see
the address (RFC 5321 §4.1.1.3 allows ignoring them), so only the final
mailbox is judged.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailyard.addresses import AddressError, parse_address
from mailyard.content import header_block
from mailyard.reply import Reply

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NULL_SENDER = "<>"  # what aiosmtpd hands us for MAIL FROM:<>

SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many Received: headers; the message is looping")
BARE_NEWLINE = Reply(
    550,
    "5.6.0",
    "Message contains a bare CR or LF; lines must end with CRLF (RFC 5322 section 2.3)",
)
BROKER_DOWN = Reply(451, "4.3.0", "Mail system temporarily unavailable, try again later")

# Characters that some MTAs treat as routing inside a local part.
_ROUTING_CHARACTERS = frozenset("%!@")
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)


@functools.lru_cache(maxsize=4096)  # one client asks at every RCPT and again at DATA
def _in_networks(text: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def relay_denied(address: str) -> Reply:
    return Reply(554, "5.7.1", f"<{address}>: Relay access denied")


def not_your_domain(domain: str) -> Reply:
    return Reply(553, "5.7.1", f"Sender address rejected: not allowed to send as {domain}")


# RFC 5321 §4.5.1 and RFC 2142: mailboxes every mail domain must have.
ROLE_ACCOUNTS = frozenset({"postmaster", "abuse"})


@dataclass(frozen=True)
class IngressPolicy:
    relay_networks: tuple[IPNetwork, ...]
    local_domains: frozenset[str]
    max_recipients: int
    max_hops: int
    proxy_networks: tuple[IPNetwork, ...] = ()
    postmaster: str | None = None  # where postmaster@ and abuse@ of local domains go

    @classmethod
    def build(
        cls,
        relay_networks: Iterable[IPNetwork],
        local_domains: Iterable[str],
        *,
        max_recipients: int,
        max_hops: int,
        proxy_networks: Iterable[IPNetwork] = (),
        postmaster: str | None = None,
    ) -> IngressPolicy:
        return cls(
            tuple(relay_networks),
            frozenset(local_domains),
            max_recipients,
            max_hops,
            tuple(proxy_networks),
            postmaster,
        )

    def may_relay(self, client: str, *, authenticated: bool = False) -> bool:
        """Relay networks and authenticated users may send anywhere."""
        return authenticated or _in_networks(client, self.relay_networks)

    def is_trusted(self, client: str) -> bool:
        """In relay_networks: exempt from the per-client limits and the greeting delay."""
        return _in_networks(client, self.relay_networks)

    def is_trusted_proxy(self, peer: str) -> bool:
        return _in_networks(peer, self.proxy_networks)

    def mailbox(self, address: str) -> str:
        """RFC 5321 §4.5.1: a bare ``<Postmaster>`` is the postmaster of our first local domain."""
        if address.lower() == "postmaster" and self.local_domains:
            return f"postmaster@{min(self.local_domains)}"
        return address

    def deliver_to(self, address: str) -> str:
        """Where an accepted recipient's mail goes: ``postmaster@`` and ``abuse@``
        of every local domain (RFC 2142) to ``ingress.postmaster`` when it is set."""
        local, at, domain = address.rpartition("@")
        if (
            self.postmaster
            and at
            and local.lower() in ROLE_ACCOUNTS
            and domain.lower() in self.local_domains
        ):
            return self.postmaster
        return address

    def sender(self, address: str, *, allowed: Callable[[str], bool] | None = None) -> Reply:
        """``allowed``: the authenticated user's sender_domains rule, when there is one."""
        if address in (NULL_SENDER, ""):
            return SENDER_OK
        try:
            parsed = parse_address(address)
        except AddressError as exc:
            return Reply(501, "5.1.7", f"Bad sender address syntax: {exc}")
        if parsed.is_domain_literal:
            return Reply(501, "5.1.7", "Bad sender address syntax: address literals are refused")
        if allowed is not None and not allowed(parsed.domain):
            return not_your_domain(parsed.domain)
        return SENDER_OK

    def recipient(self, address: str, *, may_relay: bool, accepted_so_far: int) -> Reply:
        if accepted_so_far >= self.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:
            parsed = parse_address(address)
        except AddressError as exc:
            return Reply(501, "5.1.3", f"Bad recipient address syntax: {exc}")
        is_local = parsed.domain in self.local_domains
        if not may_relay:
            if not is_local or _ROUTING_CHARACTERS.intersection(parsed.local):
                return relay_denied(address)
            return RECIPIENT_OK
        if parsed.is_domain_literal:
            return Reply(550, "5.1.2", f"<{address}>: address literals are not accepted")
        return RECIPIENT_OK

    def content(self, content: bytes, *, may_relay: bool) -> Reply | None:
        """Checks at end of DATA; None means accept."""
        if len(_RECEIVED.findall(header_block(content, limit=None))) > self.max_hops:
            return TOO_MANY_HOPS
        # SMTP smuggling and header-splitting need a bare CR or LF somewhere;
        # trusted relay clients (often old application code) are exempt, as in
        # Postfix's smtpd_forbid_bare_newline_exclusions = $mynetworks.
        if not may_relay and _BARE_CR_OR_LF.search(content):
            return BARE_NEWLINE
        return None
