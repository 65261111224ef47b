"""The SMTP session: aiosmtpd's ``SMTP``, with what it has no hook for.

aiosmtpd parses, keeps session state, does STARTTLS and AUTH. It has no
hooks for what a server on port 25 of the internet must also do, so this
subclass replaces these parts of it, and only these (each says why):

- the command loop (``_handle_client``): a client that talks before the
  greeting, pipelines before EHLO advertised PIPELINING, ends commands with
  a bare LF, sends junk commands without end or goes idle is told so and
  disconnected (Postfix's smtpd and postscreen are the reference); every
  received line restarts the idle timer; implicit TLS (port 465) is the
  STARTTLS machinery run before the greeting, so that AUTH is offered there
  at once (aiosmtpd hides it, its issue #281) and the certificate is the
  current one;
- MAIL and RCPT: aiosmtpd upper-cases parameters (ENVID and ORCPT must be
  kept as given) and knows none of DSN's; ``params.py`` reads them;
- DATA: aiosmtpd buffers up to the size limit per session; ``upload.py``
  holds every session to one memory budget, the line and header limits, NUL
  and a minimum data rate; content sent before the 354 is refused;
- BDAT (RFC 3030 CHUNKING), which aiosmtpd does not have;
- replies: the enhanced status code (RFC 2034) aiosmtpd leaves out of its
  own, ASCII only, and held while pipelined commands wait (one write).

Everything else — parsing of the other commands, STARTTLS's state reset
(RFC 3207 §4.2: buffered input is dropped, the session starts anew), AUTH
PLAIN and LOGIN — stays aiosmtpd's.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import binascii
import contextlib
import logging
import ssl
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, AnyStr, cast

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, TLSSetupException

from mailyard.ingress import metrics, transfer
from mailyard.ingress.limits import ClientConnections, DataMemory
from mailyard.ingress.params import (
    Extensions,
    MailFrom,
    ParamError,
    RcptTo,
    parse_mail,
    parse_rcpt,
)
from mailyard.ingress.replies import with_enhanced_code
from mailyard.ingress.sessions import SessionCounter
from mailyard.ingress.upload import Upload
from mailyard.reply import Reply

log = logging.getLogger(__name__)

# Octets a command line may have (RFC 5321 §4.5.3.1.4), plus what the
# extensions we advertise add to MAIL and RCPT (RFC 1870, 6152, 6531, 3461, 4954).
COMMAND_LINE = 512
MAIL_EXTRA = 26 + 14 + 10 + 9 + 106 + 500
RCPT_EXTRA = 500
_JUNK = frozenset({"NOOP", "RSET", "VRFY", "HELP", "EXPN"})
_DATA_READ = 64 * 1024


@dataclass
class Transaction:
    """What MAIL and RCPT said, typed (aiosmtpd's envelope keeps strings)."""

    mail: MailFrom | None = None
    rcpts: list[RcptTo] = field(default_factory=list)


@dataclass(frozen=True)
class SessionPolicy:
    """What a listener's sessions are allowed and held to."""

    role: str  # mx | submission | submissions
    idle_timeout: float
    tls_handshake_timeout: float
    greeting_delay: float
    junk_commands: int
    min_data_rate: int
    max_message_size: int
    header_size: int
    strip_nul: bool
    trusted: Callable[[str], bool]  # in relay_networks: exempt from per-client limits
    tls_context: Callable[[], ssl.SSLContext | None]
    auth_offered: bool
    locked_out: Callable[[str], bool]
    auth_failed: Callable[[str], bool]  # count a failure; True when the address is now locked out


class MailyardSMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        sessions: SessionCounter,
        policy: SessionPolicy,
        clients: ClientConnections,
        memory: DataMemory,
        **kwargs: Any,
    ) -> None:
        self._policy = policy
        super().__init__(
            handler,
            timeout=policy.idle_timeout,
            enable_SMTPUTF8=True,
            data_size_limit=policy.max_message_size,
            auth_required=policy.role in ("submission", "submissions"),
            **kwargs,
        )
        # Implicit TLS is the STARTTLS machinery run before the greeting, so
        # aiosmtpd's "AUTH only after TLS" holds on every listener as is.
        self._auth_require_tls = True
        self._sessions = sessions
        self._clients = clients
        self._memory = memory
        self._held: list[bytes] = []
        self._client_ip = ""
        self._admitted = False
        self._junk = 0
        self.transaction = Transaction()
        self._last_input = 0.0  # loop time of the last command line, or line of an upload
        self._bdat: Upload | None = None
        self._bdat_started = 0.0
        self._close_after_reply = False

    @property
    def role(self) -> str:
        return self._policy.role

    # aiosmtpd reads self.tls_context (EHLO, STARTTLS): the current certificate.
    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self._policy.tls_context() if self._policy.role != "submissions" else None

    @tls_context.setter
    def tls_context(self, value: ssl.SSLContext | None) -> None:
        """aiosmtpd's constructor assigns it; ours comes from the policy."""

    # --- replies --------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        """Send a reply — or hold it while the client's next command is already here.

        RFC 2920 (PIPELINING): a client may send MAIL, RCPT… and DATA in one
        go. Like Postfix's smtpd, we hold replies while more commands wait in
        the input buffer and send them together once it is empty, so a client
        waiting for an answer always gets it at once. Replies are ASCII: a
        character outside it in a text becomes "?", never an encoding error.
        """
        line = with_enhanced_code(status) if isinstance(status, str) else status.decode()
        self._held.append(line.encode("ascii", "replace") + b"\r\n")
        if self._more_input_waiting() and not self._close_after_reply:
            return
        held, self._held = b"".join(self._held), []
        await super().push(held[:-2])  # aiosmtpd appends the last CRLF itself

    async def say(self, reply: Reply) -> None:
        await self.push(reply.render())

    async def hang_up(self, reply: Reply, reason: str) -> None:
        """The last reply of a session that is being ended (a ``421`` or ``554``)."""
        metrics.LIMIT_HITS.labels(reason).inc()
        log.info("ended a session", extra={"client": self._client_ip, "reason": reason})
        self._close_after_reply = True
        await self.say(reply)
        if self.transport is not None:
            self.transport.close()

    def _more_input_waiting(self) -> bool:
        # StreamReader has no public "bytes buffered" query; its buffer is a
        # plain attribute that has not changed in years. Without it, every
        # reply is simply sent at once (and pipelining goes undetected).
        buffered: bytearray | None = getattr(self._reader, "_buffer", None)
        return buffered is not None and b"\n" in buffered

    def _buffered(self) -> bytes:
        buffered: bytearray | None = getattr(self._reader, "_buffer", None)
        return bytes(buffered) if buffered else b""

    def _take_buffered(self) -> bytes:
        buffered: bytearray | None = getattr(self._reader, "_buffer", None)
        if not buffered:
            return b""
        data = bytes(buffered)
        buffered.clear()
        return data

    # --- connection -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:
            self._sessions.opened(self)
            super().connection_made(transport)
            return
        # The TLS handshake is done: aiosmtpd starts a new session (RFC 3207
        # §4.2), which must keep where the client really is (PROXY protocol).
        proxy = self.session.proxy_data if self.session else None
        super().connection_made(transport)
        if self.session is not None:
            self.session.proxy_data = proxy

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.closed(self)
        if self._admitted:
            self._clients.release(self._client_ip)
            self._admitted = False
        if self._bdat is not None:
            self._bdat.release()
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        """aiosmtpd closes an idle session without a word; RFC 5321 §4.1.1.5 wants a 421.

        Every command line, and every line of an upload, marks the session
        active (a timestamp: re-arming a timer per line costs more than the
        line, and aiosmtpd's per command showed in the ingress profile); the
        timer, when it fires, first checks whether input came meanwhile.
        """
        quiet = self.loop.time() - self._last_input
        if quiet < self._policy.idle_timeout and self.transport is not None:
            self._reset_timeout(self._policy.idle_timeout - quiet)
            return
        metrics.LIMIT_HITS.labels("idle_timeout").inc()
        if self.transport is not None and not self.transport.is_closing():
            cast(asyncio.WriteTransport, self.transport).write(
                b"421 4.4.2 Idle for too long, closing connection\r\n"
            )
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def _start_tls(self, *, implicit: bool = False) -> bool:
        """The TLS handshake under a deadline, STARTTLS or implicit; False if it failed.

        What is already in the input buffer is the start of the handshake on
        an implicit-TLS port (the client speaks first there): it is handed to
        the TLS layer. After STARTTLS it is whatever the client pipelined in
        clear, which must have no effect (RFC 3207 §4.2): it was dropped.
        """
        context = self._policy.tls_context()
        if context is None:
            return False
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(
            self.loop, self, context, waiter, server_side=True
        )
        self._original_transport = self.transport
        assert self._original_transport is not None
        early = self._take_buffered() if implicit else b""
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        if early:
            buffer = self._tls_protocol.get_buffer(len(early))
            buffer[: len(early)] = early
            self._tls_protocol.buffer_updated(len(early))
        try:
            async with asyncio.timeout(self._policy.tls_handshake_timeout):
                await waiter
        except TimeoutError:
            metrics.LIMIT_HITS.labels("tls_handshake_timeout").inc()
            metrics.TLS_FAILURES.labels(self._policy.role).inc()
            self._original_transport.close()
            return False
        except Exception:
            metrics.TLS_FAILURES.labels(self._policy.role).inc()
            self._original_transport.close()
            return False
        ssl_object = (self.session.ssl or {}).get("ssl_object") if self.session else None
        version = ssl_object.version() if ssl_object is not None else "unknown"
        metrics.TLS_SESSIONS.labels(self._policy.role, version or "unknown").inc()
        return True

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        if self.tls_context is None or self._tls_protocol is not None:
            await self.push("454 4.7.0 TLS not available")
            return
        # Commands pipelined behind STARTTLS (in clear, so anyone on the path
        # could have put them there) are dropped unread: CVE-2024-34083.
        if self._take_buffered():
            log.info(
                "dropped what was pipelined behind STARTTLS", extra={"client": self._client_ip}
            )
        await self.push("220 2.0.0 Ready to start TLS")
        if not await self._start_tls():
            raise TLSSetupException("the TLS handshake failed or timed out")

    # --- the command loop ---------------------------------------------------------

    async def _handle_client(self) -> None:
        assert self.session is not None
        if self._proxy_timeout is not None and not await self._read_proxy_header():
            return
        self._client_ip = self._client_address()
        if not await self._admit():
            return
        if self._policy.role == "submissions" and not await self._start_tls(implicit=True):
            if self.transport is not None:
                self.transport.close()
            return
        if not await self._greet():
            return
        while self.transport is not None and not self.transport.is_closing():
            try:
                line = await self._read_command()
                if line is None:
                    continue
                await self._dispatch(line)
            except (asyncio.CancelledError, ConnectionResetError):
                self._writer.close()
                raise
            except TLSSetupException:
                if self.transport is not None:
                    self.transport.close()
                return
            except Exception as error:
                await self.push(await self.handle_exception(error))

    async def _read_proxy_header(self) -> bool:
        """aiosmtpd's PROXY handling, as its own loop does it."""
        assert self.session is not None
        self._reset_timeout(self._proxy_timeout)
        self.session.proxy_data = await get_proxy(self._reader)
        status: Any = False
        if self.session.proxy_data:
            status = await self._call_handler_hook("PROXY", self.session.proxy_data)
        if not status or status is not True:
            if self.transport is not None:
                self.transport.close()
            return False
        self._reset_timeout()
        return True

    def _client_address(self) -> str:
        assert self.session is not None
        proxy = self.session.proxy_data
        if proxy is not None and proxy.src_addr is not None:
            return str(proxy.src_addr)
        return str(self.session.peer[0]) if self.session.peer else ""

    async def _admit(self) -> bool:
        if self._policy.trusted(self._client_ip):
            return True
        refused = self._clients.admit(self._client_ip)
        if refused is None:
            self._admitted = True
            return True
        await self.hang_up(
            Reply(421, "4.7.0", "Too many connections from your address, try again later"), refused
        )
        return False

    async def _greet(self) -> bool:
        """Postscreen's pregreet test on mx listeners: a client that talks first is a bot."""
        delay = self._policy.greeting_delay
        if self._policy.role == "mx" and delay and not self._policy.trusted(self._client_ip):
            await asyncio.sleep(delay)
            if self._buffered():
                await self.hang_up(
                    Reply(554, "5.5.0", "Protocol error: you talked before the greeting"),
                    "early_talker",
                )
                return False
        await self.push(f"220 {self.hostname} {self.__ident__}")
        return True

    async def _read_command(self) -> bytes | None:
        """One command line, or None when it was answered here (too long, bare LF)."""
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            await self._reader.read(error.consumed)
            with contextlib.suppress(asyncio.LimitOverrunError):
                await self._reader.readuntil(b"\n")
            await self.push("500 5.5.2 Command line too long")
            return None
        except asyncio.IncompleteReadError:
            if self.transport is not None:
                self.transport.close()
            return None
        self.restart_idle_timer()
        if not line.endswith(b"\r\n"):
            reply = Reply(500, "5.5.2", "Command lines must end with CRLF, not a bare LF")
            if self._policy.role == "mx":
                await self.hang_up(reply, "bare_newline")
            else:
                metrics.LIMIT_HITS.labels("bare_newline").inc()
                await self.say(reply)
            return None
        if (
            self.session is not None
            and not self.session.extended_smtp
            and self._more_input_waiting()
        ):
            # RFC 2920: only after EHLO advertised PIPELINING may a client stop
            # waiting for each reply.
            await self.hang_up(
                Reply(554, "5.5.0", "Protocol error: commands pipelined before EHLO"),
                "pipelining_before_ehlo",
            )
            return None
        return line[:-2]

    async def _dispatch(self, line: bytes) -> None:
        assert self.session is not None
        if not line:
            await self.push("500 5.5.2 Error: bad syntax")
            return
        command_bytes, _, arg_bytes = line.partition(b" ")
        try:
            command = command_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            await self.push("500 5.5.2 Error: bad syntax")
            return
        limit = COMMAND_LINE - 2 + {"MAIL": MAIL_EXTRA, "RCPT": RCPT_EXTRA}.get(command, 0)
        if command == "AUTH":
            limit = 12288  # RFC 4954 §4: an initial response may be long
        if len(line) > limit:
            await self.push("500 5.5.2 Command line too long")
            return
        arg: str | None = arg_bytes.strip().decode("utf-8", "surrogateescape") or None
        method = self._smtp_methods.get(command)
        if method is None or command in _JUNK:
            self._junk += 1
            if self._junk > self._policy.junk_commands:
                await self.hang_up(
                    Reply(421, "4.7.0", "Too many commands that do not send mail, closing"),
                    "junk_commands",
                )
                return
        if method is None:
            await self.push(f'500 5.5.2 Error: command "{command[:20]}" not recognized')
            return
        if self._bdat is not None and command not in ("BDAT", "RSET", "QUIT", "NOOP"):
            await self.push("503 5.5.1 Error: BDAT transaction in progress; send BDAT or RSET")
            return
        await method(arg)

    # --- EHLO, MAIL, RCPT ------------------------------------------------------------

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        assert self.session is not None
        self.session.extended_smtp = True
        secure = self._tls_protocol is not None
        response = [
            f"250-{self.hostname}",
            f"250-SIZE {self.data_size_limit}",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-PIPELINING",
            "250-CHUNKING",
            "250-DSN",
            "250-ENHANCEDSTATUSCODES",
        ]
        if self.tls_context is not None and not secure:
            response.append("250-STARTTLS")
        if self._policy.auth_offered and secure:
            response.append("250-AUTH " + " ".join(sorted(self._auth_methods)))
        response.append("250 HELP")
        response = await self._call_handler_hook("EHLO", hostname, response)
        for line in response:
            await self.push(line)

    def _extensions(self) -> Extensions:
        return Extensions(
            size_limit=self.data_size_limit,
            auth=self._policy.auth_offered and self._tls_protocol is not None,
        )

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        assert self.envelope is not None
        assert self.session is not None
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        try:
            mail = parse_mail(arg or "", self._extensions())
        except ParamError as exc:
            await self.say(exc.reply)
            return
        if not self.session.extended_smtp and mail.parameters:
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address> (parameters need EHLO)")
            return
        reply: Reply = await self._call_handler_hook("MAIL", mail)
        if reply.is_positive:
            self.envelope.mail_from = mail.address or "<>"
            self.transaction = Transaction(mail)
        await self.say(reply)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        assert self.envelope is not None
        mail = self.transaction.mail
        if not self.envelope.mail_from or mail is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        try:
            rcpt = parse_rcpt(arg or "", self._extensions(), smtputf8=mail.smtputf8)
        except ParamError as exc:
            await self.say(exc.reply)
            return
        reply: Reply = await self._call_handler_hook("RCPT", rcpt)
        await self.say(reply)

    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's AUTH, with the lock-out of an address that keeps guessing."""
        if self._policy.locked_out(self._client_ip):
            metrics.AUTH.labels(_mechanism(arg), "locked_out").inc()
            await self.hang_up(
                Reply(421, "4.7.0", "Too many failed AUTH attempts, try again later"),
                "auth_failures",
            )
            return
        await super().smtp_AUTH(arg)

    # aiosmtpd's PLAIN and LOGIN call a synchronous authenticator; a password
    # check is one scrypt (tens of ms of CPU), which must not stop every other
    # session: these two do aiosmtpd's decoding and check the password in a
    # thread.

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00") if isinstance(blob, bytes) else []
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check("PLAIN", LoginPassword(parts[1], parts[2]))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False)
        if not isinstance(login, bytes) or not isinstance(password, bytes):
            return AuthResult(success=False)
        return await self._check("LOGIN", LoginPassword(login, password))

    async def _check(self, mechanism: str, credentials: LoginPassword) -> AuthResult:
        authenticator = self._authenticator
        if authenticator is None or self.session is None or self.envelope is None:
            return AuthResult(success=False, handled=False)
        result = await asyncio.to_thread(
            authenticator, self, self.session, self.envelope, mechanism, credentials
        )
        metrics.AUTH.labels(mechanism, "success" if result.success else "failure").inc()
        if not result.success and self._policy.auth_failed(self._client_ip):
            # aiosmtpd sends this message; the session ends with it.
            self._close_after_reply = True
            self.loop.call_soon(self._close_now)
            metrics.LIMIT_HITS.labels("auth_failures").inc()
            return AuthResult(
                success=False,
                handled=False,
                message="421 4.7.0 Too many failed AUTH attempts, try again later",
            )
        return result

    def _close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- DATA and BDAT ---------------------------------------------------------------

    def _upload(self) -> Upload:
        return Upload(
            max_size=self._policy.max_message_size,
            header_limit=self._policy.header_size,
            strip_nul=self._policy.strip_nul,
            memory=self._memory,
        )

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if self._memory.exhausted:
            metrics.LIMIT_HITS.labels("data_memory").inc()
            await self.push("452 4.3.1 Insufficient system storage, try again later")
            return
        if self._buffered():
            # RFC 2920 §3.1: DATA ends a group; the message waits for the 354.
            await self.hang_up(
                Reply(554, "5.5.0", "Protocol error: message content sent before the 354"),
                "data_before_354",
            )
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        upload = self._upload()
        try:
            if await self._ended(await transfer.read_lines(self, upload, self.loop.time())):
                return
            await self._finish(upload)
        finally:
            upload.release()

    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030 CHUNKING: ``BDAT <size> [LAST]``, the size's octets follow at once.

        The chunk is always read (or the session would lose its place in the
        stream), even when the command is refused.
        """
        words = (arg or "").split()
        if (
            not 1 <= len(words) <= 2
            or not words[0].isdigit()
            or len(words[0]) > 18
            or (len(words) == 2 and words[1].upper() != "LAST")
        ):
            await self.hang_up(
                Reply(501, "5.5.4", "Syntax: BDAT <size> [LAST]; closing (cannot find the data)"),
                "bad_bdat",
            )
            return
        size, last = int(words[0]), len(words) == 2
        assert self.envelope is not None
        refusal: Reply | None = None
        if not self.session or not self.session.host_name:
            refusal = Reply(503, "5.5.1", "Error: send EHLO first")
        elif self._auth_required and not self.session.authenticated:
            refusal = Reply(530, "5.7.0", "Authentication required")
        elif not self.envelope.rcpt_tos:
            refusal = Reply(503, "5.5.1", "Error: need RCPT command")
        if refusal is not None:
            await transfer.skip(self, size)
            await self.say(refusal)
            return
        if self._bdat is None:
            if self._memory.exhausted:
                await transfer.skip(self, size)
                metrics.LIMIT_HITS.labels("data_memory").inc()
                await self.push("452 4.3.1 Insufficient system storage, try again later")
                return
            self._bdat = self._upload()
            self._bdat_started = self.loop.time()
        upload = self._bdat
        if await self._ended(await transfer.read_chunk(self, upload, size, self._bdat_started)):
            return
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        self._bdat = None
        try:
            await self._finish(upload)
        finally:
            upload.release()

    # transfer.Stream, for the functions that read a message off the socket.
    @property
    def reader(self) -> asyncio.StreamReader:
        return self._reader

    def restart_idle_timer(self) -> None:
        self._last_input = self.loop.time()

    def too_slow(self, started: float, size: int) -> bool:
        return transfer.too_slow(
            self._last_input - started,
            size,
            idle_timeout=self._policy.idle_timeout,
            min_rate=self._policy.min_data_rate,
        )

    async def _ended(self, status: transfer.Status) -> bool:
        """True when the upload ended the session (the peer left, or was too slow)."""
        if status is transfer.Status.TOO_SLOW:
            await self.hang_up(
                Reply(421, "4.4.2", "Data arriving too slowly, closing"), "min_data_rate"
            )
        return status is not transfer.Status.DONE

    async def _finish(self, upload: Upload) -> None:
        """End of the message: the refusal found on the way, or the handler's verdict."""
        assert self.envelope is not None
        if upload.problem is not None:
            metrics.LIMIT_HITS.labels(upload.reason).inc()
            metrics.REJECTED.labels("data", upload.reason).inc()
            self._set_post_data_state()
            await self.say(upload.problem)
            return
        content = upload.content()
        self.envelope.content = self.envelope.original_content = content
        upload.release()  # the handler's message now holds the bytes
        reply: Reply = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.say(reply)

    def _set_post_data_state(self) -> None:
        """A new transaction: aiosmtpd's envelope and our typed view of it."""
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        self.transaction = Transaction()

    async def smtp_RSET(self, arg: str) -> None:
        if self._bdat is not None:
            self._bdat.release()
            self._bdat = None
        await super().smtp_RSET(arg)


def _mechanism(arg: str | None) -> str:
    mechanism = (arg or "").split(" ")[0].upper()
    return mechanism if mechanism in ("PLAIN", "LOGIN") else "PLAIN"
