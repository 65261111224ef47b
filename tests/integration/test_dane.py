"""Outbound DANE (RFC 7672) end to end: TLSA records from the test DNS server, which answers
for the names a test signs with the AD bit as a validating resolver does, and delivery to
real sinks presenting certificates from the test's CA.

Each test has a domain of its own (``daneN.test``: MX ``mx.daneN.test`` at the sinks'
127.0.0.2). The TLSA records are published once the pipeline runs, at
``_<port>._tcp.mx.daneN.test`` for the sinks' port (``delivery.port``).
"""

from __future__ import annotations

import itertools
import ssl
import time
from typing import Any

import pytest
import trustme

from mailyard.v1 import message_pb2 as pb
from tests.integration.test_events import subscribe, take
from tests.integration.test_mta_sts import Sts
from tests.integration.test_mta_sts import policy as sts_policy
from tests.support import dns_server as dns_support
from tests.support.certificates import der_chain, leaf_context, server_context, tlsa_text
from tests.support.pipeline import ALPHA, Pipeline, message, wait_until

pytestmark = pytest.mark.adapters("embedded")  # delivery's logic; the spool is quicker

_numbers = itertools.count(1)
SESSIONS = "mailyard_delivery_tls_sessions_total"
LOOKUPS = "mailyard_delivery_dane_lookups_total"


class Dane:
    """One test's domain and its DNS records; signed (AD) unless the test says otherwise."""

    def __init__(
        self, dns: dns_support.TestDnsServer, *, signed_mx: bool = True, signed_host: bool = True
    ) -> None:
        self.dns = dns
        self.domain = f"dane{next(_numbers)}.test"
        self.mx = f"mx.{self.domain}"
        dns.add(f"{self.domain}.", "MX", f"10 {self.mx}.")
        dns.add(f"{self.mx}.", "A", ALPHA)
        if signed_mx:
            dns.sign(f"{self.domain}.")
        if signed_host:
            dns.sign(f"{self.mx}.")

    def tlsa_name(self, pipeline: Pipeline) -> str:
        return f"_{pipeline.sink.port}._tcp.{self.mx}"

    def publish(self, pipeline: Pipeline, *records: str, signed: bool = True) -> None:
        name = self.tlsa_name(pipeline) + "."
        for record in records:
            self.dns.add(name, "TLSA", record)
        if signed:
            self.dns.sign(name)

    def send(self, pipeline: Pipeline, local: str = "r") -> None:
        code, text = pipeline.send("app@sender.test", [f"{local}@{self.domain}"], message(local))
        assert code == 250, text


@pytest.fixture
def dane(dns_server):
    return lambda **options: Dane(dns_server, **options)


def start(pipeline_factory, sink_tls, *, enabled: bool = True, **delivery: Any) -> Pipeline:
    return pipeline_factory(
        sink_tls=sink_tls, overrides={"delivery": {"dane": {"enabled": enabled}, **delivery}}
    )


def delivered(pipeline: Pipeline, count: int = 1):
    return pipeline.sink.wait_for(lambda m: len(m) == count, 20, f"{count} message(s)")


def deferred(pipeline: Pipeline) -> str:
    """Waits for a deferral; nothing may have reached the sink. The delivery logs."""
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 20, outcome="deferred")
    time.sleep(0.5)
    assert pipeline.sink.received() == []
    assert delivery.metric("mailyard_delivery_recipients_total", outcome="failed") == 0
    return delivery.logs()


@pytest.mark.adapters("rabbitmq")  # the event is read from the events exchange
def test_a_matching_dane_ee_record_delivers_over_dane_verified_tls(
    dane, pipeline_factory, ca
) -> None:
    domain = dane()
    leaf = ca.issue_cert(domain.mx)
    context = leaf_context(leaf)
    names: list[str | None] = []
    context.sni_callback = lambda _tls, name, _context: names.append(name)  # type: ignore[assignment]
    pipeline = start(pipeline_factory, context)
    domain.publish(pipeline, tlsa_text(3, 1, 1, der_chain(leaf)[0]))
    queue = subscribe(pipeline.prefix, ["delivered"])
    domain.send(pipeline)
    [received] = delivered(pipeline)
    assert received.tls
    assert names == [domain.mx]  # SNI: the MX host name (RFC 7672 §8.1)
    events: list[pb.DeliveryEvent] = []
    wait_until(lambda: events.extend(take(queue)) or events, 20, "the delivered event")
    tls = events[0].results[0].tls
    assert (tls.policy, tls.verified) == ("dane", True)
    assert tls.version.startswith("TLSv1.")
    delivery = pipeline.process("delivery")
    assert delivery.metric(SESSIONS, policy="dane", result="verified") == 1
    assert delivery.metric(LOOKUPS, result="secure") >= 1


