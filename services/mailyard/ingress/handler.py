"""The session's hooks: SMTP commands become policy calls, and the message one store.

The server (``server.py``) parses; this object answers its hooks with our
:class:`~mailyard.reply.Reply` values, and at the end of the message hands
it to ``store`` — which returns once the broker holds it. Only then does the
client get ``250``; any failure to store is a ``451 4.3.0`` and the client
keeps its copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiosmtpd.smtp import AuthResult, LoginPassword

from mailyard import ids, wire
from mailyard.broker import PublishError
from mailyard.ingress import metrics
from mailyard.ingress.params import MailFrom, RcptTo
from mailyard.ingress.policy import BROKER_DOWN, IngressPolicy
from mailyard.ingress.trace import protocol_name, received_header, submission_headers
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

Store = Callable[[pb.AcceptedMessage], Awaitable[None]]

STORE_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message, try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")

# A bounded label for every refusal, from its enhanced status code.
_REASONS = {
    "5.7.1": "relay_denied",
    "5.1.3": "bad_recipient",
    "5.1.7": "bad_sender",
    "5.1.2": "address_literal",
    "4.5.3": "too_many_recipients",
    "5.4.6": "loop",
    "5.6.0": "bare_newline",
    "5.6.7": "non_ascii_address",
    "4.3.0": "broker_unavailable",
    "5.5.4": "bad_parameter",
}


class User(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def message_class(self) -> str | None: ...

    def may_send_from(self, domain: str) -> bool: ...


class Users(Protocol):
    def authenticate(self, login: bytes, password: bytes) -> User | None: ...


def client_address(session: Any) -> str:
    """The client's IP: from the PROXY header when a load balancer sent one."""
    proxy = session.proxy_data
    if proxy is not None and proxy.src_addr is not None:
        return str(proxy.src_addr)
    return str(session.peer[0])


