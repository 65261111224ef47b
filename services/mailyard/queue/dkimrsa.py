"""dkimpy's RSA signing step done by OpenSSL (through ``cryptography``).

dkimpy does DKIM well: canonicalisation, the header list, folding. Its
RSA, though, is arithmetic on Python integers: 12 ms of CPU for one
RSA-2048 signature, against 0.7 ms in OpenSSL (measured on the benchmark
machine), which would make one queue process sign at most some 80
messages a second. dkimpy looks up its ``RSASSA_PKCS1_v1_5_sign(hash,
key)`` by module name when it signs, so :func:`install` puts this one in
its place. It takes the same arguments (the hash object of the signed
data, and the private key as dkimpy parsed it) and returns the same bytes:
RSASSA-PKCS1-v1_5 is deterministic, and the tests compare the two.
Verification is left to dkimpy.

Only SHA-256 is taken over (the only RSA algorithm RFC 8301 lets a signer
use); anything else goes to dkimpy's own function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

DkimRsaSign = Callable[[Any, dict[str, int]], bytes]

_DKIMPY_SIGN: DkimRsaSign = dkim.RSASSA_PKCS1_v1_5_sign


def install() -> None:
    """Make dkimpy sign with OpenSSL from now on, in this process (idempotent)."""
    dkim.RSASSA_PKCS1_v1_5_sign = sign


def installed() -> bool:
    return dkim.RSASSA_PKCS1_v1_5_sign is sign


def sign(digest: Any, key: dict[str, int]) -> bytes:
    """``digest``: dkimpy's hash object (``.name``, ``.digest()``); ``key``: its parsed key."""
    if getattr(digest, "name", "") != "sha256":
        return _DKIMPY_SIGN(digest, key)
    private = _private_key(
        key["modulus"], key["publicExponent"], key["privateExponent"], key["prime1"],
        key["prime2"], key["exponent1"], key["exponent2"], key["coefficient"],
    )  # fmt: skip
    return private.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


@functools.lru_cache(maxsize=64)  # the configured keys, and a few versions of each
def _private_key(
    n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int
) -> rsa.RSAPrivateKey:
    return rsa.RSAPrivateNumbers(
        p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)
    ).private_key()
