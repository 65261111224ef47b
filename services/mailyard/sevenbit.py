"""Message content any SMTP server takes: 7-bit MIME bodies, lines of at most 998 octets.

- RFC 6152 §3: an 8-bit message may go only to a server that offers
  8BITMIME; to any other it must be converted first. Postfix converts to
  quoted-printable, and so does this.
- RFC 5321 §4.5.3.1.6: a line is at most 998 octets before its CRLF. BDAT
  (RFC 3030) can carry longer ones, and quoted-printable's soft line breaks
  make any line fit again without changing what the reader sees.
- RFC 6376 §5.3: a signer should convert before signing, or the signature
  breaks at the first relay that converts.

The standard library's email parser and generator do the MIME work; what
is ours is the choice of what to convert. Only leaf parts are re-encoded,
and only if they are declared 7bit, 8bit or binary (or nothing) and their
body is 8-bit or has a long line: text as quoted-printable, anything else
as base64. Parts already in base64 or quoted-printable are 7-bit. The
message inside a message/rfc822 part is converted in place and labelled
7bit, because RFC 2046 §5.2.1 allows no other encoding there. A message
without MIME that needs converting becomes ``text/plain`` with
``charset=utf-8`` if it decodes as UTF-8 (``us-ascii`` if it is ASCII
with long lines), else ``charset=unknown-8bit`` (RFC 1428).

Header fields are left alone: 8-bit headers need SMTPUTF8 (RFC 6531),
which is a separate question. A re-serialised header keeps its value but
may gain a space after its colon. Such a message is converted before it
is signed, so the signature covers the converted bytes.
"""

from __future__ import annotations

import base64
import io
import quopri
from email import message_from_bytes
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32

from mailyard.content import body_of

LINE_LIMIT = 998  # octets, without the CRLF
_AS_IS = {"", "7bit", "8bit", "binary"}  # encodings that put the octets on the wire as they are
_POLICY = compat32.clone(linesep="\r\n")


def has_long_line(content: bytes) -> bool:
    return len(content) > LINE_LIMIT and max(map(len, content.splitlines())) > LINE_LIMIT


def needs_conversion(content: bytes, *, eight_bit_ok: bool) -> bool:
    """Whether :func:`convert` would change what a server offering (or not) 8BITMIME gets."""
    body = body_of(content)
    return (not eight_bit_ok and not body.isascii()) or has_long_line(body)


def convert(content: bytes) -> bytes:
    """``content`` with every 8-bit or long-lined body part re-encoded as quoted-printable."""
    message = message_from_bytes(content, policy=_POLICY)
    unlabelled = not message.is_multipart() and "MIME-Version" not in message
    if not _convert(message):
        return content
    if unlabelled:
        _label_plain_text(message, body_of(content))
    out = io.BytesIO()
    # maxheaderlen=0: the header fields keep their folding as they came.
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(message)
    return out.getvalue()


def _convert(part: Message) -> bool:
    """Convert ``part`` and what it contains; whether anything changed."""
    if part.get_content_maintype() == "message" and part.is_multipart():
        # message/rfc822 (and global): the inner message is the payload.
        # A list, not a generator: every part is converted, not only the first.
        changed = any([_convert(inner) for inner in _children(part)])
        if changed:
            _set_encoding(part, "7bit")
        return changed
    if part.is_multipart():
        return any([_convert(child) for child in _children(part)])
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding not in _AS_IS:
        return False  # base64 or quoted-printable: 7-bit, short lines already
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes) or (raw.isascii() and not has_long_line(raw)):
        return False
    if part.get_content_maintype() != "text":
        # Octets, not lines: base64 is what every reader expects, and smaller.
        part.set_payload(base64.encodebytes(raw).decode("ascii").rstrip("\n"))
        _set_encoding(part, "base64")
        return True
    # Text keeps its lines: the generator writes them back with CRLF.
    encoded = quopri.encodestring(raw.replace(b"\r\n", b"\n")).decode("ascii")
    part.set_payload(encoded)
    _set_encoding(part, "quoted-printable")
    return True


def _children(part: Message) -> list[Message]:
    return [child for child in part.get_payload() if isinstance(child, Message)]


def _set_encoding(part: Message, encoding: str) -> None:
    if "Content-Transfer-Encoding" in part:
        part.replace_header("Content-Transfer-Encoding", encoding)
    else:
        part["Content-Transfer-Encoding"] = encoding


def _label_plain_text(message: Message, raw: bytes) -> None:
    """A message without MIME headers is text of an unknown charset: say what we know."""
    try:
        raw.decode("ascii" if raw.isascii() else "utf-8")
        charset = "us-ascii" if raw.isascii() else "utf-8"
    except UnicodeDecodeError:
        charset = "unknown-8bit"
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = f"text/plain; charset={charset}"
