"""MTA-STS (RFC 8461) end to end: the TXT record from the test DNS server, the policy from
a real HTTPS server on loopback, delivery to sinks with certificates from the test's CA.

Each test has a domain of its own (``stsN.test``: MX ``mx.stsN.test`` at the
sinks' 127.0.0.2), so the policies one test publishes reach no other.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from pathlib import Path

import pytest
import trustme

from mailyard.delivery.mtasts import Mode
from mailyard.delivery.mtasts_fetch import MIN_RECORD_SECONDS, MtaSts
from mailyard.delivery.resolver import MxResolver
from tests.support import dns_server as dns_support
from tests.support.certificates import server_context
from tests.support.https_server import PolicyServer
from tests.support.pipeline import ALPHA, Pipeline, message
from tests.support.processes import free_port

pytestmark = pytest.mark.adapters("embedded")  # delivery's logic; the spool is quicker

_numbers = itertools.count(1)


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


class Sts:
    """One test's domain, its DNS records and its policy server."""

    def __init__(
        self, dns: dns_support.TestDnsServer, ca: trustme.CA, *, record: bool = True
    ) -> None:
        self.domain = f"sts{next(_numbers)}.test"
        self.mx = f"mx.{self.domain}"
        dns.add(f"{self.domain}.", "MX", f"10 {self.mx}.")
        dns.add(f"{self.mx}.", "A", ALPHA)
        dns.add(f"mta-sts.{self.domain}.", "A", ALPHA)
        if record:
            dns.add(f"_mta-sts.{self.domain}.", "TXT", '"v=STSv1; id=20261201T000000"')
        self.server = PolicyServer(
            ALPHA, free_port(ALPHA), server_context(ca, f"mta-sts.{self.domain}")
        ).start()

    def start_pipeline(self, pipeline_factory, ca_file: Path, sink_tls, **delivery) -> Pipeline:
        return pipeline_factory(
            sink_tls=sink_tls,
            overrides={
                "delivery": {
                    "tls_ca_file": str(ca_file),
                    "mta_sts": {"https_port": self.server.port},
                    **delivery,
                }
            },
        )

    def send(self, pipeline: Pipeline, local: str = "r") -> None:
        code, text = pipeline.send("app@sender.test", [f"{local}@{self.domain}"], message(local))
        assert code == 250, text


@pytest.fixture
def sts(dns_server, ca):
    made: list[Sts] = []

    def make(**options) -> Sts:
        made.append(Sts(dns_server, ca, **options))
        return made[-1]

    yield make
    for one in made:
        one.server.stop()


def deferred(pipeline: Pipeline) -> None:
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 20, outcome="deferred")
    time.sleep(0.5)
    assert pipeline.sink.received() == []


def test_enforce_delivers_to_a_listed_mx_over_verified_tls(
    sts, pipeline_factory, ca, ca_file
) -> None:
    domain = sts()
    domain.server.serve(domain.domain, policy("enforce", domain.mx))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, server_context(ca, domain.mx))
    domain.send(pipeline)
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received.tls
    delivery = pipeline.process("delivery")
    sessions = delivery.metric(
        "mailyard_delivery_tls_sessions_total", policy="mta-sts", result="verified"
    )
    assert sessions == 1
    assert delivery.metric("mailyard_delivery_mta_sts_fetches_total", result="ok") == 1
    domain.send(pipeline, "again")  # the cached policy: no second fetch
    pipeline.sink.wait_for(lambda m: len(m) == 2, 20, "the second message")
    assert domain.server.requests[f"mta-sts.{domain.domain}"] == 1


def test_enforce_defers_a_certificate_that_does_not_match(
    sts, pipeline_factory, ca, ca_file
) -> None:
    domain = sts()
    domain.server.serve(domain.domain, policy("enforce", domain.mx))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, server_context(ca, "other.test"))
    domain.send(pipeline)
    deferred(pipeline)
    delivery = pipeline.process("delivery")
    assert (
        delivery.metric("mailyard_delivery_tls_sessions_total", policy="mta-sts", result="failed")
        >= 1
    )


def test_enforce_defers_when_no_mx_matches_the_policy_and_connects_nowhere(
    sts, pipeline_factory, ca, ca_file
) -> None:
    domain = sts()
    domain.server.serve(domain.domain, policy("enforce", "*.elsewhere.example"))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, server_context(ca, domain.mx))
    domain.send(pipeline)
    deferred(pipeline)
    delivery = pipeline.process("delivery")
    assert delivery.metric("mailyard_delivery_route_failures_total", kind="mta_sts") >= 1
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="yes") == 0
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="no") == 0


