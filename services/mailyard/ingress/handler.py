"""The aiosmtpd handler: turns SMTP commands into policy calls and one publish.

aiosmtpd parses the protocol; this object only answers its ``handle_*``
hooks with our :class:`~mailyard.reply.Reply` values, and at end of DATA
hands the message to ``store`` — which returns once RabbitMQ has confirmed
it. Only then does the client get ``250``; any failure to store is a
``451 4.3.0`` and the client keeps its copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from mailyard import ids, wire
from mailyard.broker import PublishError
from mailyard.ingress import metrics
from mailyard.ingress.policy import BROKER_DOWN, NULL_SENDER, IngressPolicy
from mailyard.ingress.trace import received_header
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

Store = Callable[[pb.AcceptedMessage], Awaitable[None]]

STORE_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message, try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")

# A bounded label for every refusal, from its enhanced status code.
_REASONS = {
    "5.7.1": "relay_denied",
    "5.1.3": "bad_recipient",
    "5.1.7": "bad_sender",
    "5.1.2": "address_literal",
    "4.5.3": "too_many_recipients",
    "5.4.6": "loop",
    "5.6.0": "bare_newline",
    "4.3.0": "broker_unavailable",
}


def client_address(session: Any) -> str:
    """The client's IP: from the PROXY header when a load balancer sent one."""
    proxy = session.proxy_data
    if proxy is not None and proxy.src_addr is not None:
        return str(proxy.src_addr)
    return str(session.peer[0])


class IngressHandler:
    def __init__(
        self,
        policy: IngressPolicy,
        store: Store,
        *,
        hostname: str,
        broker_ready: Callable[[], bool],
    ) -> None:
        self.policy = policy
        self.store = store
        self.hostname = hostname
        self.broker_ready = broker_ready

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
        # aiosmtpd ends the list with "250 HELP"; add ours before it.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not self.broker_ready():
            # Say so now rather than after the client has uploaded the message.
            return self._refuse("mail", BROKER_DOWN)
        reply = self.policy.sender(address)
        if not reply.is_positive:
            return self._refuse("mail", reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return reply.render()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        address = self.policy.mailbox(address)
        reply = self.policy.recipient(
            address,
            may_relay=self.policy.may_relay(client_address(session)),
            accepted_so_far=len(envelope.rcpt_tos),
        )
        if not reply.is_positive:
            if reply.status == "5.7.1":
                log.warning(
                    "relay denied",
                    extra={"client": client_address(session), "recipient": address},
                )
            return self._refuse("rcpt", reply)
        envelope.rcpt_tos.append(address)
        return reply.render()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content
        client_ip = client_address(session)
        refusal = self.policy.content(content, may_relay=self.policy.may_relay(client_ip))
        if refusal is not None:
            return self._refuse("data", refusal)
        message_id = ids.new_message_id()
        received_at = datetime.now(UTC)
        is_tls = session.ssl is not None
        trace = received_header(
            helo=session.host_name or "unknown",
            client_ip=client_ip,
            hostname=self.hostname,
            protocol=("ESMTPS" if is_tls else "ESMTP") if session.extended_smtp else "SMTP",
            message_id=message_id,
            recipients=envelope.rcpt_tos,
            when=received_at,
        )
        mail_from = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        message = pb.AcceptedMessage(
            message_id=message_id,
            mail_from=mail_from,
            recipients=envelope.rcpt_tos,
            content=trace + content,
            received_at=wire.timestamp(received_at),
            client=pb.Client(address=client_ip, helo=session.host_name or "", tls=is_tls),
            origin=pb.ORIGIN_SMTP,
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
                "from": mail_from,
                "nrcpt": len(envelope.rcpt_tos),
                "size": len(message.content),
            },
        )
        return Reply(250, "2.0.0", f"Ok: queued as {message_id}").render()

    async def handle_exception(self, error: Exception) -> str:
        """A bug or an unexpected library error: never a 5xx, never a crash."""
        log.error("SMTP session error", exc_info=error)
        return self._refuse("session", INTERNAL_ERROR, reason="internal_error")

    def _refuse(self, stage: str, reply: Reply, *, reason: str | None = None) -> str:
        label = reason or _REASONS.get(reply.status, reply.status_class)
        metrics.REJECTED.labels(stage, label).inc()
        return reply.render()