def tls_comment(session: Any) -> str:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384, 256 bits``, or "" in clear text."""
    ssl_object = (session.ssl or {}).get("ssl_object") if session.ssl is not None else None
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher()
    if not cipher:
        return str(ssl_object.version() or "TLS")
    name, version, bits = cipher
    return f"{ssl_object.version() or version} with cipher {name}, {bits} bits"


def user_of(session: Any) -> User | None:
    user = getattr(session, "auth_data", None) if session.authenticated else None
    return user if user is not None and hasattr(user, "may_send_from") else None


class IngressHandler:
    def __init__(
        self,
        policy: IngressPolicy,
        store: Store,
        *,
        hostname: str,
        broker_ready: Callable[[], bool],
        users: Users | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.hostname = hostname
        self.broker_ready = broker_ready
        self.users = users

    # --- aiosmtpd's hooks ----------------------------------------------------

    async def handle_PROXY(self, server: Any, session: Any, envelope: Any, proxy: Any) -> bool:
        """Accept a PROXY header only from a trusted load balancer, and only a valid one."""
        trusted = self.policy.is_trusted_proxy(session.peer[0])
        if not trusted or not proxy.valid or proxy.src_addr is None:
            metrics.REJECTED.labels("connect", "untrusted_proxy").inc()
            log.warning(
                "refused a PROXY header",
                extra={"peer": session.peer[0], "trusted": trusted, "valid": bool(proxy.valid)},
            )
            return False
        return True

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return responses

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """AUTH PLAIN and LOGIN against the users file; never a password in a log."""
        if self.users is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = self.users.authenticate(auth_data.login, auth_data.password)
        login = auth_data.login.decode("utf-8", "replace")[:100]
        if user is None:
            log.warning(
                "AUTH failed",
                extra={"client": client_address(session), "login": login, "mechanism": mechanism},
            )
            return AuthResult(success=False, handled=False)
        log.info(
            "authenticated",
            extra={"client": client_address(session), "login": user.name, "mechanism": mechanism},
        )
        return AuthResult(success=True, handled=False, auth_data=user)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, mail: MailFrom) -> Reply:
        if not self.broker_ready():
            # Say so now rather than after the client has uploaded the message.
            return self._refuse("mail", BROKER_DOWN)
        user = user_of(session)
        reply = self.policy.sender(
            mail.address, allowed=user.may_send_from if user is not None else None
        )
        if not reply.is_positive:
            if reply.status == "5.7.1":
                log.warning(
                    "sender refused for this user",
                    extra={"client": client_address(session), "login": user and user.name,
                           "from": mail.address},
                )  # fmt: skip
                return self._refuse("mail", reply, reason="sender_not_allowed")
            return self._refuse("mail", reply)
        return reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, rcpt: RcptTo) -> Reply:
        address = self.policy.mailbox(rcpt.address)
        client = client_address(session)
        reply = self.policy.recipient(
            address,
            may_relay=self.policy.may_relay(client, authenticated=bool(session.authenticated)),
            accepted_so_far=len(envelope.rcpt_tos),
        )
        if not reply.is_positive:
            if reply.status == "5.7.1":
                log.warning("relay denied", extra={"client": client, "recipient": address})
            return self._refuse("rcpt", reply)
        envelope.rcpt_tos.append(self.policy.deliver_to(address))
        server.transaction.rcpts.append(rcpt)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> Reply:
        content: bytes = envelope.original_content
        client_ip = client_address(session)
        authenticated = bool(session.authenticated)
        refusal = self.policy.content(
            content, may_relay=self.policy.may_relay(client_ip, authenticated=authenticated)
        )
        if refusal is not None:
            return self._refuse("data", refusal)
        message_id = ids.new_message_id()
        received_at = datetime.now(UTC)
        if getattr(server, "role", "mx") in ("submission", "submissions"):
            content = submission_headers(
                content, hostname=self.hostname, message_id=message_id, when=received_at
            )
        tls = tls_comment(session)
        trace = received_header(
            helo=session.host_name or "unknown",
            client_ip=client_ip,
            hostname=self.hostname,
            protocol=protocol_name(
                extended=session.extended_smtp, tls=bool(tls), authenticated=authenticated
            ),
            message_id=message_id,
            recipients=envelope.rcpt_tos,
            when=received_at,
            tls=tls,
        )
        user = user_of(session)
        transaction = server.transaction
        message = pb.AcceptedMessage(
            message_id=message_id,
            mail_from=transaction.mail.address,
            recipients=envelope.rcpt_tos,
            content=trace + content,
            received_at=wire.timestamp(received_at),
            client=pb.Client(
                address=client_ip,
                helo=session.host_name or "",
                tls=bool(tls),
                login=user.name if user is not None else "",
            ),
            origin=pb.ORIGIN_SMTP,
            options=_options(transaction.mail),
            recipient_options=_recipient_options(transaction.rcpts),
            # The users file's class wins; without one, the queue decides.
            mail_class=(user.message_class or "") if user is not None else "",
        )
        started = time.perf_counter()
        try:
            await self.store(message)
        except PublishError as exc:
            log.warning(
                "could not store a message; told the client to retry",
                extra={"message_id": message_id, "client": client_ip, "error": str(exc)},
            )
            return self._refuse("data", STORE_FAILED)
        metrics.STORE_SECONDS.observe(time.perf_counter() - started)
        metrics.ACCEPTED.inc()
        metrics.ACCEPTED_RECIPIENTS.inc(len(envelope.rcpt_tos))
        metrics.ACCEPTED_BYTES.inc(len(message.content))
        metrics.MESSAGE_BYTES.observe(len(message.content))
        log.info(
            "accepted",
            extra={
                "message_id": message_id,
                "client": client_ip,
                "login": message.client.login or None,
                "from": message.mail_from,
                "nrcpt": len(envelope.rcpt_tos),
                "size": len(message.content),
                "tls": tls or None,
            },
        )
        return Reply(250, "2.0.0", f"Ok: queued as {message_id}")

    async def handle_exception(self, error: Exception) -> str:
        """A bug or an unexpected library error: never a 5xx, never a crash."""
        log.error("SMTP session error", exc_info=error)
        return self._refuse("session", INTERNAL_ERROR, reason="internal_error").render()

    def _refuse(self, stage: str, reply: Reply, *, reason: str | None = None) -> Reply:
        label = reason or _REASONS.get(reply.status, reply.status_class)
        metrics.REJECTED.labels(stage, label).inc()
        return reply


def _options(mail: MailFrom) -> pb.MessageOptions:
    return pb.MessageOptions(
        ret=mail.ret, envid=mail.envid, smtputf8=mail.smtputf8, eight_bit=mail.eight_bit
    )


def _recipient_options(rcpts: list[RcptTo]) -> list[pb.RecipientOptions]:
    if not any(r.notify or r.orcpt for r in rcpts):
        return []
    return [pb.RecipientOptions(notify=r.notify, orcpt=r.orcpt) for r in rcpts]
