"""VERP return paths signed with an HMAC — no I/O.

With ``bounce.return_path_domain`` set, every job carries one recipient and
is sent with an envelope sender of its own on that domain, so that a bounce
that comes back later (asynchronously, RFC 3464 or worse) says by its
envelope recipient alone which recipient it concerns (Bernstein's VERP).
The bounce service keeps no database: everything it needs is in the
address, and an HMAC-SHA256 under ``bounce.verp_secret_file`` proves that
we made it, so nobody can suppress an address by mailing us a fake DSN.

Two forms, both within the 64 octets of a local part (RFC 5321
§4.5.3.1.1), both in lower case only (a remote MTA that changes the case of
what it bounces to changes nothing; the tag and the HMAC are base32):

- ``b-<mac>-<local>=<domain>``: the recipient itself, readable in logs,
  when it is lower case, a plain dot-atom and short enough (most are);
- ``bh-<mac>-<message id>-<hash>``: otherwise the message's id and a hash
  of the recipient; the bounce names the recipient (Final-Recipient …), and
  the hash tells which of the names it gives is ours.

``<mac>`` is 40 bits of HMAC-SHA256 (8 base32 characters) over the form
and its fields: forging one takes some 10^12 tries by mail, each an SMTP
transaction. Verification accepts every secret of the keyring (the first
line of the file signs; the lines after it are previous secrets, kept for
verification while the bounces of mail signed with them can come back).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from mailyard.filewatch import Watched

LOCAL_PART_LIMIT = 64  # RFC 5321 §4.5.3.1.1
MIN_SECRET_BYTES = 16
_MAC_CHARS = 8  # 5 bytes of the HMAC, base32
_CONTEXT = b"mailyard-verp/1\x00"
_READABLE = "b-"
_HASHED = "bh-"
# Lower-case dot-atoms only (RFC 5322 §3.2.3, a subset): what a readable
# form can carry without quoting and without depending on case.
_PLAIN_LOCAL = re.compile(r"[a-z0-9_+=-]+(?:\.[a-z0-9_+=-]+)*")
_PLAIN_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_BASE32 = re.compile(r"[a-z2-7]+")
_MESSAGE_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{26}")  # ids.py's Crockford base32, lower-cased


class SecretError(ValueError):
    """The secret file holds no usable secret."""


@dataclass(frozen=True, slots=True)
class Keyring:
    """The secret that signs, then the previous ones that still verify."""

    secrets: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.secrets:
            raise SecretError("no secret")
        for index, secret in enumerate(self.secrets):
            if len(secret) < MIN_SECRET_BYTES:
                which = "the secret" if index == 0 else f"previous secret {index}"
                raise SecretError(
                    f"{which} has {len(secret)} bytes; a VERP secret needs at least "
                    f"{MIN_SECRET_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)"
                )


def parse_keyring(text: bytes) -> Keyring:
    """One secret a line (surrounding blanks stripped; empty lines and ``#`` comments skipped)."""
    lines = [line.strip() for line in text.splitlines()]
    return Keyring(tuple(line for line in lines if line and not line.startswith(b"#")))


def load_keyring(paths: tuple[Path, ...]) -> Keyring:
    """For :class:`mailyard.filewatch.Watched`: the keyring of the one file."""
    [path] = paths
    return parse_keyring(path.read_bytes())


@dataclass(frozen=True, slots=True)
class Verp:
    """A VERP address of ours whose HMAC verified."""

    recipient: str | None  # the readable form's recipient
    message_id: str | None  # the hashed form's message id (upper case, as ids.py makes it)
    recipient_hash: str | None  # the hashed form's hash of the recipient
    secret_index: int  # 0: the current secret; 1, 2…: a previous one

    def names(self, address: str) -> bool:
        """Whether ``address`` (from the bounce) is the recipient this address stands for."""
        if self.recipient is not None:
            return address.lower() == self.recipient.lower()
        return self.recipient_hash == _recipient_hash(address)


@dataclass(frozen=True, slots=True)
class Forged:
    """Shaped like our VERP addresses, but no secret of ours made it."""

    reason: str  # mac | malformed


def return_path(keyring: Keyring, *, domain: str, message_id: str, recipient: str) -> str:
    """The envelope sender for the job of ``message_id`` to ``recipient``."""
    secret = keyring.secrets[0]
    local, _, rdomain = recipient.rpartition("@")
    readable = f"{local}={rdomain}"
    if (
        _PLAIN_LOCAL.fullmatch(local)
        and _PLAIN_DOMAIN.fullmatch(rdomain)
        and len(_READABLE) + _MAC_CHARS + 1 + len(readable) <= LOCAL_PART_LIMIT
    ):
        mac = _mac(secret, "b", recipient)
        return f"{_READABLE}{mac}-{readable}@{domain}"
    short_id = message_id.lower()
    if not _MESSAGE_ID.fullmatch(short_id):
        raise ValueError(f"{message_id!r} is not a message id of ours (ids.py)")
    digest = _recipient_hash(recipient)
    mac = _mac(secret, "h", short_id, digest)
    return f"{_HASHED}{mac}-{short_id}-{digest}@{domain}"


def parse(keyring: Keyring, local_part: str) -> Verp | Forged | None:
    """What a local part of the return-path domain is: ours, forged, or no VERP (None)."""
    local = local_part.lower()
    if local.startswith(_HASHED):
        return _parse_hashed(keyring, local[len(_HASHED) :])
    if local.startswith(_READABLE):
        return _parse_readable(keyring, local[len(_READABLE) :])
    return None


def _parse_readable(keyring: Keyring, rest: str) -> Verp | Forged:
    mac, dash, readable = rest[:_MAC_CHARS], rest[_MAC_CHARS : _MAC_CHARS + 1], rest[9:]
    local, equals, rdomain = readable.rpartition("=")
    if dash != "-" or not equals or not local or not _PLAIN_DOMAIN.fullmatch(rdomain):
        return Forged("malformed")
    recipient = f"{local}@{rdomain}"
    index = _verify(keyring, mac, "b", recipient)
    if index is None:
        return Forged("mac")
    return Verp(recipient, None, None, index)


def _parse_hashed(keyring: Keyring, rest: str) -> Verp | Forged:
    parts = rest.split("-")
    if len(parts) != 3:
        return Forged("malformed")
    mac, short_id, digest = parts
    if not _MESSAGE_ID.fullmatch(short_id) or not _BASE32.fullmatch(digest):
        return Forged("malformed")
    index = _verify(keyring, mac, "h", short_id, digest)
    if index is None:
        return Forged("mac")
    return Verp(None, short_id.upper(), digest, index)


def _verify(keyring: Keyring, mac: str, *fields: str) -> int | None:
    for index, secret in enumerate(keyring.secrets):
        if hmac.compare_digest(mac, _mac(secret, *fields)):
            return index
    return None


def _mac(secret: bytes, *fields: str) -> str:
    message = _CONTEXT + b"\x00".join(field.encode("utf-8", "surrogateescape") for field in fields)
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()


def _recipient_hash(recipient: str) -> str:
    """8 base32 characters of SHA-256 of the address, its case ignored (as mailboxes mostly do).

    Not keyed: the HMAC around it is what makes the address ours."""
    digest = hashlib.sha256(recipient.lower().encode("utf-8", "surrogateescape")).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()


CONFIG_KEY = "bounce.verp_secret_file"  # named in errors and reload metrics


def watch_keyring(path: Path) -> Watched[Keyring]:
    """The keyring, read now (a missing or short secret stops start-up naming the key)
    and again whenever the file changes (a rotated Secret)."""
    return Watched(CONFIG_KEY, (path,), load_keyring)
