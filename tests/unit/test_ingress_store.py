"""ingress's store path without sockets: 250 only once the port has the message."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mailyard.broker import Publish, PublishError, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.ingress.groupcommit import GroupCommit
from mailyard.ingress.handler import IngressHandler
from mailyard.ingress.params import MailFrom, RcptTo
from mailyard.ingress.policy import IngressPolicy
from mailyard.ingress.server import Transaction
from mailyard.v1 import message_pb2 as pb


def handler(broker: MemoryBroker) -> IngressHandler:
    async def publish(messages: list[pb.AcceptedMessage]) -> None:
        await broker.store([Publish(QueueName.INBOUND, tuple(messages))])

    policy = IngressPolicy.build([], ["local.test"], max_recipients=10, max_hops=20)
    commit = GroupCommit(publish, max_messages=10, max_bytes=1 << 20, max_in_flight=1)
    return IngressHandler(
        policy, commit.store, hostname="mx.test", broker_ready=lambda: broker.connected
    )


def session() -> SimpleNamespace:
    return SimpleNamespace(
        peer=("192.0.2.1", 4000),
        proxy_data=None,
        host_name="c.test",
        ssl=None,
        extended_smtp=True,
        authenticated=False,
    )


def server(recipient: str = "a@local.test") -> SimpleNamespace:
    """What the handler reads off the SMTP session object: its role and the transaction."""
    transaction = Transaction(MailFrom("app@sender.test"), [RcptTo(recipient)])
    return SimpleNamespace(role="mx", transaction=transaction)


def envelope(recipient: str = "a@local.test") -> SimpleNamespace:
    return SimpleNamespace(
        mail_from="app@sender.test",
        rcpt_tos=[recipient],
        original_content=b"Subject: hi\r\n\r\nbody\r\n",
    )


async def test_the_250_waits_for_the_store_and_names_the_queue_id():
    broker = MemoryBroker()
    broker.hold = True
    reply = asyncio.create_task(handler(broker).handle_DATA(server(), session(), envelope()))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not reply.done()  # stored? not yet: no answer yet
    broker.release_held()
    text = (await reply).render()
    assert text.startswith("250 2.0.0 Ok: queued as ")
    [publish] = broker.stored
    assert isinstance(publish, Publish)
    [message] = publish.items
    assert isinstance(message, pb.AcceptedMessage)
    assert text.endswith(message.message_id)
    assert message.content.startswith(b"Received: from c.test ([192.0.2.1])")
    assert list(message.recipients) == ["a@local.test"]


async def test_a_failed_store_is_a_451_and_nothing_is_kept():
    broker = MemoryBroker()
    broker.fail_with = PublishError("broker away")
    text = (await handler(broker).handle_DATA(server(), session(), envelope())).render()
    assert text.startswith("451 4.3.0 ")
    assert broker.stored == []


async def test_mail_from_is_refused_while_the_broker_is_away():
    broker = MemoryBroker()
    broker.is_connected = False
    reply = await handler(broker).handle_MAIL(
        server(), session(), envelope(), MailFrom("a@sender.test")
    )
    assert (reply.code, reply.status) == (451, "4.3.0")
