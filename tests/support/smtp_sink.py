"""Real SMTP servers on loopback that tests control (aiosmtpd).

One ``Sink`` listens on several loopback addresses at one port (delivery
connects to ``delivery.port`` on whatever address DNS gives it), records
every message it accepts, and answers RCPT and DATA as the test scripts it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    host: str  # the loopback address the message arrived on
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    tls: bool
    at: float
    login: str = ""  # the AUTH user, when the sink asks for AUTH
    peer: str = ""  # the address the client connected from
    ehlo: str = ""  # the name it gave in EHLO (or HELO)


@dataclass
class Script:
    """Scripted answers. Each rule maps a recipient to the replies it gets, in turn."""

    rcpt: dict[str, list[str]] = field(default_factory=dict)
    rcpt_always: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    data_delay: float = 0.0
    # Per listening address (a destination of its own): overrides data_delay there.
    data_delay_by_host: dict[str, float] = field(default_factory=dict)


class _Handler:
    def __init__(self, sink: Sink, host: str) -> None:
        self.sink = sink
        self.host = host

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink._rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        script = self.sink.script
        delay = script.data_delay_by_host.get(self.host, script.data_delay)
        if delay:
            await asyncio.sleep(delay)
        if script.data_reply is not None:
            return script.data_reply
        self.sink._record(
            Received(
                host=self.host,
                mail_from=envelope.mail_from,
                recipients=tuple(envelope.rcpt_tos),
                content=envelope.original_content,
                tls=session.ssl is not None,
                at=time.monotonic(),
                login=(session.auth_data or b"").decode(),
                peer=session.peer[0] if session.peer else "",
                ehlo=session.host_name or "",
            )
        )
        return "250 2.0.0 OK queued"


class Sink:
    def __init__(
        self,
        hosts: list[str],
        port: int,
        tls_context: ssl.SSLContext | None = None,
        logins: dict[str, str] | None = None,
    ):
        """With ``logins`` (user → password), AUTH is required, and only after STARTTLS."""
        self.hosts = hosts
        self.port = port
        self.logins = logins
        self.auth_attempts: list[str] = []
        self.script = Script()
        self.messages: list[Received] = []
        self.rcpt_attempts: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.tls_context = tls_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self.sessions_open = 0
        self.sessions_peak = 0
        self.session_log: list[tuple[float, int]] = []  # (monotonic time, open after it)

    def start(self) -> Sink:
        self._thread.start()
        try:
            for host in self.hosts:
                future = asyncio.run_coroutine_threadsafe(self._listen(host), self._loop)
                self._servers.append(future.result(10))
        except BaseException:
            self.stop()
            raise
        return self

    async def _listen(self, host: str) -> asyncio.Server:
        handler = _Handler(self, host)
        sink = self

        class CountedSMTP(SMTP):
            """Counts the sessions open at once, as a receiver's connection limit does."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sink._session_change(+1)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                sink._session_change(-1)

        return await self._loop.create_server(
            lambda: CountedSMTP(
                handler,
                hostname=f"sink-{host}",
                tls_context=self.tls_context,
                data_size_limit=64 * 1024 * 1024,
                enable_SMTPUTF8=True,
                **self._auth_options(),
            ),
            host,
            self.port,
            reuse_address=True,
        )

    def _auth_options(self) -> dict:
        if self.logins is None:
            return {}
        return {
            "authenticator": self._authenticate,
            "auth_required": True,
            "auth_require_tls": True,
        }

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        with self._lock:
            self.auth_attempts.append(user)
        good = self.logins is not None and self.logins.get(user) == password
        return AuthResult(success=good, auth_data=user.encode() if good else None)

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _session_change(self, change: int) -> None:
        with self._lock:
            self.sessions_open += change
            self.sessions_peak = max(self.sessions_peak, self.sessions_open)
            self.session_log.append((time.monotonic(), self.sessions_open))

    def peak_sessions(self, since: float, until: float | None = None) -> int:
        """The most sessions that were open at once between two monotonic times."""
        with self._lock:
            log = list(self.session_log)
        level = 0
        peak = 0
        for moment, count in log:
            if until is not None and moment > until:
                break
            if moment <= since:
                level = count
                peak = count
            else:
                peak = max(peak, count)
        return max(peak, level)

    def _rcpt_reply(self, address: str) -> str | None:
        with self._lock:
            self.rcpt_attempts[address] += 1
            queued = self.script.rcpt.get(address)
            if queued:
                return queued.pop(0)
            return self.script.rcpt_always.get(address)

    def _record(self, message: Received) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self, predicate: Callable[[Received], bool] = lambda _: True) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if predicate(m)]

    def deliveries(self) -> dict[str, int]:
        """How many copies each recipient got."""
        counts: dict[str, int] = defaultdict(int)
        for message in self.received():
            for recipient in message.recipients:
                counts[recipient] += 1
        return dict(counts)

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float, what: str
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.received()
            if predicate(messages):
                return messages
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; have {len(self.received())} messages"
        )
