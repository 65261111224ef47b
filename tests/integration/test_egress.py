"""Egress addresses (delivery.source_addresses): connections bind to them and EHLO with
their names; class and sender-domain entries take their mail; a pool alternates; a
reused session never carries mail its address does not serve.

The sinks listen on 127.0.0.2-7 (the test zone's MX hosts); the sources are other
loopback addresses, which Linux lets a socket bind without any set-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mailyard import wire
from mailyard.cli import main
from mailyard.delivery.attempt import Deliverer
from mailyard.delivery.egress import Egress, Source
from mailyard.delivery.pool import SessionPool
from mailyard.delivery.resolver import MxResolver
from mailyard.delivery.routes import Router
from mailyard.delivery.smtp import (
    SourceUnusable,
    open_session,
    opportunistic_tls_context,
    verifying_tls_context,
)
from mailyard.delivery.tlspolicy import TlsMode
from mailyard.v1 import message_pb2 as pb
from tests.support.pipeline import ALPHA, SENDER, Pipeline, message
from tests.support.processes import free_port
from tests.support.smtp_sink import Received, Sink

# Delivery's behaviour is the same on both adapters; the embedded one is quicker.
pytestmark = pytest.mark.adapters("embedded")

OUT1, OUT2, BULK, NEWS = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"
NOT_OURS = "192.0.2.1"  # TEST-NET-1: on no host
RELAY = "127.0.0.8"  # a smarthost: not a host of the test zone
NAMES = {
    OUT1: "out1.mailyard.test",
    OUT2: "out2.mailyard.test",
    BULK: "bulk.mailyard.test",
    NEWS: "news.mailyard.test",
}
CATCH_ALL = [{"address": OUT1, "ehlo": NAMES[OUT1]}, {"address": OUT2, "ehlo": NAMES[OUT2]}]
DEDICATED = [
    {"address": BULK, "ehlo": NAMES[BULK], "classes": ["bulk"]},
    {"address": NEWS, "ehlo": NAMES[NEWS], "sender_domains": ["news.test"]},
]


def with_sources(pipeline_factory, sources: list[dict], **delivery: object) -> Pipeline:
    return pipeline_factory(overrides={"delivery": {"source_addresses": sources, **delivery}})


def arrived(pipeline: Pipeline, count: int, what: str) -> list[Received]:
    return pipeline.sink.wait_for(lambda m: len(m) >= count, 20, what)


def send(pipeline: Pipeline, sender: str, recipient: str) -> None:
    code, text = pipeline.send(sender, [recipient], message(recipient, sender=sender))
    assert code == 250, text


def bulk_job(queue_id: str, recipient: str) -> pb.DeliveryJob:
    """A job of class bulk, as the queue service makes it (put on the delivery queue
    directly: this test is about what delivery does with the class, not who sets it)."""
    received = wire.timestamp(datetime.now(UTC))
    return pb.DeliveryJob(
        message_id=queue_id.split(".")[0],
        queue_id=queue_id,
        domain="alpha.test",
        mail_from="app@sender.test",
        recipients=[recipient],
        content=message("bulk"),
        received_at=received,
        expires_at=wire.later(received, timedelta(hours=1)),
        origin=pb.ORIGIN_SMTP,
        mail_class="bulk",
    )


def test_a_pool_is_taken_in_turn_and_each_address_says_its_own_name(pipeline_factory) -> None:
    # Without reuse, every message is a new connection, each the pool's next address.
    pipeline = with_sources(pipeline_factory, CATCH_ALL, connection_reuse=False)
    for n in range(4):
        send(pipeline, "app@sender.test", f"r{n}@alpha.test")
        arrived(pipeline, n + 1, f"message {n + 1}")
    received = pipeline.sink.received()
    assert [m.peer for m in received] == [OUT1, OUT2, OUT1, OUT2]
    assert [m.ehlo for m in received] == [NAMES[m.peer] for m in received]
    assert {m.host for m in received} == {ALPHA}
    delivery = pipeline.process("delivery")
    for source in (OUT1, OUT2):
        assert delivery.metric("mailyard_delivery_sessions_opened_total", source=source) == 2
    assert delivery.metric("mailyard_delivery_sessions_opened_total", source="default") == 0


def test_dedicated_entries_take_their_mail_and_reuse_never_crosses_addresses(
    pipeline_factory,
) -> None:
    pipeline = with_sources(pipeline_factory, CATCH_ALL[:1] + DEDICATED)
    # Bulk first: its session is left idle at alpha's MX for the others to (not) take.
    bulk = bulk_job("01BULK1.1", "b1@alpha.test")
    pipeline.inject("delivery", bulk.SerializeToString(), type="mailyard.v1.DeliveryJob")
    arrived(pipeline, 1, "the bulk message")
    send(pipeline, "app@sender.test", "t1@alpha.test")  # transactional: the catch-all
    arrived(pipeline, 2, "the first transactional message")
    send(pipeline, "editor@news.test", "n1@alpha.test")  # its sender domain's address
    arrived(pipeline, 3, "the first newsletter")
    send(pipeline, "app@sender.test", "t2@alpha.test")
    arrived(pipeline, 4, "the second transactional message")
    send(pipeline, "editor@news.test", "n2@alpha.test")
    arrived(pipeline, 5, "the second newsletter")

    by_recipient = {m.recipients[0]: m for m in pipeline.sink.received()}
    expected = {
        "b1@alpha.test": BULK,
        "t1@alpha.test": OUT1,
        "n1@alpha.test": NEWS,
        "t2@alpha.test": OUT1,
        "n2@alpha.test": NEWS,
    }
    assert {r: m.peer for r, m in by_recipient.items()} == expected
    assert all(m.ehlo == NAMES[m.peer] for m in by_recipient.values())
    delivery = pipeline.process("delivery")
    # One session per address, the second message of each on the same one: an idle
    # session was there for every message, and only its own address's was taken.
    for source in (OUT1, BULK, NEWS):
        assert delivery.metric("mailyard_delivery_sessions_opened_total", source=source) == 1
    assert delivery.metric("mailyard_delivery_sessions_reused_total") == 2


def test_the_null_sender_goes_out_on_the_addresses_that_name_nothing(pipeline_factory) -> None:
    """The DSN to a sender whose domain has its own address: no domain, not that address."""
    own = {"address": NEWS, "ehlo": NAMES[NEWS], "sender_domains": ["sender.test"]}
    pipeline = with_sources(pipeline_factory, [*CATCH_ALL[:1], own])
    pipeline.sink.script.rcpt_always["gone@alpha.test"] = "550 5.1.1 no such user"
    send(pipeline, "app@sender.test", "gone@alpha.test")
    [dsn] = pipeline.sink.wait_for(lambda m: len(m) == 1, 30, "the DSN")
    assert (dsn.host, dsn.mail_from, dsn.recipients) == (SENDER, "<>", ("app@sender.test",))
    assert (dsn.peer, dsn.ehlo) == (OUT1, NAMES[OUT1])
    delivery = pipeline.process("delivery")
    # The refused message itself went from sender.test's own address.
    assert delivery.metric("mailyard_delivery_sessions_opened_total", source=NEWS) == 1


@pytest.fixture
def relay() -> Iterator[Sink]:
    """A smarthost. Ask for it before ``pipeline_factory``: it must outlive delivery's
    pooled session."""
    sink = Sink([RELAY], free_port(RELAY)).start()
    yield sink
    sink.stop()


def test_the_smarthost_is_reached_from_the_egress_address(relay: Sink, pipeline_factory) -> None:
    smarthost = {"host": RELAY, "port": relay.port}
    pipeline = with_sources(pipeline_factory, CATCH_ALL[1:], smarthost=smarthost)
    send(pipeline, "app@sender.test", "someone@elsewhere.example")
    [received] = relay.wait_for(lambda m: len(m) == 1, 20, "the relayed message")
    assert (received.host, received.peer, received.ehlo) == (RELAY, OUT2, NAMES[OUT2])


def test_an_ipv6_host_gets_nothing_from_ipv4_addresses_and_the_reply_says_why(
    pipeline_factory,
) -> None:
    pipeline = with_sources(pipeline_factory, CATCH_ALL, smarthost={"host": "::1", "port": 25})
    send(pipeline, "app@sender.test", "someone@elsewhere.example")
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 20, outcome="deferred")
    assert (
        "451 4.4.4 no address in delivery.source_addresses serves transactional mail from "
        "sender.test over IPv6, which ::1 needs" in delivery.logs()
    )
    # Skipped, not tried: nothing was connected to, no host counted as failing.
    assert delivery.metric("mailyard_delivery_sessions_opened_total") == 0
    assert delivery.metric("mailyard_delivery_host_failures_total") == 0


def test_an_address_that_is_not_this_hosts_stops_start_up_naming_it(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("mailyard.logs.configure", lambda level: None)
    config = tmp_path / "mailyard.yaml"
    sources = [*CATCH_ALL, {"address": NOT_OURS, "ehlo": "gone.mailyard.test"}]
    settings = {"hostname": "mx.mailyard.test", "delivery": {"source_addresses": sources}}
    config.write_text(yaml.safe_dump(settings))
    assert main(["delivery", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"mailyard: delivery.source_addresses.2.address: cannot bind {NOT_OURS} on this host "
        "(Cannot assign requested address)"
    )


# --- an address that goes away after start-up: the attempt says so, nothing crashes ---


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink([ALPHA], free_port(ALPHA)).start()
    yield server
    server.stop()


def test_a_source_that_cannot_be_bound_is_a_clear_reply(sink: Sink) -> None:
    async def connect() -> None:
        await open_session(
            mx="mx.alpha.test",
            address=ALPHA,
            port=sink.port,
            helo_name="gone.mailyard.test",
            tls_mode=TlsMode.NONE,
            tls_context=None,
            connect_timeout=3,
            command_timeout=3,
            source=NOT_OURS,
        )

    with pytest.raises(SourceUnusable) as info:
        asyncio.run(connect())
    reply = info.value.reply
    assert (reply.code, reply.status) == (451, "4.3.5")
    assert reply.text.startswith(f"cannot bind delivery.source_addresses' {NOT_OURS}: ")
    assert sink.received() == []


def test_an_attempt_whose_address_went_away_tries_the_next_and_logs_it(
    sink: Sink, dns_server, caplog
) -> None:
    """Start-up checks every address; one removed from the host later (a moved VIP)
    defers only the mail no other address of its pool can carry."""
    gone = Source(NOT_OURS, "gone.mailyard.test")
    here = Source(OUT1, NAMES[OUT1])
    job = bulk_job("01GONE.1", "g@alpha.test")

    async def attempt(sources: list[Source]) -> list[str]:
        deliverer = Deliverer(
            Router(MxResolver([dns_server.address], timeout=3, ipv6=False, cache_size=0)),
            SessionPool(enabled=False, max_idle=1),
            port=sink.port,
            helo_name="mx.mailyard.test",
            opportunistic_tls=opportunistic_tls_context(),
            verifying_tls=lambda: verifying_tls_context(None),
            connect_timeout=3,
            command_timeout=3,
            egress=Egress(sources),
        )
        return [str(outcome.reply) for outcome in await deliverer.attempt(job)]

    with caplog.at_level(logging.WARNING, logger="mailyard.delivery.attempt"):
        [alone] = asyncio.run(attempt([gone]))
    assert alone.startswith(f"451 4.3.5 cannot bind delivery.source_addresses' {NOT_OURS}")
    assert any(r.getMessage() == "source address unusable" for r in caplog.records)
    assert sink.received() == []
    # With another address in the pool, the same connection is made from it.
    [delivered] = asyncio.run(attempt([gone, here]))
    assert delivered.startswith("250")
    [received] = sink.received()
    assert (received.peer, received.ehlo) == (OUT1, NAMES[OUT1])
