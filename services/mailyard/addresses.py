"""Splitting and normalising envelope addresses (RFC 5321 §4.1.2).

Only what the services need to route mail: the local part stays as sent
(it is the destination's business), the domain is lower-cased.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailyard.config import normalize_domain


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str  # lower case; "[…]" for an address literal

    @property
    def is_domain_literal(self) -> bool:
        return self.domain.startswith("[")

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


class AddressError(ValueError):
    """Not a mailbox we can route."""


def parse_address(text: str) -> Address:
    """``'Jane.Doe@Example.COM'`` → ``Address('Jane.Doe', 'example.com')``.

    The domain is whatever follows the last ``@``: a quoted local part may
    itself contain ``@`` (``"a@b"@example.com``), a domain never does.
    """
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{text!r} is not of the form local-part@domain")
    if len(local) > 64 or len(text) > 254:
        raise AddressError(f"{text!r} is too long (RFC 5321 section 4.5.3.1)")
    if domain.startswith("[") and domain.endswith("]"):
        return Address(local, domain.lower())
    try:
        return Address(local, normalize_domain(domain))
    except ValueError as exc:
        raise AddressError(str(exc)) from exc


def domain_of(address: str) -> str:
    """The lower-cased domain of an address already accepted by ingress."""
    return address.rpartition("@")[2].lower()


# Control characters (CR, LF, NUL, …), DEL and angle brackets.
_UNCLEAN = re.compile("[\x00-\x1f\x7f<>]")


def is_clean_mailbox(text: str) -> bool:
    """No control characters (CR, LF, NUL, …) and no angle brackets.

    Addresses on the broker came through ingress's parser, but a service
    never trusts a queue: a CR/LF in an address would inject SMTP commands
    or headers downstream.
    """
    return bool(text) and _UNCLEAN.search(text) is None
