"""Outbound SMTP over asyncio streams: open a session, run one transaction.

The protocol logic (reply parsing, commands, dot-stuffing) is in
``protocol.py``; this module moves bytes and turns socket trouble into what
the caller needs to know:

- :class:`HostUnusable` — we never got to MAIL FROM on this host (refused,
  timed out, bad greeting, TLS broke): try the next address or MX;
- :class:`SessionLost` — a reused connection turned out dead before the
  server answered anything for this message: open a new one and try again;
- otherwise, a :class:`Reply` for every recipient.

With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write and
their replies are read in order; otherwise one command at a time.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

from mailyard.delivery.protocol import (
    ProtocolError,
    ReplyReader,
    data_payload,
    extensions,
    is_eight_bit,
    mail_command,
    rcpt_command,
)
from mailyard.reply import Reply

READ_LIMIT = 64 * 1024
_CONNECTION_TROUBLE = (
    OSError,
    TimeoutError,
    EOFError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ProtocolError,
    ssl.SSLError,
)


class HostUnusable(Exception):
    def __init__(self, reply: Reply, *, tls_failed: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls_failed = tls_failed


class SessionLost(Exception):
    """The connection died before the server answered MAIL FROM."""


def opportunistic_tls_context() -> ssl.SSLContext:
    """STARTTLS without authentication, as RFC 7435 / Postfix's ``may`` level.

    Encrypting with an unchecked certificate still beats sending in clear,
    which is the only alternative when the peer's name cannot be verified.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(eq=False)
class SmtpSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    mx: str
    address: str
    port: int
    command_timeout: float
    tls: bool = False
    extensions: dict[str, str] = field(default_factory=dict)
    transactions: int = 0
    last_used: float = field(default_factory=time.monotonic)
    _replies: ReplyReader = field(default_factory=ReplyReader)

    @property
    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    @property
    def where(self) -> str:
        return f"{self.mx}[{self.address}]"

    async def read_reply(self) -> Reply:
        async with asyncio.timeout(self.command_timeout):
            while True:
                line = await self.reader.readuntil(b"\n")
                reply = self._replies.feed(line)
                if reply is not None:
                    return reply

    async def command(self, line: bytes) -> Reply:
        self.writer.write(line)
        return await self.read_reply()

    async def hello(self, name: str) -> None:
        """EHLO, or HELO for a server that does not speak ESMTP."""
        reply = await self.command(f"EHLO {name}\r\n".encode())
        if reply.is_positive:
            self.extensions = extensions(self._replies.lines)
            return
        reply = await self.command(f"HELO {name}\r\n".encode())
        if not reply.is_positive:
            raise HostUnusable(_as_host_problem(reply, f"{self.where} refused HELO"))
        self.extensions = {}

    def close(self) -> None:
        self.writer.close()


async def open_session(
    *,
    mx: str,
    address: str,
    port: int,
    helo_name: str,
    tls_context: ssl.SSLContext | None,
    connect_timeout: float,
    command_timeout: float,
) -> SmtpSession:
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(address, port, limit=READ_LIMIT)
    except (OSError, TimeoutError) as exc:
        raise HostUnusable(
            Reply(451, "4.4.1", f"connect to {mx}[{address}]:{port}: {_describe(exc)}")
        ) from exc
    session = SmtpSession(reader, writer, mx, address, port, command_timeout)
    try:
        greeting = await session.read_reply()
        if greeting.code != 220:
            raise HostUnusable(_as_host_problem(greeting, f"{session.where} refused us"))
        await session.hello(helo_name)
        if tls_context is not None and "STARTTLS" in session.extensions:
            await _start_tls(session, tls_context, helo_name)
    except HostUnusable:
        session.close()
        raise
    except _CONNECTION_TROUBLE as exc:
        session.close()
        raise HostUnusable(
            Reply(451, "4.4.2", f"{session.where} dropped the session: {_describe(exc)}")
        ) from exc
    return session


async def _start_tls(session: SmtpSession, context: ssl.SSLContext, helo_name: str) -> None:
    reply = await session.command(b"STARTTLS\r\n")
    if reply.code != 220:
        return  # offered, then refused, but still talking: carry on in clear
    try:
        async with asyncio.timeout(session.command_timeout):
            await session.writer.start_tls(context, server_hostname=session.mx or None)
    except (*_CONNECTION_TROUBLE, ValueError) as exc:
        session.close()
        raise HostUnusable(
            Reply(451, "4.7.5", f"TLS handshake with {session.where} failed: {_describe(exc)}"),
            tls_failed=True,
        ) from exc
    session.tls = True
    await session.hello(helo_name)  # RFC 3207: forget what was said in clear


NO_SMTPUTF8 = Reply(
    553, "5.6.7", "The message needs SMTPUTF8 (RFC 6531), which the receiving server lacks"
)


