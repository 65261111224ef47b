"""DANE TLSA (RFC 6698, RFC 7671, RFC 7672 §3), the pure part: records, which are usable, matching.

The lookup is in ``dane_lookup.py`` and the handshake in ``smtp.py``; this
module takes TLSA records and the DER certificates a server sent, and says
whether one record authenticates them. No I/O.

What SMTP makes of the four certificate usages (RFC 7672 §3.1):

- DANE-EE(3): the server's own certificate or key is in DNS. Its names and
  dates are NOT checked (§3.1.1): DNSSEC vouches for it.
- DANE-TA(2): a trust anchor is in DNS. The chain from the leaf to it must
  verify (signatures, dates, CA constraints) and the leaf must be valid for
  the TLSA base domain or the MX host name (§3.1.2, §3.2.2). A TA the server
  does not send can only be used when the record holds it whole (``2 0 0``):
  a digest does not give us the certificate to verify against.
- PKIX-TA(0) and PKIX-EE(1) are "unusable" for SMTP (§3.1.3), as are
  selectors and matching types we do not know and digests of the wrong
  length (RFC 7671 §4.1). An RRset with records but none usable still means
  "TLS required", without authentication (RFC 7672 §2.2).

Chain verification is cryptography's (``x509.verification``), not ours.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)


class Usage(IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    CERT = 0  # the whole certificate
    SPKI = 1  # its SubjectPublicKeyInfo


class Matching(IntEnum):
    FULL = 0
    SHA256 = 1
    SHA512 = 2


_DIGEST_SIZES: dict[int, int] = {Matching.SHA256: 32, Matching.SHA512: 64}  # bytes

# DANE-TA chains: CA certificates as RFC 5280 and the CA/B Forum want them;
# the leaf's extensions are left alone (a private CA's leaf need not follow
# the Web PKI profile) except its subjectAltName, which its names are in.
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
_LEAF_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    matching: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 §3.1: DANE-TA or DANE-EE, a known selector and matching type, a sane digest."""
        if self.usage not in (Usage.DANE_TA, Usage.DANE_EE):
            return False
        if self.selector not in (Selector.CERT, Selector.SPKI):
            return False
        if self.matching == Matching.FULL:
            return bool(self.data)
        return len(self.data) == _DIGEST_SIZES.get(self.matching, -1)

    def text(self) -> str:
        """Presentation form (RFC 6698 §2.2), as TLSRPT quotes it: ``3 1 1 AB12…``."""
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex().upper()}"

    def matches(self, certificate: x509.Certificate) -> bool:
        return _select(certificate, self.selector, self.matching) == self.data


@dataclass(frozen=True, slots=True)
class Tlsa:
    """One MX host's DNSSEC-authenticated TLSA RRset, and the names its certificate may carry."""

    host: str  # the MX host name
    base_domain: str  # where the records were found (RFC 7672 §2.2.3): host, or its CNAME target
    records: tuple[TlsaRecord, ...]

    @property
    def usable(self) -> tuple[TlsaRecord, ...]:
        """The records that can authenticate a server, strongest digests only (RFC 7671 §9)."""
        usable = [r for r in self.records if r.usable]
        # Digest agility: where SHA-512 and SHA-256 records of the same usage
        # and selector sit side by side, the weaker one could be the one an
        # attacker forged a collision for; only the stronger counts.
        strongest: dict[tuple[int, int], int] = {}
        for r in usable:
            if r.matching != Matching.FULL:
                key = (r.usage, r.selector)
                strongest[key] = max(strongest.get(key, 0), r.matching)
        return tuple(
            r
            for r in usable
            if r.matching == Matching.FULL or r.matching == strongest[(r.usage, r.selector)]
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Reference identifiers for DANE-TA (RFC 7672 §3.2.2): the base domain, then the host."""
        return tuple(dict.fromkeys((self.base_domain, self.host)))

    def strings(self) -> tuple[str, ...]:
        return tuple(r.text() for r in self.records)


class Mismatch(Exception):
    """No usable TLSA record authenticates the server; the message says why."""


def authenticate(chain: Sequence[bytes], tlsa: Tlsa, *, now: datetime) -> TlsaRecord:
    """The usable record that authenticates ``chain`` (DER, the leaf first); raises Mismatch.

    ``now`` is the time DANE-TA chains are checked at (DANE-EE has no dates).
    """
    records = tlsa.usable
    if not records:
        raise Mismatch("its TLSA records are all unusable")
    try:
        certificates = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError as exc:
        raise Mismatch(f"it sent a certificate that cannot be parsed: {exc}") from None
    if not certificates:
        raise Mismatch("it sent no certificate")
    leaf, rest = certificates[0], certificates[1:]
    for record in records:
        if record.usage == Usage.DANE_EE and record.matches(leaf):
            return record
    problems: list[str] = []
    for record in records:
        if record.usage != Usage.DANE_TA:
            continue
        for anchor in _anchors(record, rest):
            problem = _chain_problem(leaf, rest, anchor, tlsa.names, now)
            if problem is None:
                return record
            problems.append(problem)
    if problems:
        raise Mismatch(f"its chain to the TLSA trust anchor does not verify: {problems[0]}")
    shown = ", ".join(_short(r) for r in records)
    raise Mismatch(f"no TLSA record matches its certificate ({shown})")


def _short(record: TlsaRecord) -> str:
    text = record.text()
    return text if len(text) <= 24 else text[:24] + "..."


def _anchors(record: TlsaRecord, sent: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The certificates ``record`` designates as trust anchor: one the server sent (above the
    leaf), or the record's own when it holds a whole certificate (``2 0 0``)."""
    anchors = [c for c in sent if record.matches(c)]
    if not anchors and record.selector == Selector.CERT and record.matching == Matching.FULL:
        with contextlib.suppress(ValueError):  # not a certificate: no anchor
            anchors.append(x509.load_der_x509_certificate(record.data))
    return anchors


def _chain_problem(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchor: x509.Certificate,
    names: Sequence[str],
    now: datetime,
) -> str | None:
    """None when ``leaf`` chains up to ``anchor`` and is valid for one of ``names``."""
    builder = (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(now)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
    )
    problem = "no name to check"
    for name in names:
        try:
            builder.build_server_verifier(x509.DNSName(name)).verify(leaf, intermediates)
        except (VerificationError, ValueError) as exc:
            # Its message ends with the whole certificate's repr: too much for a reply.
            problem = f"{name}: {str(exc).split(' (encountered', 1)[0]}"
            continue
        return None
    return problem


def _select(certificate: x509.Certificate, selector: int, matching: int) -> bytes:
    """The bytes a record of this selector and matching type holds for ``certificate``."""
    if selector == Selector.CERT:
        data = certificate.public_bytes(Encoding.DER)
    else:
        # Re-encoded from the parsed key: for the RSA, EC and Ed25519 keys of
        # real certificates that is the DER the certificate carries.
        data = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    if matching == Matching.SHA256:
        return hashlib.sha256(data).digest()
    if matching == Matching.SHA512:
        return hashlib.sha512(data).digest()
    return data
