"""DKIM signing (RFC 6376; RSA per RFC 8301, Ed25519 per RFC 8463), once per message.

The queue service signs an accepted message before it splits it, so every
destination gets the same signed bytes. The keys that sign are those of
``dkim.keys`` whose ``domain`` is the ``From:`` domain or a parent of it
(``example.com`` signs mail from ``news.example.com``): an RSA and an
Ed25519 key of one domain give two DKIM-Signature fields, each made on its
own over the message as it came (the dual signing RFC 8463 suggests for
the transition), so a verifier that knows only RSA still finds one to check.

Each signature: relaxed/relaxed canonicalisation (survives the re-folding
and trailing-space changes of relays), no ``l=`` (a body length would let
anyone append to the body), ``i=@<domain>``, and dkimpy's default header
set, which is RFC 6376 §5.4.1's list (From, Sender, Reply-To, Subject,
Date, Message-ID, To, Cc, MIME-Version, Content-*, Resent-*, In-Reply-To,
References, List-*) as far as present, plus List-Unsubscribe-Post (RFC
8058) and Feedback-ID, with ``From`` signed once more than
it occurs, so that no second From can be added (oversigning, §5.4.2).
Received, Return-Path, Bcc and DKIM-Signature are never signed. A TLS
report's TLS-Report-Domain and TLS-Report-Submitter (RFC 8460 §5.3: they
SHOULD be signed) are, and oversigned, when the message has them.
dkimpy does the DKIM work and OpenSSL the RSA step
(:mod:`mailyard.queue.dkimrsa`); the key files are read with
``cryptography`` (:mod:`mailyard.queue.dkimkeys`) and watched
(:mod:`mailyard.filewatch`), and each version is proven at load by signing
a probe and verifying it against its own public half.

An 8-bit body, or one with lines over 998 octets, is converted to 7-bit
MIME first (:mod:`mailyard.sevenbit`), so the signature still verifies
after a relay without 8BITMIME.

Signing never stops a message: one that cannot be signed raises
:class:`Unsigned` with the reason (``no_from``: no single From domain;
``no_key``: no key covers it; ``error``: dkimpy refused the message,
e.g. a header section it cannot parse), and the service sends it on
unsigned and counts it.

The ``From:`` domain comes from the standard library's email parser run
on the header section only. Domains are compared as given, lower-cased: a
From in UTF-8 (U-labels) matches only a key configured with the same
U-labels, which the configuration does not accept; use A-labels
(``xn--…``) in both.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Literal

import dkim

from mailyard import sevenbit
from mailyard.config import DkimKey
from mailyard.content import header_block
from mailyard.filewatch import Watched
from mailyard.queue import dkimrsa
from mailyard.queue.dkimkeys import SigningKey, load_key

log = logging.getLogger(__name__)

# RFC 8460 §5.3: a TLS report's TLS-Report-Domain and TLS-Report-Submitter SHOULD
# be signed; only messages that have them (reports made by delivery) sign them.
TLS_REPORT_HEADERS = (b"tls-report-domain", b"tls-report-submitter")

UnsignedReason = Literal["no_key", "no_from", "error"]
UNSIGNED_REASONS: tuple[UnsignedReason, ...] = ("no_key", "no_from", "error")
CANONICALIZATION = (b"relaxed", b"relaxed")
# Beyond RFC 6376 §5.4.1's list: RFC 8058 §4 wants one-click unsubscribe
# covered by the signature (Gmail and Yahoo require it of bulk senders), and
# Gmail counts a Feedback-ID only when it is signed.
ALSO_SIGNED = frozenset({b"list-unsubscribe-post", b"feedback-id"})


class Unsigned(Exception):
    """The message leaves unsigned, and why (``reason``: one of UNSIGNED_REASONS)."""

    def __init__(self, reason: UnsignedReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: UnsignedReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Signed:
    """The content with its DKIM-Signature fields on top."""

    content: bytes
    domains: tuple[str, ...]  # the d= of each signature, top first


def from_domain(content: bytes) -> str | None:
    """The domain of the one ``From:`` address, lower-cased; None if there is no single one.

    None for no From field, more than one (RFC 5322 §3.6 allows one), a
    group with no address, or mailboxes of different domains.
    """
    try:
        # UTF-8 headers (RFC 6532) read as text; other 8-bit bytes as they are.
        block = header_block(content, limit=None).decode("utf-8", "surrogateescape")
        headers = HeaderParser(policy=default_policy).parsestr(block)
        fields = headers.get_all("From") or []
        if len(fields) != 1:
            return None
        domains = {address.domain.lower() for address in fields[0].addresses if address.domain}
    except Exception:  # the parser has had crash bugs on hostile input: never fail the queue
        log.debug("the From field cannot be parsed", exc_info=True)
        return None
    return domains.pop() if len(domains) == 1 else None


def covers(key_domain: str, domain: str) -> bool:
    """A key of ``key_domain`` signs mail from ``domain`` itself or any name below it."""
    return domain == key_domain or domain.endswith(f".{key_domain}")


class Signer:
    """Signs with the keys of ``dkim.keys``; the key files are re-read when they change.

    Construction loads every key and raises
    :class:`~mailyard.filewatch.FileProblem` naming the first one that cannot
    sign (``dkim.keys[1].key_file: …``). A changed file that cannot be used
    is logged and its last good version kept. ``interval`` and ``clock`` are
    :class:`~mailyard.filewatch.Watched`'s. Safe to use from several threads.
    """

    def __init__(
        self,
        keys: Sequence[DkimKey],
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        dkimrsa.install()  # OpenSSL's RSA, 17 times faster than dkimpy's own
        self._lock = threading.Lock()
        self._keys: list[tuple[DkimKey, Watched[SigningKey]]] = []
        for index, config in enumerate(keys):
            name = f"dkim.keys[{index}].key_file"
            load = functools.partial(_load, name, config)
            watched = Watched(name, (config.key_file,), load, interval=interval, clock=clock)
            self._keys.append((config, watched))

    @property
    def domains(self) -> list[str]:
        """The configured key domains (the label values of the signed counter)."""
        return sorted({config.domain for config, _ in self._keys})

    def keys_for(self, domain: str) -> list[tuple[DkimKey, SigningKey]]:
        """The keys that sign mail from ``domain``, in configuration order, current versions."""
        with self._lock:  # Watched may load a file again: one thread at a time
            return [(c, w.value) for c, w in self._keys if covers(c.domain, domain)]

    def sign(self, content: bytes) -> Signed:
        """``content`` with one DKIM-Signature per key that covers its From domain.

        Raises :class:`Unsigned`. A key that fails while another signs is
        logged and left out; only when none signs is the message unsigned.
        """
        domain = from_domain(content)
        if domain is None:
            raise Unsigned("no_from", "no single From: domain")
        keys = self.keys_for(domain)
        if not keys:
            raise Unsigned("no_key", f"no key for {domain}")
        if sevenbit.needs_conversion(content, eight_bit_ok=False):
            # RFC 6376 §5.3: sign what every next hop can take, or the first
            # one without 8BITMIME converts the body and breaks the signature.
            content = sevenbit.convert(content)
        fields: list[bytes] = []
        domains: list[str] = []
        problems: list[str] = []
        for config, key in keys:
            try:
                fields.append(signature(content, config.domain, config.selector, key))
            except Exception as exc:  # dkimpy raises more than DKIMException on bad input
                problems.append(f"{config.selector}._domainkey.{config.domain}: {_words(exc)}")
                continue
            domains.append(config.domain)
        if not fields:
            raise Unsigned("error", "; ".join(problems))
        if problems:
            log.warning(
                "some DKIM keys could not sign a message",
                extra={"domain": domain, "errors": problems},
            )
        return Signed(b"".join(fields) + content, tuple(domains))


def signature(content: bytes, domain: str, selector: str, key: SigningKey) -> bytes:
    """One ``DKIM-Signature:`` field (folded, ending in CRLF) for ``content``."""
    signer = dkim.DKIM(content)
    signer.should_sign |= ALSO_SIGNED
    signer.add_frozen(TLS_REPORT_HEADERS)
    field = signer.sign(
        selector.encode("ascii"),
        domain.encode("ascii"),
        key.secret,
        signature_algorithm=key.signature_algorithm,
        canonicalize=CANONICALIZATION,
        include_headers=None,  # dkimpy's default set: RFC 6376 §5.4.1, From oversigned,
        # and a TLS report's own fields, oversigned too
        length=False,  # no l=
    )
    if not isinstance(field, bytes) or not field.startswith(b"DKIM-Signature:"):
        raise ValueError(f"dkimpy returned {field!r:.80} for a signature")
    return field if field.endswith(b"\r\n") else field + b"\r\n"


def _load(name: str, config: DkimKey, paths: tuple[Path, ...]) -> SigningKey:
    """Read the key, then prove dkimpy signs with it and the signature verifies."""
    key = load_key(name, paths[0])
    probe = f"From: probe@{config.domain}\r\nSubject: probe\r\n\r\nprobe\r\n".encode("ascii")
    try:
        signed = signature(probe, config.domain, config.selector, key) + probe
        good = dkim.DKIM(signed).verify(dnsfunc=lambda _name, timeout=5: key.record.encode())
    except Exception as exc:
        raise ValueError(f"dkimpy cannot sign with the key in {paths[0]}: {_words(exc)}") from exc
    if not good:
        raise ValueError(f"a signature made with the key in {paths[0]} does not verify")
    log.info(
        "DKIM key loaded",
        extra={
            "key": name,
            "domain": config.domain,
            "selector": config.selector,
            "algorithm": key.algorithm,
            "bits": key.bits,
        },
    )
    return key


def _words(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
