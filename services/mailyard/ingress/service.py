"""Ingress as a running service: listeners by role, TLS, AUTH, broker, drain on stop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from mailyard.broker import Broker, MessageSizeMismatch, Publish, QueueName
from mailyard.config import Listener, Settings
from mailyard.ingress.auth import AuthFailures, Users
from mailyard.ingress.groupcommit import GroupCommit
from mailyard.ingress.handler import IngressHandler
from mailyard.ingress.limits import ClientConnections, DataMemory
from mailyard.ingress.policy import IngressPolicy
from mailyard.ingress.server import MailyardSMTP, SessionPolicy
from mailyard.ingress.sessions import RefuseSession, SessionCounter
from mailyard.ingress.tls import ServerTls
from mailyard.v1 import message_pb2 as pb

log = logging.getLogger(__name__)

# Room for our Received: header and the protobuf envelope around the content.
ENVELOPE_ALLOWANCE = 64 * 1024


class IngressService:
    name = "ingress"

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.config = config = settings.ingress
        self.broker = broker
        # Files named in the configuration are read now: a missing or broken
        # one stops start-up with its key named (filewatch.FileProblem).
        self.tls = ServerTls(config.tls) if config.tls is not None else None
        self.users = (
            Users(config.auth.users_file, classes=settings.queue.classes)
            if config.auth is not None
            else None
        )
        limits = config.limits
        self.auth_failures = AuthFailures(
            limits.auth_failures, limits.auth_failure_window.total_seconds()
        )
        self.clients = ClientConnections(
            limits.connections_per_client, limits.connection_rate_per_client
        )
        self.memory = DataMemory(limits.data_memory)
        self.policy = IngressPolicy.build(
            config.relay_networks,
            config.local_domains,
            max_recipients=config.max_recipients,
            max_hops=config.max_hops,
            proxy_networks=config.proxy_protocol.trusted_networks,
            postmaster=config.postmaster,
        )
        batching = config.group_commit
        self.group_commit = GroupCommit(
            self._publish,
            max_messages=batching.max_messages,
            # Never more than the size the start-up probe proved the broker takes.
            max_bytes=min(batching.max_bytes, config.max_message_size),
            max_in_flight=batching.max_in_flight,
        )
        self.handler = IngressHandler(
            self.policy,
            self.group_commit.store,
            hostname=settings.hostname,
            broker_ready=self._broker_ready,
            users=self.users,
        )
        self.sessions = SessionCounter(config.max_connections)
        self._servers: list[asyncio.Server] = []

    def _broker_ready(self) -> bool:
        return self.broker.connected

    async def _publish(self, messages: list[pb.AcceptedMessage]) -> None:
        await self.broker.store([Publish(QueueName.INBOUND, tuple(messages))])

    def _tls_context(self) -> ssl.SSLContext | None:
        return self.tls.context if self.tls is not None else None

    def session_policy(self, listener: Listener) -> SessionPolicy:
        limits = self.config.limits
        return SessionPolicy(
            role=listener.role,
            idle_timeout=self.config.idle_timeout.total_seconds(),
            tls_handshake_timeout=limits.tls_handshake_timeout.total_seconds(),
            greeting_delay=limits.greeting_delay.total_seconds(),
            junk_commands=limits.junk_commands,
            min_data_rate=limits.min_data_rate,
            max_message_size=self.config.max_message_size,
            header_size=limits.header_size,
            strip_nul=limits.nul_in_content == "strip",
            trusted=self.policy.is_trusted,
            tls_context=self._tls_context,
            auth_offered=self.users is not None,
            locked_out=self.auth_failures.locked_out,
            auth_failed=self.auth_failures.record_failure,
        )

    def _protocol_for(self, listener: Listener) -> Callable[[], asyncio.BaseProtocol]:
        policy = self.session_policy(listener)

        def protocol() -> asyncio.BaseProtocol:
            if self.sessions.full:
                return RefuseSession()
            return MailyardSMTP(
                self.handler,
                sessions=self.sessions,
                policy=policy,
                clients=self.clients,
                memory=self.memory,
                hostname=self.settings.hostname,
                ident="ESMTP Mailyard",
                authenticator=self.handler.authenticator,
                proxy_protocol_timeout=(
                    self.config.proxy_protocol.timeout.total_seconds()
                    if self.config.proxy_protocol.enabled
                    else None
                ),
            )

        return protocol

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
                self._protocol_for(listener), listener.host, listener.port, reuse_address=True
            )
            self._servers.append(server)
            log.info(
                "listening",
                extra={"host": listener.host, "port": listener.port, "role": listener.role},
            )

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
