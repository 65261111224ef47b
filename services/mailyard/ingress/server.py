"""SMTP listeners: aiosmtpd's protocol, with enhanced status codes and a session cap.

We subclass aiosmtpd's ``SMTP`` for two small things it has no hook for:

- its own fixed replies ("552 Error: Too much mail data", "503 Error: need
  MAIL command", …) carry no RFC 3463 enhanced status code, although we
  advertise ENHANCEDSTATUSCODES; ``push`` adds the right one;
- counting open sessions, so that past ``max_connections`` a new client gets
  ``421 4.7.0`` at once instead of an unbounded number of sessions.

Everything else — parsing, state, DATA reading with its size and line limits —
stays aiosmtpd's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import SMTP

from mailyard.ingress import metrics

log = logging.getLogger(__name__)

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")

# Enhanced codes for aiosmtpd's own replies: by exact text, then by code.
_BY_TEXT = {"250 OK": "2.0.0", "221 Bye": "2.0.0"}
_BY_CODE = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
    "555": "5.5.4",
    "421": "4.7.0",
    "454": "4.7.0",
}

TOO_MANY_SESSIONS = b"421 4.7.0 Too many connections, try again later\r\n"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"


def with_enhanced_code(line: str) -> str:
    """Add the enhanced status code aiosmtpd left out; leave every other line alone."""
    if line in _BY_TEXT:
        return f"{line[:3]} {_BY_TEXT[line]}{line[3:]}"
    if _HAS_ENHANCED.match(line) or len(line) < 4 or line[3] != " ":
        return line
    status = _BY_CODE.get(line[:3])
    return f"{line[:3]} {status}{line[3:]}" if status else line


# The common case of MAIL FROM / RCPT TO: a dot-atom mailbox in angle
# brackets, optionally followed by parameters. aiosmtpd parses every address
# with the email package's full RFC 5322 parser, which the profile showed as
# ~6% of ingress CPU; this regex answers identically for the simple form
# (tests/unit/test_server.py compares the two) and leaves the rest to it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(.*))?"
)


class MailyardSMTP(SMTP):
    def __init__(self, *args: Any, sessions: SessionCounter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions = sessions
        self._held: list[bytes] = []

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _SIMPLE_PATH.fullmatch(arg.strip())
        if match is None or (
            self.local_part_limit and len(match.group(1).rpartition("@")[0]) > self.local_part_limit
        ):
            result: tuple[str | None, str | None] = super()._getaddr(arg)
            return result
        return match.group(1), (match.group(2) or "").strip()

    async def push(self, status: AnyStr) -> None:
        """Send a reply — or hold it while the client's next command is already here.

        RFC 2920 (PIPELINING): a client may send MAIL, RCPT… and DATA in one
        go. aiosmtpd answers each with its own write, and on this kind of
        machine a socket write is the most expensive thing ingress does.
        Like Postfix's smtpd, we hold replies while more commands wait in the
        input buffer and send them together once it is empty, so a client
        waiting for an answer always gets it at once.
        """
        line = with_enhanced_code(status) if isinstance(status, str) else status.decode()
        self._held.append(line.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") + b"\r\n")
        if self._more_input_waiting():
            return
        held, self._held = b"".join(self._held), []
        await super().push(held[:-2])  # aiosmtpd appends the last CRLF itself

    def _more_input_waiting(self) -> bool:
        # StreamReader has no public "bytes buffered" query; its buffer is a
        # plain attribute that has not changed in years. Without it, every
        # reply is simply sent at once.
        buffered: bytearray | None = getattr(self._reader, "_buffer", None)
        return buffered is not None and b"\n" in buffered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions.opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.closed(self)
        super().connection_lost(error)


class SessionCounter:
    """Open sessions, so we can cap them and, on shutdown, wait for them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sessions: set[MailyardSMTP] = set()
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def open(self) -> int:
        return len(self._sessions)

    @property
    def full(self) -> bool:
        return self.open >= self.limit

    def opened(self, session: MailyardSMTP) -> None:
        self._sessions.add(session)
        self.drained.clear()
        metrics.CONNECTIONS.inc()
        metrics.ACTIVE_SESSIONS.set(self.open)

    def closed(self, session: MailyardSMTP) -> None:
        self._sessions.discard(session)
        metrics.ACTIVE_SESSIONS.set(self.open)
        if not self._sessions:
            self.drained.set()

    def close_idle(self) -> None:
        """On shutdown: say goodbye to clients with no transaction under way."""
        for session in list(self._sessions):
            envelope, transport = session.envelope, session.transport
            if transport is not None and (envelope is None or not envelope.mail_from):
                cast(asyncio.WriteTransport, transport).write(SHUTTING_DOWN)
                transport.close()

    def close_all(self) -> None:
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()


class RefuseSession(asyncio.Protocol):
    """For a client over the session cap: one 421 line, then hang up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.WriteTransport subclasses.)
        cast(asyncio.WriteTransport, transport).write(TOO_MANY_SESSIONS)
        transport.close()
        metrics.REJECTED.labels("connect", "too_many_sessions").inc()
