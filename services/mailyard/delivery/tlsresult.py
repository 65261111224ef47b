"""What a TLS negotiation came to, in RFC 8460's words (TLSRPT §4.3, §4.4).

The delivery path names a failure once, where it happens (the handshake,
the certificate check, the MTA-STS fetch, the DANE lookup), with one of
these result types; the TLS report, the events and the metrics all read
that one name. No I/O here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum


class ResultType(StrEnum):
    # §4.3.1 negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2.1 DANE
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2.2 MTA-STS
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


class PolicyType(StrEnum):
    """§4.4 ``policy-type``."""

    STS = "sts"
    TLSA = "tlsa"
    NO_POLICY = "no-policy-found"


@dataclass(frozen=True, slots=True)
class ReportedPolicy:
    """The policy a destination's sessions were held to, as a report names it (§4.4)."""

    type: PolicyType
    # The policy domain (§3): the recipient domain for sts, the TLSA base
    # domain (the MX host, or its CNAME target) for tlsa.
    domain: str
    strings: tuple[str, ...] = ()  # the policy's lines (sts) or TLSA records (tlsa)
    mx_hosts: tuple[str, ...] = ()  # sts: the policy's mx patterns


# OpenSSL's X509_V_ERR_* codes that say more than "it failed" (x509_vfy.h).
_EXPIRED = {10}  # CERT_HAS_EXPIRED
_UNTRUSTED = {2, 18, 19, 20, 21, 27}  # no issuer, self-signed, not trusted
_HOST_MISMATCH = {62}  # HOSTNAME_MISMATCH


def certificate_result(error: BaseException) -> ResultType:
    """The result type of a failed certificate check; ``validation-failure`` when unsure."""
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        if code in _HOST_MISMATCH:
            return ResultType.CERTIFICATE_HOST_MISMATCH
        if code in _EXPIRED:
            return ResultType.CERTIFICATE_EXPIRED
        if code in _UNTRUSTED:
            return ResultType.CERTIFICATE_NOT_TRUSTED
    return ResultType.VALIDATION_FAILURE