@dataclass(frozen=True)
class Dsn:
    """What the sender asked of DSNs, passed on to a next hop that offers DSN (RFC 3461)."""

    ret: str = ""
    envid: str = ""
    notify: dict[str, str] = field(default_factory=dict)  # recipient → NOTIFY
    orcpt: dict[str, str] = field(default_factory=dict)  # recipient → ORCPT


async def send_transaction(
    session: SmtpSession,
    mail_from: str,
    recipients: list[str],
    content: bytes,
    dsn: Dsn | None = None,
    *,
    smtputf8: bool = False,
) -> dict[str, Reply]:
    """MAIL, one RCPT each, DATA: a reply for every recipient."""
    extensions = session.extensions
    if smtputf8 and "SMTPUTF8" not in extensions:
        return dict.fromkeys(recipients, NO_SMTPUTF8)
    dsn = dsn if dsn is not None and "DSN" in extensions else Dsn()
    mail = mail_command(
        mail_from,
        size=len(content) if "SIZE" in extensions else None,
        eight_bit="8BITMIME" in extensions and is_eight_bit(content),
        ret=dsn.ret,
        envid=dsn.envid,
        smtputf8=smtputf8,
    )
    try:
        rcpts = [
            rcpt_command(r, notify=dsn.notify.get(r, ""), orcpt=dsn.orcpt.get(r, ""))
            for r in recipients
        ]
    except ValueError as exc:
        refusal = Reply(553, "5.1.3", f"unusable recipient address: {exc}")
        return dict.fromkeys(recipients, refusal)
    pipelining = "PIPELINING" in extensions

    # MAIL FROM: until the server answers it, a broken reused session costs nothing.
    try:
        if pipelining:
            session.writer.write(mail + b"".join(rcpts) + b"DATA\r\n")
            mail_reply = await session.read_reply()
        else:
            mail_reply = await session.command(mail)
    except _CONNECTION_TROUBLE as exc:
        session.close()
        raise SessionLost(f"{session.where}: {_describe(exc)}") from exc
    session.transactions += 1

    replies: dict[str, Reply] = {}
    try:
        if pipelining:
            rcpt_replies = [await session.read_reply() for _ in rcpts]
            data_reply = await session.read_reply()
        else:
            rcpt_replies, data_reply = [], None
            if mail_reply.is_positive:
                for command in rcpts:
                    rcpt_replies.append(await session.command(command))
                    if rcpt_replies[-1].code == 421:
                        break
        if not mail_reply.is_positive:
            await _abandon(session, data_reply)
            return dict.fromkeys(recipients, mail_reply)
        accepted = []
        for recipient, reply in zip(recipients, rcpt_replies, strict=False):
            if reply.is_positive:
                accepted.append(recipient)
            else:
                replies[recipient] = reply
        closing = next((r for r in [*rcpt_replies, data_reply] if r and r.code == 421), None)
        if closing is not None or not accepted:
            if closing is None:
                await _abandon(session, data_reply)
            else:
                session.close()
            return _rest(replies, recipients, closing or replies[recipients[0]])
        if data_reply is None:
            data_reply = await session.command(b"DATA\r\n")
        if data_reply.code != 354:
            await _abandon(session, None)
            return _rest(replies, accepted, data_reply)
        session.writer.write(data_payload(content))
        final = await session.read_reply()
    except _CONNECTION_TROUBLE as exc:
        session.close()
        # After DATA the server may or may not have the message: like
        # Postfix, we retry, which can make a duplicate (DESIGN.md, guarantee 2).
        lost = Reply(451, "4.4.2", f"lost connection with {session.where}: {_describe(exc)}")
        return _rest(replies, recipients, lost)
    session.last_used = time.monotonic()
    if final.code == 421:
        session.close()
    return _rest(replies, accepted, final)


async def _abandon(session: SmtpSession, data_reply: Reply | None) -> None:
    """End a transaction that will not carry the message, keeping the session usable.

    A pipelined DATA that the server accepted (354) must be ended with a lone
    dot before RSET (RFC 2920 §3.1).
    """
    try:
        if data_reply is not None and data_reply.code == 354:
            await session.command(b".\r\n")
        reply = await session.command(b"RSET\r\n")
    except _CONNECTION_TROUBLE:
        session.close()
        return
    if not reply.is_positive:
        session.close()


def _rest(replies: dict[str, Reply], recipients: list[str], reply: Reply) -> dict[str, Reply]:
    for recipient in recipients:
        replies.setdefault(recipient, reply)
    return replies


async def close_session(session: SmtpSession) -> None:
    if session.alive:
        try:
            session.command_timeout = 5
            await session.command(b"QUIT\r\n")
        except _CONNECTION_TROUBLE:
            pass
    session.close()


def _as_host_problem(reply: Reply, fallback: str) -> Reply:
    return reply if reply.text else Reply(reply.code, reply.status, fallback)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
