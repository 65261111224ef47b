"""Outbound SMTP over asyncio streams: open a session, run one transaction.

The protocol logic (reply parsing, commands, dot-stuffing) is in
``protocol.py``; this module moves bytes and turns socket trouble into what
the caller needs to know:

- :class:`HostUnusable` — we never got to MAIL FROM on this host (refused,
  timed out, bad greeting, TLS broke): try the next address or MX;
- :class:`SessionLost` — a reused connection turned out dead before the
  server answered anything for this message: open a new one and try again;
- otherwise, a :class:`Reply` for every recipient.

What each reply means for each recipient and for the session is decided by
the state machine in ``transaction.py``; this is its driver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mailyard.delivery import dane, tlspolicy
from mailyard.delivery.protocol import ProtocolError, ReplyReader, extensions
from mailyard.delivery.tlspolicy import TlsMode, Verification
from mailyard.delivery.tlsresult import ResultType, certificate_result
from mailyard.delivery.transaction import Envelope, Stage, Transaction
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
    def __init__(self, reply: Reply, *, tls_failure: ResultType | None = None) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls_failure = tls_failure  # set when TLS is why: RFC 8460's name for it

    @property
    def tls_failed(self) -> bool:
        return self.tls_failure is not None


class SourceUnusable(HostUnusable):
    """The egress address could not be bound (not on this host any more): not the host's fault."""


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


def verifying_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """STARTTLS with the certificate checked against the host's name (``verify``).

    ``ca_file`` None means the system's trust store.
    """
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)


@dataclass(frozen=True, slots=True)
class Login:
    """AUTH for a relay that asks for it (the smarthost): sent only over TLS."""

    username: str
    password: str


@dataclass(eq=False)
class SmtpSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    mx: str
    address: str
    port: int
    command_timeout: float
    source: str = ""  # the egress address bound to (delivery.source_addresses); "": none
    tls: bool = False
    tls_version: str = ""
    cipher: str = ""
    # How the certificate was checked, for ``mx``: a session checked one way
    # never stands in for the other (attempt.suitable_for).
    verification: Verification = Verification.NONE
    authenticated_as: str = ""
    extensions: dict[str, str] = field(default_factory=dict)
    transactions: int = 0
    last_used: float = field(default_factory=time.monotonic)
    # The shaping destination whose connections it counts towards (delivery/gate.py),
    # the transactions it may carry, and who to tell once it is closed.
    destination: str = ""
    max_transactions: int = 0
    on_close: Callable[[], None] | None = None
    _replies: ReplyReader = field(default_factory=ReplyReader)
    # The reply clock (read_reply): when the wait on now ends, how long it is,
    # and the timer that checks it.
    _wait_ends: float | None = None
    _wait: float = 0.0
    _clock: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    @property
    def where(self) -> str:
        return f"{self.mx}[{self.address}]"

    @property
    def verified(self) -> bool:
        return self.verification is not Verification.NONE

    async def read_reply(self, wait: float | None = None) -> Reply:
        """The next reply, within ``wait`` seconds (the command timeout by default).

        Lines that have already arrived (the later replies of a pipelined
        group come in one segment with the first) are read at once; waiting
        for more is timed by the session's reply clock (:meth:`_begin_wait`).
        """
        # StreamReader has no public view of what it holds; without one, every
        # reply is waited for under the clock.
        arrived: bytearray | None = getattr(self.reader, "_buffer", None)
        while arrived and b"\n" in arrived:
            reply = self._replies.feed(await self.reader.readuntil(b"\n"))  # no wait
            if reply is not None:
                return reply
        self._begin_wait(wait or self.command_timeout)
        try:
            while True:
                line = await self.reader.readuntil(b"\n")
                reply = self._replies.feed(line)
                if reply is not None:
                    return reply
        finally:
            self._wait_ends = None

    def _begin_wait(self, wait: float) -> None:
        """Time the wait for a reply: a timer per wait (an ``asyncio.timeout`` for
        each reply, two a job) showed in the delivery profile, so a session keeps
        one and each wait only notes when it ends. The timer is set again only
        for a wait that ends before it fires; when it fires it looks whether the
        wait it was set for is still on, and sets itself for the one that is."""
        loop = asyncio.get_running_loop()
        ends = self._wait_ends = loop.time() + wait
        self._wait = wait
        if self._clock is None or self._clock.when() > ends:
            if self._clock is not None:
                self._clock.cancel()
            self._clock = loop.call_at(ends, self._clock_fired)

    def _clock_fired(self) -> None:
        self._clock = None
        ends = self._wait_ends
        if ends is None:
            return  # no wait is on: the next one sets the clock again
        loop = asyncio.get_running_loop()
        if loop.time() < ends:
            self._clock = loop.call_at(ends, self._clock_fired)
            return
        # What the pending read raises; the session is done with.
        self.reader.set_exception(TimeoutError(f"no reply within {self._wait:g}s"))

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
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        self.writer.close()
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()


