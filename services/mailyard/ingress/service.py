"""Ingress as a running service: listeners, broker connection, drain on stop."""

from __future__ import annotations

import asyncio
import logging

from mailyard.broker import Broker, MessageSizeMismatch, Publish, QueueName
from mailyard.config import Settings
from mailyard.ingress.groupcommit import GroupCommit
from mailyard.ingress.handler import IngressHandler
from mailyard.ingress.policy import IngressPolicy
from mailyard.ingress.server import MailyardSMTP, RefuseSession, SessionCounter
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

# Room for our Received: header and the protobuf envelope around the content.
ENVELOPE_ALLOWANCE = 64 * 1024


class IngressService:
    name = "ingress"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.config = settings.ingress
        self.broker = broker
        self.policy = IngressPolicy.build(
            self.config.relay_networks,
            self.config.local_domains,
            max_recipients=self.config.max_recipients,
            max_hops=self.config.max_hops,
            proxy_networks=self.config.proxy_protocol.trusted_networks,
        )
        batching = self.config.group_commit
        self.group_commit = GroupCommit(
            self._publish,
            max_messages=batching.max_messages,
            # Never more than the size the start-up probe proved the broker takes.
            max_bytes=min(batching.max_bytes, self.config.max_message_size),
            max_in_flight=batching.max_in_flight,
        )
        self.handler = IngressHandler(
            self.policy,
            self.group_commit.store,
            hostname=settings.hostname,
            broker_ready=self._broker_ready,
        )
        self.sessions = SessionCounter(self.config.max_connections)
        self._servers: list[asyncio.Server] = []

    def _broker_ready(self) -> bool:
        return self.broker.connected

    async def _publish(self, messages: list[pb.AcceptedMessage]) -> None:
        await self.broker.store([Publish(QueueName.INBOUND, tuple(messages))])

    def _protocol(self) -> asyncio.BaseProtocol:
        if self.sessions.full:
            return RefuseSession()
        return MailyardSMTP(
            self.handler,
            sessions=self.sessions,
            hostname=self.settings.hostname,
            ident="ESMTP Mailyard",
            data_size_limit=self.config.max_message_size,
            timeout=self.config.idle_timeout.total_seconds(),
            proxy_protocol_timeout=(
                self.config.proxy_protocol.timeout.total_seconds()
                if self.config.proxy_protocol.enabled
                else None
            ),
        )

    async def start(self) -> None:
        await self.broker.connect()
        size = self.config.max_message_size + ENVELOPE_ALLOWANCE
        try:
            await self.broker.check_message_size(size)
        except MessageSizeMismatch as exc:
            raise MessageSizeMismatch(
                f"ingress.max_message_size is {self.config.max_message_size} bytes, but {exc}. "
                "Lower ingress.max_message_size, or raise max_message_size in rabbitmq.conf."
            ) from exc
        loop = asyncio.get_running_loop()
        for listener in self.config.listen:
            server = await loop.create_server(
                self._protocol, listener.host, listener.port, reuse_address=True
            )
            self._servers.append(server)
            log.info("listening", extra={"host": listener.host, "port": listener.port})

    def ready(self) -> bool:
        return bool(self._servers) and self.broker.connected

    async def stop(self, grace: float) -> None:
        """Stop accepting, let transactions under way finish (up to ``grace`` s), disconnect.

        A client between transactions gets ``421 4.3.2`` at once; one in the
        middle of a transaction may finish it and get its 250.
        """
        for server in self._servers:
            server.close()
        self.sessions.close_idle()
        try:
            await asyncio.wait_for(self.sessions.drained.wait(), timeout=grace)
        except TimeoutError:
            log.warning(
                "closing sessions still open after the grace period; "
                "their clients were not given 250 and will retry",
                extra={"sessions": self.sessions.open},
            )
        self.sessions.close_all()
        for server in self._servers:
            await server.wait_closed()
        await self.group_commit.drain()
        await self.broker.close()
