"""xtext (RFC 3461 §4): how ENVID and ORCPT travel in SMTP — no I/O.

xtext is printable ASCII except "+" and "=", with any other octet written
as "+" and two upper-case hex digits. Ingress checks it, delivery passes it
on unchanged, and a DSN shows it decoded (RFC 3461 §6.3 (a) and (d)): the
Original-Envelope-Id and Original-Recipient fields carry the sender's own
characters, in their own case (RFC 3464 §2.2.1: the envelope id is
case-sensitive).
"""

from __future__ import annotations

import re

# Printable ASCII but "+" and "=", or "+" and two upper-case hex digits.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")


def is_xtext(text: str) -> bool:
    return bool(_XTEXT.fullmatch(text))


def decode(text: str) -> str:
    """``"a+2Bb"`` → ``"a+b"``; anything that is not a hexchar stays as it is."""
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)


def for_dsn_field(text: str) -> str:
    """The decoded value when a DSN field can carry it, else the xtext as given.

    A field holds printable ASCII on one line (RFC 3464 §2.1.1, ``*text``
    without CR or LF); a value that decodes to a control character or to
    8-bit octets keeps its xtext form, which says the same without breaking
    the field (or smuggling a header into it).
    """
    decoded = decode(text)
    if all(" " <= char <= "~" for char in decoded):
        return decoded
    return text
