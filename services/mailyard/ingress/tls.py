"""The TLS that ingress offers (STARTTLS, RFC 3207; implicit TLS, RFC 8314).

One certificate and key (``ingress.tls``), loaded into an
:class:`ssl.SSLContext` through :class:`~mailyard.filewatch.Watched`: a
renewed Secret (cert-manager, a new Let's Encrypt certificate) is picked up
without a restart. Each version of the files gets a context of its own, so
a session keeps the context it shook hands with and the next one gets the
new certificate; a version that cannot be used is logged and the last good
one stays (filewatch).

Security: only ingress faces the internet, so the context is strict where
strictness costs no mail: TLS 1.2 at least (RFC 8996; a client that cannot
do 1.2 still has plain SMTP on port 25), no TLS compression (CRIME), no
renegotiation (client-initiated renegotiation is a cheap CPU attack), and the
server's cipher order. Clients are not asked for certificates — AUTH is how
they identify themselves — so nothing is verified on our side.

The files are checked with ``cryptography`` before OpenSSL sees them,
because OpenSSL's errors do not say which file is wrong (``PEM lib`` for
either): every problem names ``ingress.tls.cert_file`` or
``ingress.tls.key_file``, or both when the key does not match the
certificate.

Metrics: ``mailyard_ingress_certificate_expiry_timestamp_seconds``, the
presented certificate's notAfter, set at every (re)load. :func:`describe`
and :func:`from_extra` give the negotiated version and cipher for the
``Received:`` header (RFC 3848) and ``mailyard_ingress_tls_sessions_total``.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from mailyard import filewatch
from mailyard.config import TlsFiles
from mailyard.filewatch import FileProblem, Watched
from mailyard.ingress import metrics
from mailyard.pemkeys import load_private_key

log = logging.getLogger(__name__)

KEY = "ingress.tls"
_CERT_FILE = f"{KEY}.cert_file"
_KEY_FILE = f"{KEY}.key_file"

# Python has had it since 3.7, but only when OpenSSL (1.1.0h+) does.
_NO_RENEGOTIATION: ssl.Options = getattr(ssl, "OP_NO_RENEGOTIATION", ssl.Options(0))

# What OpenSSL's security level refuses in a certificate that parsed, in
# words an operator can act on.
_OPENSSL_REASONS = {
    "EE_KEY_TOO_SMALL": "its key is too small for OpenSSL (use RSA of 2048 bits or more, or ECDSA)",
    "CA_KEY_TOO_SMALL": "a certificate of its chain has a key too small for OpenSSL",
    "CA_MD_TOO_WEAK": "it or its chain is signed with a digest OpenSSL refuses (MD5, SHA-1)",
}


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What a session negotiated; labels for metrics and words for ``Received:``."""

    version: str  # "TLSv1.2", "TLSv1.3"
    cipher: str  # OpenSSL's name, e.g. "TLS_AES_256_GCM_SHA384"
    bits: int  # secret bits of the cipher


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One version of the files: the context made from it and the certificate it presents."""

    context: ssl.SSLContext
    leaf: x509.Certificate


class ServerTls:
    """The current server context for ``ingress.tls``, re-read when the files change.

    Construction raises :class:`FileProblem` naming the file at fault. Take
    :attr:`context` for each new handshake, not once per listener: that is
    what lets a renewed certificate reach new sessions. ``clock`` and
    ``interval`` are :class:`Watched`'s (how often the files are looked at).
    """

    def __init__(
        self,
        files: TlsFiles,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Watched looks at the files (os.stat) before it loads them, and would
        # name only "ingress.tls" for a missing one: look first, per key.
        _require(_CERT_FILE, files.cert_file)
        _require(_KEY_FILE, files.key_file)
        self._watched = Watched(
            KEY,
            (files.cert_file, files.key_file),
            _load,
            interval=interval,
            on_reload=_publish,
            clock=clock,
        )
        _publish(self._watched.value)

    @property
    def context(self) -> ssl.SSLContext:
        """The context for a new session: a new object after the files changed."""
        return self._watched.value.context


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo | None:
    """Version and cipher of a finished handshake; None for clear text or no handshake yet."""
    if ssl_object is None:
        return None
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    if version is None or cipher is None:
        return None
    name, _protocol, bits = cipher
    return TlsInfo(version=version, cipher=name, bits=bits)


def from_extra(extra: Mapping[str, Any] | None) -> TlsInfo | None:
    """:func:`describe` from a transport's extra info (aiosmtpd's ``session.ssl``)."""
    ssl_object = extra.get("ssl_object") if extra is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return describe(ssl_object)


def _load(paths: tuple[Path, ...]) -> _Loaded:
    """The files as one version; :class:`FileProblem` naming the file at fault."""
    cert_file, key_file = paths
    # OpenSSL reads the files again by path (it takes nothing else). Should a
    # Secret be swapped between the two reads, the stamps Watched took before
    # this load no longer match the files, and the next look loads them again.
    leaf = _leaf_certificate(_read(_CERT_FILE, cert_file), cert_file)
    _check_private_key(_read(_KEY_FILE, key_file), key_file)
    context = _new_context()
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:  # Watched keeps the last good version only for ours
        raise _openssl_problem(exc, cert_file, key_file) from exc
    return _Loaded(context, leaf)


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | _NO_RENEGOTIATION
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # no client certificates: AUTH identifies clients
    return context


def _require(key: str, path: Path) -> None:
    try:
        filewatch.stamp(path)
    except OSError as exc:
        raise FileProblem(f"{key}: {filewatch.describe(exc)}") from exc


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileProblem(f"{key}: {filewatch.describe(exc)}") from exc


def _leaf_certificate(pem: bytes, path: Path) -> x509.Certificate:
    """The first certificate of the file: the one OpenSSL presents, the rest is its chain."""
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        swapped = b"PRIVATE KEY-" in pem
        hint = " (it holds a private key: are cert_file and key_file swapped?)" if swapped else ""
        raise FileProblem(
            f"{_CERT_FILE}: {path} holds no PEM certificate "
            f"('-----BEGIN CERTIFICATE-----' and the chain after it){hint}"
        ) from exc
    if not chain:
        raise FileProblem(f"{_CERT_FILE}: {path} holds no PEM certificate")
    return chain[0]


def _check_private_key(pem: bytes, path: Path) -> None:
    """Parse it here too: a bad key is then named as such (OpenSSL says "PEM lib"
    for either file), and an encrypted one never makes OpenSSL ask for a
    passphrase on the terminal."""
    load_private_key(pem, path, _KEY_FILE, hint=" ('-----BEGIN PRIVATE KEY-----')")


def _openssl_problem(exc: ssl.SSLError, cert_file: Path, key_file: Path) -> FileProblem:
    """OpenSSL's refusal of two files that each parsed: a mismatch, or the certificate's fault."""
    reason = exc.reason or ""
    if reason == "KEY_VALUES_MISMATCH":
        return FileProblem(
            f"{_KEY_FILE}: the key in {key_file} does not match the certificate in "
            f"{_CERT_FILE} ({cert_file}); give the key the certificate was issued for"
        )
    words = _OPENSSL_REASONS.get(reason, exc.strerror or str(exc))
    return FileProblem(f"{_CERT_FILE}: OpenSSL refuses {cert_file}: {words}")


def _publish(loaded: _Loaded) -> None:
    """The gauge and the log line follow the certificate that new sessions get."""
    not_after = loaded.leaf.not_valid_after_utc
    metrics.CERTIFICATE_EXPIRY.set(not_after.timestamp())
    log.info(
        "serving certificate",
        extra={
            "key": KEY,
            "subject": loaded.leaf.subject.rfc4514_string(),
            "serial": format(loaded.leaf.serial_number, "x"),
            "not_after": not_after.isoformat(),
        },
    )
