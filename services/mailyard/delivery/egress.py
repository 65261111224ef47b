"""Which egress address a new connection binds to — no I/O.

``delivery.source_addresses`` lists addresses, each with the EHLO name its
PTR record gives, and the mail it serves: an entry naming neither
``classes`` nor ``sender_domains`` serves all mail; one naming either
serves only the mail it names (naming both: mail matching both).

The rule, for one job:

1. Its **pool** is the entries that name its mail; when none does, the
   entries that name nothing (config.py makes sure there is one). So mail
   that an entry claims never goes out on a catch-all address, and the
   catch-all addresses carry everything else.
2. Of the pool, only the addresses of the MX address's family can reach it
   (an IPv4 source cannot connect to an IPv6 host): an address no source of
   the pool can reach is skipped, with :class:`NoSource` saying why. There
   is no falling back to another pool: mail dedicated to an address stays
   on it, and a pool that should reach IPv6 hosts needs an IPv6 address.
3. New connections take the pool's addresses in turn (round robin per pool
   and family); one that cannot be bound (gone from the host since start-up)
   hands the connection to the next. A pooled session keeps the address it was opened from and
   carries only mail whose pool holds that address (:meth:`Egress.may_carry`).

The class is ``DeliveryJob.mail_class`` (empty: ``transactional``); the
sender domain is that of ``mail_from``, the envelope sender as the client
gave it (not the VERP return path, which is ours). The null sender
(``MAIL FROM:<>``: DSNs, TLS reports) has no domain, so no
``sender_domains`` entry takes it: it goes by its class alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mailyard.config import SourceAddressConfig
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

DEFAULT_CLASS = "transactional"
KEY = "delivery.source_addresses"


@dataclass(frozen=True, slots=True)
class Mail:
    """What the choice of an address looks at."""

    mail_class: str
    sender_domain: str  # lower case; "" for the null sender

    @classmethod
    def of(cls, job: pb.DeliveryJob) -> Mail:
        return cls(job.mail_class or DEFAULT_CLASS, sender_domain(job.mail_from))

    def describe(self) -> str:
        sender = f"from {self.sender_domain}" if self.sender_domain else "from the null sender"
        return f"{self.mail_class} mail {sender}"


def sender_domain(mail_from: str) -> str:
    """The domain of an envelope sender, as config.py keeps domains ("" for ``<>``)."""
    _, at, domain = mail_from.rpartition("@")
    return domain.lower().removesuffix(".") if at else ""


@dataclass(frozen=True, slots=True)
class Source:
    address: str  # as ipaddress writes it
    ehlo: str
    classes: frozenset[str] = frozenset()
    sender_domains: frozenset[str] = frozenset()

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version

    @property
    def names_nothing(self) -> bool:
        return not self.classes and not self.sender_domains

    def names(self, mail: Mail) -> bool:
        """Whether this entry claims ``mail`` (a catch-all entry claims nothing)."""
        if self.names_nothing:
            return False
        return (not self.classes or mail.mail_class in self.classes) and (
            not self.sender_domains or mail.sender_domain in self.sender_domains
        )


class NoSource(Exception):
    """No address of the mail's pool can reach the MX address: skip it."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class Egress:
    """The configured sources and the turn of each pool; empty: the system's choice."""

    def __init__(self, sources: Iterable[Source] = ()) -> None:
        self.sources = tuple(sources)
        self._catch_all = tuple(s for s in self.sources if s.names_nothing)
        self._versions = {s.address: s.version for s in self.sources}
        self._pools: dict[Mail, tuple[Source, ...]] = {}
        self._turns: dict[tuple[Source, ...], int] = {}

    @property
    def configured(self) -> bool:
        return bool(self.sources)

    def pool(self, mail: Mail) -> tuple[Source, ...]:
        """The entries that serve ``mail``, in the order of the configuration."""
        pool = self._pools.get(mail)
        if pool is None:
            pool = tuple(s for s in self.sources if s.names(mail)) or self._catch_all
            if len(self._pools) > 10_000:  # mail classes are few; sender domains may not be
                self._pools.clear()
            self._pools[mail] = pool
        return pool

    def order(self, mail: Mail, destination: str) -> tuple[Source | None, ...]:
        """The sources for a new connection to ``destination`` (an IP address): the
        one whose turn it is, then the rest of its pool, to try only when it cannot
        be bound. Each call moves the pool's turn on by one.

        ``(None,)`` when no sources are configured (the system picks, ``hostname``
        is the EHLO name). Raises :class:`NoSource` when none of the pool's
        addresses is of the destination's family.
        """
        if not self.sources:
            return (None,)
        version = ipaddress.ip_address(destination).version
        usable = tuple(s for s in self.pool(mail) if self._versions[s.address] == version)
        if not usable:
            raise NoSource(
                Reply(
                    451,
                    "4.4.4",
                    f"no address in {KEY} serves {mail.describe()} over IPv{version}, "
                    f"which {destination} needs",
                )
            )
        turn = self._turns.get(usable, 0) % len(usable)
        self._turns[usable] = turn + 1
        return usable[turn:] + usable[:turn]

    def may_carry(self, mail: Mail) -> Callable[[str], bool]:
        """Whether a session bound to an address ("" for none) may carry ``mail``."""
        if not self.sources:
            return lambda _address: True
        allowed = frozenset(s.address for s in self.pool(mail))
        return allowed.__contains__


def sources_from(entries: Sequence[SourceAddressConfig]) -> list[Source]:
    """``delivery.source_addresses`` as :class:`Source` values."""
    return [
        Source(
            str(entry.address),
            entry.ehlo,
            frozenset(entry.classes),
            frozenset(entry.sender_domains),
        )
        for entry in entries
    ]