def test_the_hosts_of_an_unsigned_mx_rrset_still_get_dane(dane, pipeline_factory, ca) -> None:
    """RFC 7672 §2.2.1 allows it (a signed provider behind an unsigned customer domain), and
    it can only add protection: a TLSA record no attacker can forge, for that host."""
    domain = dane(signed_mx=False)
    leaf = ca.issue_cert(domain.mx)
    pipeline = start(pipeline_factory, leaf_context(leaf))
    domain.publish(pipeline, tlsa_text(3, 1, 1, der_chain(leaf)[0]))
    domain.send(pipeline)
    delivered(pipeline)
    assert pipeline.process("delivery").metric(SESSIONS, policy="dane", result="verified") == 1


def test_a_certificate_no_record_matches_defers_and_never_goes_in_clear(
    dane, pipeline_factory, ca
) -> None:
    domain = dane()
    pipeline = start(pipeline_factory, server_context(ca, domain.mx))
    someone_else = der_chain(ca.issue_cert(domain.mx))[0]  # the right name, another key
    domain.publish(pipeline, tlsa_text(3, 1, 1, someone_else))
    domain.send(pipeline)
    logs = deferred(pipeline)
    assert "4.7.5" in logs
    assert domain.mx in logs
    assert "no TLSA record matches" in logs
    delivery = pipeline.process("delivery")
    assert delivery.metric(SESSIONS, policy="dane", result="failed") >= 1
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="no") == 0


def test_tlsa_records_make_starttls_mandatory(dane, pipeline_factory) -> None:
    domain = dane()
    pipeline = start(pipeline_factory, None)  # the sink offers no STARTTLS
    domain.publish(pipeline, "3 1 1 " + "ab" * 32)
    domain.send(pipeline)
    logs = deferred(pipeline)
    assert "4.7.4" in logs
    assert "TLS is required by its TLSA records (DANE)" in logs
    assert pipeline.process("delivery").metric(SESSIONS, policy="dane", result="failed") >= 1


@pytest.mark.parametrize("unsigned", ["tlsa", "host"])
def test_records_dnssec_does_not_vouch_for_are_ignored(
    dane, pipeline_factory, ca, unsigned
) -> None:
    """Not authenticated (no AD): the TLSA record itself, or the host's address records,
    in which case the TLSA records are not even looked up (RFC 7672 §2.2)."""
    domain = dane(signed_host=unsigned != "host")
    pipeline = start(pipeline_factory, server_context(ca, domain.mx))
    domain.publish(pipeline, "3 1 1 " + "ab" * 32, signed=False)  # matches nothing
    domain.send(pipeline)
    [received] = delivered(pipeline)
    assert received.tls  # opportunistic, as without DANE
    delivery = pipeline.process("delivery")
    assert delivery.metric(SESSIONS, policy="opportunistic", result="unverified") == 1
    assert delivery.metric(LOOKUPS, result="insecure") >= 1
    looked_up = pipeline.dns.query_count(domain.tlsa_name(pipeline), "TLSA")
    assert looked_up == (0 if unsigned == "host" else 1)


@pytest.mark.parametrize("anchor", ["2 0 1 on the intermediate", "2 1 1 on the intermediate",
                                    "2 0 0 on the root, which is not sent"])  # fmt: skip
def test_a_dane_ta_record_on_the_issuing_ca_delivers(dane, pipeline_factory, anchor) -> None:
    domain = dane()
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert(domain.mx)
    pipeline = start(pipeline_factory, leaf_context(leaf))  # sends the leaf and intermediate
    usage, selector, matching = (int(field) for field in anchor.split()[:3])
    ca_der = (
        der_chain(leaf)[1]
        if anchor.endswith("intermediate")
        else ssl.PEM_cert_to_DER_cert(root.cert_pem.bytes().decode())
    )
    domain.publish(pipeline, tlsa_text(usage, selector, matching, ca_der))
    domain.send(pipeline)
    [received] = delivered(pipeline)
    assert received.tls
    assert pipeline.process("delivery").metric(SESSIONS, policy="dane", result="verified") == 1


def test_with_dane_off_a_mismatching_authenticated_record_changes_nothing(
    dane, pipeline_factory, ca
) -> None:
    domain = dane()
    pipeline = start(pipeline_factory, server_context(ca, domain.mx), enabled=False)
    domain.publish(pipeline, "3 1 1 " + "ab" * 32)
    domain.send(pipeline)
    [received] = delivered(pipeline)
    assert received.tls
    delivery = pipeline.process("delivery")
    assert delivery.metric(SESSIONS, policy="opportunistic", result="unverified") == 1
    assert pipeline.dns.query_count(domain.tlsa_name(pipeline), "TLSA") == 0