async def open_session(
    *,
    mx: str,
    address: str,
    port: int,
    helo_name: str,
    tls_mode: TlsMode,
    tls_context: ssl.SSLContext | None,
    connect_timeout: float,
    command_timeout: float,
    login: Login | None = None,
    tlsa: dane.Tlsa | None = None,
    source: str = "",
) -> SmtpSession:
    """Connect (from ``source`` when given), EHLO, STARTTLS as ``tls_mode`` asks,
    AUTH when ``login`` is given.

    ``tls_context`` must verify when the mode is ``verify``; it is ignored
    for ``none``. For ``dane`` it must not verify (DANE authenticates, not
    the Web PKI) and ``tlsa`` holds the host's records. SNI names the MX
    host whatever the mode (RFC 7672 §8.1). ``source`` must be of the
    family of ``address``; a source that cannot be bound raises
    :class:`SourceUnusable`.
    """
    try:
        async with asyncio.timeout(connect_timeout):
            if source:
                sock = await _connect_from(source, address, port)
                reader, writer = await asyncio.open_connection(sock=sock, limit=READ_LIMIT)
            else:
                reader, writer = await asyncio.open_connection(address, port, limit=READ_LIMIT)
    except SourceUnusable:
        raise
    except (OSError, TimeoutError) as exc:
        where = f"{mx}[{address}]:{port}" + (f" from {source}" if source else "")
        raise HostUnusable(Reply(451, "4.4.1", f"connect to {where}: {_describe(exc)}")) from exc
    session = SmtpSession(reader, writer, mx, address, port, command_timeout, source)
    try:
        greeting = await session.read_reply()
        if greeting.code != 220:
            raise HostUnusable(_as_host_problem(greeting, f"{session.where} refused us"))
        await session.hello(helo_name)
        required = tls_mode.requires_tls
        if tls_mode is not TlsMode.NONE and tls_context is not None:
            if "STARTTLS" in session.extensions:
                await _start_tls(session, tls_context, helo_name, required=required, tlsa=tlsa)
            elif required:
                # RFC 8460 §4.3.1: starttls-not-supported, under DANE too
                # (its dane-required means "no TLSA records where we demand them").
                raise HostUnusable(
                    tlspolicy.not_offered(session.where, dane=tlsa is not None),
                    tls_failure=ResultType.STARTTLS_NOT_SUPPORTED,
                )
        if login is not None:
            await _authenticate(session, login)
    except HostUnusable:
        session.close()
        raise
    except _CONNECTION_TROUBLE as exc:
        session.close()
        what = "went silent" if isinstance(exc, TimeoutError) else "dropped the session"
        raise HostUnusable(
            Reply(451, "4.4.2", f"{session.where} {what}: {_describe(exc)}")
        ) from exc
    return session


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source`` (port chosen at connect).

    Raises OSError when the address is not this host's. Linux's
    IP_BIND_ADDRESS_NO_PORT leaves the port to ``connect``, which can then
    reuse one local port towards different destinations: without it every
    bound connection holds a port of its own, and a busy source address
    runs out of them (some 28,000) long before the 4-tuples would.
    """
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        no_port = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)
        if no_port is not None:
            with contextlib.suppress(OSError):  # an optimisation only
                sock.setsockopt(socket.IPPROTO_IP, no_port, 1)
        sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_from(source: str, address: str, port: int) -> socket.socket:
    try:
        sock = bound_socket(source)
    except OSError as exc:
        raise SourceUnusable(
            Reply(
                451,
                "4.3.5",
                f"cannot bind delivery.source_addresses' {source}: {_describe(exc)} "
                "(is the address still on this host?)",
            )
        ) from exc
    try:
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _start_tls(
    session: SmtpSession,
    context: ssl.SSLContext,
    helo_name: str,
    *,
    required: bool,
    tlsa: dane.Tlsa | None,
) -> None:
    reply = await session.command(b"STARTTLS\r\n")
    if reply.code != 220:
        if required:
            raise HostUnusable(
                tlspolicy.refused(session.where, reply, dane=tlsa is not None),
                tls_failure=ResultType.STARTTLS_NOT_SUPPORTED,
            )
        return  # offered, then refused, but still talking: carry on in clear
    try:
        async with asyncio.timeout(session.command_timeout):
            await session.writer.start_tls(context, server_hostname=session.mx or None)
    except (*_CONNECTION_TROUBLE, ValueError) as exc:
        session.close()
        if required:
            problem = tlspolicy.verification_failed(session.where, _tls_reason(exc))
        else:
            problem = Reply(
                451, "4.7.5", f"TLS handshake with {session.where} failed: {_describe(exc)}"
            )
        raise HostUnusable(problem, tls_failure=certificate_result(exc)) from exc
    session.tls = True
    tls = session.writer.get_extra_info("ssl_object")
    if isinstance(tls, ssl.SSLObject):
        session.tls_version = tls.version() or ""
        session.cipher = (tls.cipher() or ("",))[0]
    if tlsa is not None:
        _check_tlsa(session, peer_chain(tls), tlsa)
    elif context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname:
        session.verification = Verification.WEBPKI
    await session.hello(helo_name)  # RFC 3207: forget what was said in clear


def _check_tlsa(session: SmtpSession, chain: list[bytes], tlsa: dane.Tlsa) -> None:
    """DANE after the handshake: a certificate no usable record matches ends the session."""
    if not tlsa.usable:
        return  # RFC 7672 §2.2: TLS it must be, but there is nothing to check it with
    try:
        dane.authenticate(chain, tlsa, now=datetime.now(UTC))
    except dane.Mismatch as exc:
        session.close()
        raise HostUnusable(
            tlspolicy.verification_failed(session.where, str(exc)),
            tls_failure=ResultType.TLSA_INVALID,
        ) from None
    session.verification = Verification.DANE


def peer_chain(tls: object) -> list[bytes]:
    """The certificates the server sent, the leaf first, in DER.

    DANE-TA needs the server's whole chain, and the handshake ran with
    CERT_NONE (DANE authenticates, not OpenSSL), so there is no verified
    chain to ask for. Python 3.13 has ``SSLObject.get_unverified_chain()``;
    3.11 and 3.12 have it only on the private ``_sslobj``. Without either:
    the leaf alone, which is all DANE-EE needs.
    """
    if not isinstance(tls, ssl.SSLObject):
        return []
    try:
        public = getattr(tls, "get_unverified_chain", None)
        if public is not None:
            return [bytes(der) for der in public() or []]
        private = tls._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
        return [ssl.PEM_cert_to_DER_cert(cert.public_bytes()) for cert in private or []]
    except (AttributeError, TypeError, ValueError):
        leaf = tls.getpeercert(binary_form=True)
        return [leaf] if leaf else []


async def _authenticate(session: SmtpSession, login: Login) -> None:
    """AUTH PLAIN (or LOGIN) once the session is encrypted; a refusal makes the host unusable.

    A relay's credentials never cross a connection in clear: without TLS the
    host is unusable, as Postfix's default ``smtp_sasl_tls_security_options``.
    """
    if not session.tls:
        raise HostUnusable(
            Reply(451, "4.7.0", f"{session.where}: will not send credentials without TLS")
        )
    mechanisms = session.extensions.get("AUTH", "").upper().split()
    if "PLAIN" in mechanisms:
        token = f"\0{login.username}\0{login.password}".encode()
        reply = await session.command(b"AUTH PLAIN " + base64.b64encode(token) + b"\r\n")
    elif "LOGIN" in mechanisms:
        reply = await session.command(b"AUTH LOGIN\r\n")
        for secret in (login.username, login.password):
            if reply.code != 334:
                break
            reply = await session.command(base64.b64encode(secret.encode()) + b"\r\n")
    else:
        raise HostUnusable(
            Reply(451, "4.7.0", f"{session.where} offers neither AUTH PLAIN nor LOGIN")
        )
    if reply.code != 235:
        # Soft, as Postfix's smtp_sasl_auth_soft_bounce: fix the secret, the mail waits.
        refusal = f"{reply.code} {reply.status} {reply.text}".strip()
        raise HostUnusable(
            Reply(451, "4.7.0", f"{session.where} refused our credentials: {refusal}")
        )
    session.authenticated_as = login.username


async def send_transaction(session: SmtpSession, envelope: Envelope) -> dict[str, Reply]:
    """Run the transaction (``transaction.py`` decides; this moves bytes): a reply per recipient.

    Recipients a server refused with ``452`` (too many in one transaction) go
    out in a new transaction on the same session at once. Raises
    :class:`SessionLost` when a reused session turns out dead before the
    server answered anything.
    """
    results: dict[str, Reply] = {}
    pending = envelope
    first = True
    while True:
        transaction = Transaction(pending, session.extensions)
        await _drive(session, transaction, first=first)
        results.update(transaction.results)
        if not transaction.again:
            return results
        if not transaction.reusable or not session.alive:
            deferred = Reply(451, "4.5.3", "too many recipients; the session ended")
            return {**results, **dict.fromkeys(transaction.again, deferred)}
        pending = replace(pending, recipients=tuple(transaction.again))
        first = False


async def _drive(session: SmtpSession, transaction: Transaction, *, first: bool) -> None:
    out = transaction.start()
    if transaction.done:
        return  # decided before anything was sent (SIZE, SMTPUTF8, a bad address)
    try:
        session.writer.write(out)
        reply = await session.read_reply(_timeout(session, transaction))
    except _CONNECTION_TROUBLE as exc:
        session.close()
        if first:
            # Until the server answers MAIL, a broken reused session costs nothing.
            raise SessionLost(f"{session.where}: {_describe(exc)}") from exc
        _lost(session, transaction, exc)
        return
    session.transactions += 1
    try:
        while True:
            out = transaction.receive(reply)
            if out:
                session.writer.write(out)
            if transaction.done:
                break
            reply = await session.read_reply(_timeout(session, transaction))
    except _CONNECTION_TROUBLE as exc:
        _lost(session, transaction, exc)
        return
    session.last_used = time.monotonic()
    if not transaction.reusable:
        session.close()


def _timeout(session: SmtpSession, transaction: Transaction) -> float:
    """RFC 5321 §4.5.3.2: the final reply may take 10 minutes; the others our command timeout."""
    stage = transaction.waiting_for
    if stage is Stage.DATA_END:
        return max(stage.timeout, session.command_timeout)
    return session.command_timeout


def _lost(session: SmtpSession, transaction: Transaction, exc: BaseException) -> None:
    """The connection died mid-transaction: every open recipient is deferred.

    After the message went out the server may have it: like Postfix, we
    retry, which can make a duplicate (DESIGN.md, guarantee 2).
    """
    session.close()
    lost = Reply(451, "4.4.2", f"lost connection with {session.where}: {_describe(exc)}")
    for recipient in transaction.envelope.recipients:
        transaction.results.setdefault(recipient, lost)
    transaction.again = []


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


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or _describe(exc)
    return _describe(exc)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
