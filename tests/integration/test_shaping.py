"""Traffic shaping against real sinks: limits held cluster-wide, backoff, fairness."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import dns_server as dns_support
from tests.support.pipeline import ALPHA, Pipeline, message, wait_until

# Four domains on one hosting site: their MX hosts all match *.hosting.test.
SITE_DOMAINS = ("one.test", "two.test", "three.test", "four.test")


def host_the_site(dns: dns_support.TestDnsServer) -> None:
    for number, domain in enumerate(SITE_DOMAINS, start=1):
        dns.add(f"{domain}.", "MX", f"10 mx{number}.hosting.test.")
        dns.add(f"mx{number}.hosting.test.", "A", "127.0.0.2")


def send_many(pipeline: Pipeline, recipients: list[str], subject: str) -> None:
    """One message per recipient, fifty to a session (the queue batches them)."""
    for start in range(0, len(recipients), 50):
        with pipeline.smtp() as client:
            for recipient in recipients[start : start + 50]:
                assert client.sendmail("app@sender.test", [recipient], message(subject)) == {}


def shaping_figures(pipeline: Pipeline, destination: str) -> str:
    """What each delivery process says it did, for the message of a failed assertion."""
    lines = []
    for name, process in pipeline.processes.items():
        if not name.startswith("delivery") or process.process is None:
            continue
        if process.process.poll() is not None:
            lines.append(f"{name}: exited")
            continue
        held = {
            reason: process.metric(
                "mailyard_delivery_shaping_held_total", destination=destination, reason=reason
            )
            for reason in ("busy", "paused", "no_share")
        }
        lines.append(
            f"{name}: members={process.metric('mailyard_delivery_shaping_members')} "
            "let through="
            f"{process.metric('mailyard_delivery_shaping_messages_total', destination=destination)}"
            f" held={held} share="
            + str(
                process.metric(
                    "mailyard_delivery_shaping_share",
                    destination=destination,
                    limit="messages_per_second",
                )
            )
        )
    return "; ".join(lines)


def time_to_deliver(pipeline: Pipeline, domain: str, count: int, since: float) -> float:
    """Seconds from ``since`` until ``count`` messages to ``domain`` arrived (waits 20 s)."""
    wait_until(
        lambda: (
            len(pipeline.sink.received(lambda m: m.recipients[0].endswith(f"@{domain}"))) == count
        ),
        20,
        f"{domain}'s {count} messages",
    )
    return time.monotonic() - since


def arrivals(pipeline: Pipeline, since: float, until: float) -> int:
    return len(pipeline.sink.received(lambda m: since <= m.at < until))


@pytest.mark.adapters("rabbitmq")
def test_three_delivery_processes_hold_one_sites_limits_together(
    pipeline_factory, dns_server: dns_support.TestDnsServer, tmp_path: Path
) -> None:
    host_the_site(dns_server)
    pipeline: Pipeline = pipeline_factory(
        split=True,
        overrides={
            "delivery": {
                "shaping": {
                    "destinations": {
                        "*.hosting.test": {"max_connections": 5, "max_messages_per_second": 20}
                    },
                    "heartbeat_interval": "500ms",
                },
            },
        },
    )
    pipeline.add_replica("delivery", tmp_path)
    third = pipeline.add_replica("delivery", tmp_path)
    pipeline.sink.script.data_delay = 0.05
    recipients = [f"r{n}@{SITE_DOMAINS[n % 4]}" for n in range(700)]
    send_many(pipeline, recipients, "shaped")

    # Ten seconds of steady sending, once the backlog is there.
    wait_until(lambda: len(pipeline.sink.received()) >= 40, 30, "the first deliveries")
    start = time.monotonic()
    time.sleep(10)
    window = arrivals(pipeline, start, start + 10)
    assert 180 <= window <= 220, (
        f"{window} messages in 10 s against a limit of 20 msg/s; "
        + shaping_figures(pipeline, "*.hosting.test")
    )
    assert pipeline.sink.peak_sessions(0) <= 5

    # One of the three dies holding its share: the others take it up within seconds.
    third.kill()
    killed = time.monotonic()
    time.sleep(6)  # three heartbeats to notice, and a little
    start = time.monotonic()
    time.sleep(5)
    after = arrivals(pipeline, start, start + 5)
    assert 85 <= after <= 110, (
        f"{after} messages in 5 s after a replica died (limit 100); "
        + shaping_figures(pipeline, "*.hosting.test")
    )
    assert pipeline.sink.peak_sessions(killed) <= 5
    assert pipeline.sink.peak_sessions(0) <= 5


@pytest.mark.adapters("embedded")
def test_throttling_replies_make_delivery_back_off_then_recover(pipeline_factory) -> None:
    pipeline: Pipeline = pipeline_factory(
        overrides={
            "delivery": {
                "shaping": {
                    "destinations": {"alpha.test": {"max_connections": 8}},
                    "backoff": {"recovery_interval": "2s", "pause_after": 1000},
                },
            },
        }
    )
    sink = pipeline.sink
    sink.script.data_delay = 0.25
    send_many(pipeline, [f"b{n}@alpha.test" for n in range(600)], "backoff")
    wait_until(lambda: sink.sessions_open >= 8, 30, "eight sessions to alpha.test")
    normal = time.monotonic()
    time.sleep(1.0)
    assert sink.peak_sessions(normal) == 8

    sink.script.data_reply = "421 4.7.0 Try again later, closing connection"
    time.sleep(4)
    late = time.monotonic()
    time.sleep(1.5)
    throttled_peak = sink.peak_sessions(late, late + 1.5)
    assert throttled_peak <= 2, f"{throttled_peak} sessions while every DATA got 421"
    process = pipeline.process("all")
    assert process.metric("mailyard_delivery_shaping_throttled_total", destination="alpha.test") > 0

    sink.script.data_reply = None
    back = time.monotonic()
    wait_until(lambda: sink.sessions_open >= 6, 30, "sessions to come back")
    # Step by step: not all at once, one recovery interval (2 s) per doubling.
    assert time.monotonic() - back >= 4
    assert sink.peak_sessions(0) <= 8


def test_a_rate_limited_destination_does_not_hold_up_another(pipeline_factory) -> None:
    pipeline: Pipeline = pipeline_factory(
        overrides={
            "delivery": {
                "shaping": {"destinations": {"alpha.test": {"max_messages_per_second": 2}}},
            },
        }
    )
    sink = pipeline.sink
    send_many(pipeline, [f"slow{n}@alpha.test" for n in range(300)], "backlog")
    wait_until(lambda: sink.received(), 20, "the first delivery to alpha.test")
    started = time.monotonic()
    send_many(pipeline, [f"fast{n}@beta.test" for n in range(100)], "flows")
    took = time_to_deliver(pipeline, "beta.test", 100, since=started)
    assert took < 10, f"beta.test's mail took {took:.1f}s behind alpha.test's backlog"
    slow = sink.received(lambda m: m.recipients[0].endswith("@alpha.test"))
    span = slow[-1].at - slow[0].at
    assert len(slow) <= 2 * span + 2, f"{len(slow)} messages to alpha.test in {span:.1f}s"


def test_a_destination_answering_data_after_3s_does_not_delay_another(pipeline: Pipeline) -> None:
    sink = pipeline.sink
    sink.script.data_delay_by_host[ALPHA] = 3.0
    send_many(pipeline, [f"slow{n}@alpha.test" for n in range(60)], "slow")
    wait_until(lambda: sink.sessions_open >= 5, 20, "sessions to the slow destination")
    started = time.monotonic()
    send_many(pipeline, [f"fast{n}@beta.test" for n in range(100)], "fast")
    took = time_to_deliver(pipeline, "beta.test", 100, since=started)
    assert took < 6, f"beta.test's mail took {took:.1f}s beside a destination 3 s a message"