def test_a_failed_tlsa_lookup_makes_the_host_unusable(dane, pipeline_factory, ca) -> None:
    """RFC 7672 §2.1.1: SERVFAIL (a validating resolver's answer for bogus data) for a
    secure host's TLSA records: no connection at all, the mail waits."""
    domain = dane()
    pipeline = start(pipeline_factory, server_context(ca, domain.mx))
    pipeline.dns.fail(domain.tlsa_name(pipeline) + ".")
    domain.send(pipeline)
    logs = deferred(pipeline)
    assert f"TLSA lookup for {domain.mx} failed" in logs
    delivery = pipeline.process("delivery")
    assert delivery.metric(LOOKUPS, result="failed") >= 1
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="yes") == 0
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="no") == 0


def test_only_unusable_records_mean_tls_without_authentication(dane, pipeline_factory, ca) -> None:
    """PKIX-EE(1) is unusable for SMTP (RFC 7672 §3.1.3); even matching, it authenticates
    nothing, but TLSA records there are, so TLS is required (§2.2)."""
    domain = dane()
    leaf = trustme.CA().issue_cert("anything.example")
    pipeline = start(pipeline_factory, leaf_context(leaf))
    domain.publish(pipeline, tlsa_text(1, 1, 1, der_chain(leaf)[0]))
    domain.send(pipeline)
    [received] = delivered(pipeline)
    assert received.tls
    assert pipeline.process("delivery").metric(SESSIONS, policy="dane", result="unverified") == 1


def test_a_pooled_session_not_dane_verified_never_carries_dane_mail(
    dane, pipeline_factory, ca
) -> None:
    """alpha.test's MX has the same address as the DANE domain's: the same pool entry."""
    domain = dane()
    leaf = ca.issue_cert(domain.mx)
    pipeline = start(pipeline_factory, leaf_context(leaf))
    domain.publish(pipeline, tlsa_text(3, 0, 1, der_chain(leaf)[0]))
    pipeline.send("app@sender.test", ["first@alpha.test"], message("opportunistic first"))
    delivered(pipeline)
    domain.send(pipeline, "then-dane")
    delivered(pipeline, 2)
    delivery = pipeline.process("delivery")
    assert delivery.metric(SESSIONS, policy="opportunistic", result="unverified") == 1
    assert delivery.metric(SESSIONS, policy="dane", result="verified") == 1
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="yes") == 2


@pytest.fixture
def sts_domain(dns_server, ca):
    made: list[Sts] = []

    def make() -> Sts:
        made.append(Sts(dns_server, ca))
        dns_server.sign(f"{made[-1].domain}.", f"{made[-1].mx}.")
        return made[-1]

    yield make
    for one in made:
        one.server.stop()


@pytest.mark.parametrize("case", ["tlsa matches, web pki fails", "web pki passes, tlsa fails"])
def test_dane_wins_over_an_mta_sts_enforce_policy(
    sts_domain, pipeline_factory, ca, ca_file, case
) -> None:
    """RFC 8461 §2: MTA-STS never overrides DANE, neither to pass nor to fail."""
    domain = sts_domain()
    domain.server.serve(domain.domain, sts_policy("enforce", domain.mx))
    signer = trustme.CA() if case.startswith("tlsa matches") else ca
    leaf = signer.issue_cert(domain.mx)
    pipeline = domain.start_pipeline(
        pipeline_factory, ca_file, leaf_context(leaf), dane={"enabled": True}
    )
    presented = der_chain(leaf)[0]
    other = der_chain(ca.issue_cert(domain.mx))[0]
    good = presented if case.startswith("tlsa matches") else other
    name = f"_{pipeline.sink.port}._tcp.{domain.mx}."
    pipeline.dns.add(name, "TLSA", tlsa_text(3, 1, 1, good))
    pipeline.dns.sign(name)
    domain.send(pipeline)
    delivery = pipeline.process("delivery")
    if case.startswith("tlsa matches"):
        delivered(pipeline)
        assert delivery.metric(SESSIONS, policy="dane", result="verified") == 1
    else:
        assert "no TLSA record matches" in deferred(pipeline)
        assert delivery.metric(SESSIONS, policy="dane", result="failed") >= 1
    assert delivery.metric(SESSIONS, policy="mta-sts") == 0
    assert delivery.metric("mailyard_delivery_mta_sts_fetches_total", result="ok") == 1