def test_testing_mode_delivers_as_before_and_reports_the_mismatch(
    sts, pipeline_factory, ca, ca_file
) -> None:
    domain = sts()
    domain.server.serve(domain.domain, policy("testing", "*.elsewhere.example"))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, server_context(ca, "other.test"))
    domain.send(pipeline)
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received.tls  # opportunistic: encrypted, the wrong name not held against it
    delivery = pipeline.process("delivery")
    routes = delivery.metric(
        "mailyard_delivery_mta_sts_routes_total", mode="testing", result="mismatch"
    )
    assert routes == 1


@pytest.mark.parametrize(
    "served",
    [
        {"status": 404},
        {"content_type": "text/html"},
        {"body": "this is not a policy"},
    ],
)
def test_a_policy_that_cannot_be_had_means_delivery_as_without_one(
    sts, pipeline_factory, ca_file, served
) -> None:
    domain = sts()
    options = {"body": policy("enforce", "*.elsewhere.example"), **served}
    domain.server.serve(domain.domain, options.pop("body"), **options)
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, None)  # no TLS at all
    domain.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message, as without a policy")
    delivery = pipeline.process("delivery")
    assert delivery.metric("mailyard_delivery_mta_sts_fetches_total", result="failed") == 1


def test_a_policy_server_with_an_untrusted_certificate_is_not_believed(
    sts, pipeline_factory, ca_file
) -> None:
    """An attacker who can answer for mta-sts.<domain> without a valid certificate
    must not be able to plant (or here: any) policy."""
    domain = sts()
    domain.server.stop()
    stranger = trustme.CA()
    domain.server = PolicyServer(
        ALPHA, free_port(ALPHA), server_context(stranger, f"mta-sts.{domain.domain}")
    ).start()
    domain.server.serve(domain.domain, policy("enforce", "*.elsewhere.example"))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, None)
    domain.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message, as without a policy")
    assert "MTA-STS policy could not be fetched" in pipeline.process("delivery").logs()


def test_no_txt_record_means_no_fetch(sts, pipeline_factory, ca_file) -> None:
    domain = sts(record=False)
    domain.server.serve(domain.domain, policy("enforce", "*.elsewhere.example"))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, None)
    domain.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert domain.server.requests == {}


def test_tls_policies_for_the_domain_win_over_its_mta_sts_policy(
    sts, pipeline_factory, ca_file
) -> None:
    domain = sts()
    domain.server.serve(domain.domain, policy("enforce", "*.elsewhere.example"))
    pipeline = domain.start_pipeline(
        pipeline_factory, ca_file, None, tls_policies={domain.domain: "opportunistic"}
    )
    domain.send(pipeline)
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert not received.tls
    assert domain.server.requests == {}


def test_mta_sts_can_be_switched_off(sts, pipeline_factory, ca_file) -> None:
    domain = sts()
    domain.server.serve(domain.domain, policy("enforce", "*.elsewhere.example"))
    pipeline = domain.start_pipeline(pipeline_factory, ca_file, None, mta_sts={"enabled": False})
    domain.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert domain.server.requests == {}


def test_a_new_txt_id_fetches_the_policy_again_once_the_record_is_looked_up_anew(
    dns_server, ca, ca_file
):
    """RFC 8461 §5.1 against the real DNS and HTTPS servers, in one process: the cached
    policy serves while the TXT answer is fresh, a changed id (seen once the answer is
    looked up again, at least a minute later) fetches the new policy, and an unchanged
    id after that fetches nothing."""
    one = Sts(dns_server, ca)
    one.server.serve(one.domain, policy("testing", one.mx, max_age=86400))
    now = [1000.0]
    context = ssl.create_default_context(cafile=str(ca_file))
    fetcher = MtaSts(
        MxResolver([dns_server.address], timeout=5, ipv6=False),
        https_port=one.server.port,
        timeout=5,
        tls_context=lambda: context,
        safety=None,
        cache_size=100,
        clock=lambda: now[0],
    )
    host = f"mta-sts.{one.domain}"
    try:

        async def look() -> tuple[Mode | None, int]:
            found = await fetcher.policy(one.domain)
            return (found.mode if found else None), one.server.requests[host]

        assert asyncio.run(look()) == (Mode.TESTING, 1)
        # The domain switches to enforce with a new id; our TXT answer is still fresh.
        dns_server.replace(f"_mta-sts.{one.domain}.", "TXT", '"v=STSv1; id=20261202T000000"')
        one.server.serve(one.domain, policy("enforce", one.mx, max_age=86400))
        assert asyncio.run(look()) == (Mode.TESTING, 1)
        now[0] += MIN_RECORD_SECONDS + 1
        assert asyncio.run(look()) == (Mode.ENFORCE, 2)
        now[0] += MIN_RECORD_SECONDS + 1
        assert asyncio.run(look()) == (Mode.ENFORCE, 2)  # same id: the cached policy
    finally:
        one.server.stop()
