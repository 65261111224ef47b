"""DKIM key material: key files read with ``cryptography``, new keys, their DNS records.

A key file is PEM, PKCS#8 (``BEGIN PRIVATE KEY``) or traditional (``BEGIN
RSA PRIVATE KEY``), unencrypted, holding an RSA key (RFC 8301: at least 1024
bits, 2048 advised) or an Ed25519 key (RFC 8463). Every problem is a
:class:`~mailyard.filewatch.FileProblem` whose message starts with the
configuration key (``dkim.keys[0].key_file: …``).

What dkimpy's ``sign`` takes differs by algorithm, so a loaded
:class:`SigningKey` holds it ready: a traditional (PKCS#1) PEM for RSA, the
base64 of the raw 32-byte private key for Ed25519. It also holds the
public half as the ``p=`` of the TXT record (RFC 6376 §3.6.1): the base64
of the DER SubjectPublicKeyInfo for RSA, of the raw 32-byte public key for
Ed25519 (RFC 8463 §4.2).
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from mailyard import filewatch
from mailyard.filewatch import FileProblem
from mailyard.pemkeys import load_private_key

log = logging.getLogger(__name__)

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa", "ed25519")

# RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits and SHOULD
# use at least 2048; verifiers MUST take 1024 to 4096, so a bigger key may
# not verify everywhere (and makes a TXT record some DNS hosts refuse).
RSA_MIN_BITS = 1024
RSA_ADVISED_BITS = 2048
RSA_MAX_BITS = 4096
TXT_STRING_LIMIT = 255  # octets in one character-string of a TXT record (RFC 1035 §3.3)

_SIGNATURE_ALGORITHMS: dict[Algorithm, bytes] = {
    "rsa": b"rsa-sha256",  # RFC 8301: rsa-sha1 is not to be used
    "ed25519": b"ed25519-sha256",
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key, in the form dkimpy signs with, and its public half."""

    algorithm: Algorithm
    bits: int
    # RSA: a PKCS#1 PEM; Ed25519: base64 of the raw private key.
    secret: bytes = field(repr=False)
    public: str  # the p= value of the DNS record

    @property
    def signature_algorithm(self) -> bytes:
        """The a= of the signature (RFC 6376 §3.5; RFC 8463 §3)."""
        return _SIGNATURE_ALGORITHMS[self.algorithm]

    @property
    def record(self) -> str:
        """The TXT record's value (RFC 6376 §3.6.1), e.g. ``v=DKIM1; k=rsa; p=MIIB…``."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public}"


def load_key(key: str, path: Path) -> SigningKey:
    """The key in ``path``; :class:`FileProblem` naming ``key`` if it cannot sign."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise FileProblem(f"{key}: {filewatch.describe(exc)}") from exc
    private = load_private_key(pem, path, key, hint=_hint(pem))
    try:
        loaded = signing_key(private)
    except ValueError as exc:
        raise FileProblem(f"{key}: {path} {exc}") from exc
    if loaded.algorithm == "rsa" and loaded.bits < RSA_ADVISED_BITS:
        log.warning(
            "a DKIM key is shorter than RFC 8301 advises (2048 bits); some receivers ignore it",
            extra={"key": key, "bits": loaded.bits},
        )
    return loaded


def signing_key(private: PrivateKeyTypes) -> SigningKey:
    """What dkimpy needs of ``private``; ValueError for a key DKIM cannot use."""
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < RSA_MIN_BITS:
            raise ValueError(
                f"holds an RSA key of {private.key_size} bits, which is too weak: DKIM needs "
                f"at least {RSA_MIN_BITS} (RFC 8301), and {RSA_ADVISED_BITS} is what to use"
            )
        secret = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return SigningKey("rsa", private.key_size, secret, public_value(private))
    if isinstance(private, ed25519.Ed25519PrivateKey):
        _require_pynacl()
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return SigningKey("ed25519", 256, base64.b64encode(raw), public_value(private))
    raise ValueError(
        f"holds {_kind(private)} key; DKIM signs with RSA (RFC 8301) or Ed25519 (RFC 8463)"
    )


def generate(algorithm: Algorithm, bits: int = RSA_ADVISED_BITS) -> PrivateKeyTypes:
    """A new private key; ``bits`` only for RSA, from 2048 to 4096 (RFC 8301)."""
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if not RSA_ADVISED_BITS <= bits <= RSA_MAX_BITS:
        raise ValueError(
            f"an RSA key for DKIM has {RSA_ADVISED_BITS} to {RSA_MAX_BITS} bits "
            f"(RFC 8301); {bits} is not one of them"
        )
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(private: PrivateKeyTypes) -> bytes:
    """``private`` as an unencrypted PKCS#8 PEM (what a key file holds)."""
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_value(private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The ``p=`` of the DNS record for ``private``."""
    public = private.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        data = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(data).decode("ascii")


def txt_strings(value: str) -> list[str]:
    """``value`` cut into the character-strings of one TXT record (255 octets each).

    A verifier joins them with nothing between (RFC 6376 §3.6.2.2).
    """
    data = value.encode("ascii")
    chunks = [data[i : i + TXT_STRING_LIMIT] for i in range(0, len(data), TXT_STRING_LIMIT)]
    return [chunk.decode("ascii") for chunk in chunks] or [""]


def dns_record(domain: str, selector: str, value: str) -> str:
    """The zone-file line to publish, e.g.
    ``s1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB…" "…"``."""
    strings = " ".join(f'"{string}"' for string in txt_strings(value))
    return f"{selector}._domainkey.{domain}. IN TXT {strings}"


def _require_pynacl() -> None:
    # dkimpy signs Ed25519 with PyNaCl, which it imports only if it is there.
    try:
        import nacl.signing  # noqa: F401
    except ImportError:
        raise ValueError(
            "holds an Ed25519 key, and signing with it needs PyNaCl, which is not installed"
        ) from None


def _kind(private: PrivateKeyTypes) -> str:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return f"an EC ({private.curve.name})"
    names: list[tuple[type, str]] = [
        (dsa.DSAPrivateKey, "a DSA"),
        (ed448.Ed448PrivateKey, "an Ed448"),
        (x25519.X25519PrivateKey, "an X25519"),
        (x448.X448PrivateKey, "an X448"),
    ]
    return next((name for kind, name in names if isinstance(private, kind)), "an unsupported")


def _hint(pem: bytes) -> str:
    if b"-----BEGIN PUBLIC KEY-----" in pem or b"-----BEGIN RSA PUBLIC KEY-----" in pem:
        return " (it holds a public key: the private key goes here, the public one in DNS)"
    if b"-----BEGIN CERTIFICATE-----" in pem:
        return " (it holds a certificate: DKIM needs the private key itself)"
    if b"-----BEGIN " not in pem:
        return " (no '-----BEGIN PRIVATE KEY-----' line: is it PEM?)"
    return ""


def write_key_file(path: Path, private: PrivateKeyTypes, *, replace: bool = False) -> None:
    """Write ``private`` as PKCS#8 PEM to a new file of mode 0600.

    An existing file raises FileExistsError, unless ``replace``: then the new
    file takes its name at once (os.replace), as a watched file should change.
    """
    target = path.with_name(f".{path.name}.{os.getpid()}.new") if replace else path
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(private_pem(private))
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
