"""Mail flows end to end: SMTP in, RabbitMQ between, SMTP out to the right hosts."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiosmtplib

from tests.support.pipeline import (
    ALL_HOSTS,
    ALPHA,
    BETA_PRIMARY,
    BETA_SECONDARY,
    BOUNCES,
    GAMMA,
    Pipeline,
    message,
    strip_trace,
)

DOMAIN_HOSTS = {"alpha.test": ALPHA, "beta.test": BETA_PRIMARY, "gamma.test": GAMMA}


def tricky_body(index: int) -> str:
    """Lines that an MTA can get wrong: dot-stuffing, long lines, 8-bit, trailing space."""
    return (
        f"Message {index}.\r\n"
        ".a line that starts with a dot\r\n"
        "..two dots\r\n"
        f"{'x' * 900}\r\n"
        "trailing space   \r\n"
        "caf\u00e9 \u2603 8-bit text\r\n"
        "\r\n"
        "last line\r\n"
    )


def test_1000_messages_from_20_clients_arrive_exactly_once(pipeline: Pipeline) -> None:
    count, clients = 1000, 20
    sent: dict[str, bytes] = {}  # recipient -> the content sent to it

    async def client(number: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=pipeline.ingress_port, timeout=60)
        await smtp.connect()
        try:
            for index in range(number, count, clients):
                recipients = [f"user{index}@{domain}" for domain in DOMAIN_HOSTS]
                content = message(f"load {index}", tricky_body(index)).decode().encode("utf-8")
                for recipient in recipients:
                    sent[recipient] = content
                errors, reply = await smtp.sendmail("app@sender.test", recipients, content)
                assert not errors, errors
                assert reply.startswith("2.0.0 Ok: queued as "), reply
        finally:
            await smtp.quit()

    async def all_clients() -> None:
        await asyncio.gather(*(client(n) for n in range(clients)))

    asyncio.run(all_clients())
    assert len(sent) == 3 * count

    pipeline.sink.wait_for(
        lambda m: sum(len(x.recipients) for x in m) >= 3 * count, 240, "3000 deliveries"
    )
    copies = pipeline.sink.deliveries()
    assert set(copies) == set(sent), "some recipients got nothing, or someone unexpected got mail"
    assert [r for r, n in copies.items() if n != 1] == [], "duplicates"
    for received in pipeline.sink.received():
        for recipient in received.recipients:
            assert received.host == DOMAIN_HOSTS[recipient.split("@")[1]]
            assert strip_trace(received.content) == sent[recipient]
    # Nothing was deferred or failed on the way.
    process = pipeline.process("delivery")
    process.wait_metric("mailyard_delivery_recipients_total", 3 * count, 10, outcome="delivered")
    assert process.metric("mailyard_delivery_recipients_total", outcome="delivered") == 3 * count
    assert process.metric("mailyard_delivery_recipients_total", outcome="deferred") == 0


def test_each_domain_server_gets_only_its_own_recipients(pipeline: Pipeline) -> None:
    recipients = [
        "a1@alpha.test",
        "b1@beta.test",
        "g1@gamma.test",
        "a2@Alpha.Test",
        "b2@beta.test",
    ]
    code, text = pipeline.send("app@sender.test", recipients, message("three domains"))
    assert code == 250, text
    received = pipeline.sink.wait_for(lambda m: len(m) == 3, 20, "one transaction per domain")
    by_host = {m.host: sorted(m.recipients) for m in received}
    assert by_host == {
        ALPHA: ["a1@alpha.test", "a2@alpha.test"],
        BETA_PRIMARY: ["b1@beta.test", "b2@beta.test"],
        GAMMA: ["g1@gamma.test"],
    }


def test_falls_back_to_the_next_mx_when_the_first_is_down(pipeline_factory) -> None:
    # mx1.beta (preference 10) has nothing listening; mx2.beta (20) does.
    pipeline = pipeline_factory(hosts=[h for h in ALL_HOSTS if h != BETA_PRIMARY])
    code, _ = pipeline.send("app@sender.test", ["someone@beta.test"], message("fallback"))
    assert code == 250
    received = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "delivery via mx2")
    assert received[0].host == BETA_SECONDARY
    assert pipeline.process("delivery").metric("mailyard_delivery_host_failures_total") >= 1


def test_cname_to_a_domain_with_mx(pipeline: Pipeline) -> None:
    code, _ = pipeline.send("app@sender.test", ["someone@alias.test"], message("alias"))
    assert code == 250
    received = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "delivery to alpha's MX")
    assert received[0].host == ALPHA
    assert received[0].recipients == ("someone@alias.test",)


def test_local_domain_mail_goes_to_bounce_and_is_never_relayed(pipeline: Pipeline) -> None:
    # bounces.test has an MX (127.0.0.7, a live sink): relaying it would show there.
    code, text = pipeline.send("", ["bounce+abc@bounces.test"], message("async bounce"))
    assert code == 250, text
    bounce = pipeline.process("bounce")
    bounce.wait_metric("mailyard_bounce_local_messages_total", 1, timeout=20)
    assert pipeline.sink.received(lambda m: m.host == BOUNCES) == []
    assert pipeline.sink.received() == []


def test_sessions_and_dns_answers_are_reused_across_messages(
    pipeline: Pipeline, dns_server
) -> None:
    lookups_before = dns_server.query_count("alpha.test", "MX")
    for index in range(5):  # one after the other, so each can reuse what the last left
        code, _ = pipeline.send("app@sender.test", [f"r{index}@alpha.test"], message("reuse"))
        assert code == 250
        pipeline.sink.wait_for(lambda m, n=index + 1: len(m) == n, 20, f"message {index + 1}")
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_sessions_reused_total", 4, 10)
    assert delivery.metric("mailyard_delivery_sessions_opened_total") == 1
    # The MX answer (TTL 60s) is cached: one lookup for five messages.
    assert dns_server.query_count("alpha.test", "MX") - lookups_before == 1


def test_recipients_shuffled_across_many_domains_are_grouped_per_transaction(
    pipeline: Pipeline,
) -> None:
    recipients = [f"u{i}@{random.choice(list(DOMAIN_HOSTS))}" for i in range(60)]
    code, _ = pipeline.send("app@sender.test", recipients, message("many"))
    assert code == 250
    pipeline.sink.wait_for(
        lambda m: sum(len(x.recipients) for x in m) == 60, 20, "all 60 recipients"
    )
    per_host = Counter(m.host for m in pipeline.sink.received())
    # Each domain gets one transaction per 50 recipients (queue.max_recipients_per_job).
    for domain, host in DOMAIN_HOSTS.items():
        wanted = sum(1 for r in recipients if r.endswith(domain))
        assert per_host[host] == (wanted + 49) // 50


def test_per_destination_metrics_name_only_configured_providers(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"metrics": {"destinations": ["alpha.test"]}})
    code, _ = pipeline.send(
        "app@sender.test", ["a@alpha.test", "b@beta.test", "g@gamma.test"], message("labels")
    )
    assert code == 250
    delivery = pipeline.process("delivery")
    name = "mailyard_delivery_destination_recipients_total"
    delivery.wait_metric(name, 2, 20, destination="other", outcome="delivered")
    assert delivery.metric(name, destination="alpha.test", outcome="delivered") == 1
    assert delivery.metric(name, destination="beta.test") == 0  # never a label of its own
