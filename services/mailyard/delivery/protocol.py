"""The SMTP client's protocol logic, without I/O (RFC 5321, RFC 2920, RFC 3207).

Replies are parsed line by line into :class:`~mailyard.reply.Reply` values;
commands and the DATA payload are built as bytes. ``smtp.py`` moves these
bytes over a socket. Hand-written because no maintained Python SMTP client
pipelines (RFC 2920): aiosmtplib sends MAIL, each RCPT and DATA one at a
time and waits for each reply, and on the benchmark's profile those writes
were a fifth of the delivery service's CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailyard.addresses import is_clean_mailbox
from mailyard.reply import Reply
from mailyard.xtext import is_xtext

MAX_REPLY_LINES = 100
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


@dataclass
class ReplyReader:
    """Collects the lines of one (possibly multi-line) reply.

    After a reply completes, ``lines`` holds its text lines (EHLO's keywords).
    """

    lines: list[str] = field(default_factory=list)
    _code: int | None = None
    _texts: list[str] = field(default_factory=list)

    def feed(self, raw: bytes) -> Reply | None:
        """One line, CRLF included; the complete Reply after its last line."""
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            raise ProtocolError(f"not an SMTP reply line: {line[:80]!r}")
        code = int(line[:3])
        if self._code is not None and code != self._code:
            raise ProtocolError(f"reply code changed within a reply: {self._code} then {code}")
        if not 200 <= code <= 599:
            raise ProtocolError(f"reply code out of range: {code}")
        self._code = code
        self._texts.append(line[4:].strip())
        if len(self._texts) > MAX_REPLY_LINES:
            raise ProtocolError("reply longer than 100 lines")
        if line[3:4] == "-":
            return None
        reply = Reply.parse(code, " ".join(t for t in self._texts if t))
        self.lines, self._code, self._texts = self._texts, None, []
        return reply


def extensions(ehlo_lines: list[str]) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters; the first line is the greeting."""
    found: dict[str, str] = {}
    for line in ehlo_lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            found[keyword.upper()] = params
    return found


def _path(address: str) -> bytes:
    # Addresses were checked when they entered the system; a control
    # character or bracket here would inject a command, so refuse outright.
    if address and not is_clean_mailbox(address):  # "" is the null sender
        raise ValueError(f"unusable address: {address!r}")
    return b"<" + address.encode("utf-8") + b">"


_NOTIFY = re.compile(r"NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*")


def mail_command(
    sender: str,
    *,
    size: int | None = None,
    eight_bit: bool = False,
    ret: str = "",
    envid: str = "",
    smtputf8: bool = False,
) -> bytes:
    """MAIL FROM with its parameters; RET and ENVID only when the next hop offers DSN."""
    params = b""
    if size is not None:
        params += b" SIZE=" + str(size).encode()
    if eight_bit:
        params += b" BODY=8BITMIME"
    if smtputf8:
        params += b" SMTPUTF8"
    if ret in ("FULL", "HDRS"):
        params += b" RET=" + ret.encode()
    if envid and is_xtext(envid):
        params += b" ENVID=" + envid.encode()
    return b"MAIL FROM:" + _path(sender) + params + b"\r\n"


def rcpt_command(recipient: str, *, notify: str = "", orcpt: str = "") -> bytes:
    """RCPT TO, with NOTIFY and ORCPT (RFC 3461) as the client gave them.

    They were checked at ingress; anything that is not their syntax now is
    dropped rather than sent (a queue is never trusted with command bytes).
    """
    params = b""
    if notify and _NOTIFY.fullmatch(notify):
        params += b" NOTIFY=" + notify.encode()
    kind, semicolon, text = orcpt.partition(";")
    if semicolon and kind and text and is_xtext(text) and kind.replace("-", "").isalnum():
        params += b" ORCPT=" + orcpt.encode()
    return b"RCPT TO:" + _path(recipient) + params + b"\r\n"


def data_payload(content: bytes) -> bytes:
    """Line endings made CRLF, leading dots doubled, the final ``.`` line added."""
    body = content
    crlf = body.count(b"\r\n")
    if body.count(b"\n") != crlf or body.count(b"\r") != crlf:  # a bare CR or LF somewhere
        body = _LINE_ENDINGS.sub(b"\r\n", body)
    if body.startswith(b".") or b"\n." in body:
        body = _LEADING_DOT.sub(b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def is_eight_bit(content: bytes) -> bool:
    return not content.isascii()
