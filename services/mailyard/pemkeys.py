"""Unencrypted PEM private keys from the files the configuration names (TLS, DKIM).

One parser, so a bad key file gets the same precise error whichever key
names it: encrypted, of a kind we cannot use, or no private key at all.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from mailyard.filewatch import FileProblem


def load_private_key(pem: bytes, path: Path, key: str, *, hint: str = "") -> PrivateKeyTypes:
    """The key in ``pem`` (read from ``path``); :class:`FileProblem` naming ``key``.

    ``hint`` ends the message when the file holds no private key at all.
    """
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # cryptography's word for "encrypted, and no password given"
        raise FileProblem(
            f"{key}: {path} is encrypted with a passphrase; give the key unencrypted "
            "and protect the file instead (a Kubernetes Secret, mode 0600)"
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise FileProblem(f"{key}: {path} holds a kind of key that is not supported") from exc
    except ValueError as exc:
        raise FileProblem(f"{key}: {path} holds no PEM private key{hint}") from exc
