"""SMTP TLS Reporting (RFC 8460) end to end: sessions to real sinks with certificates from
the test CA, the records in the test DNS server, reports POSTed to a real HTTPS server or
mailed through the pipeline to a sink, with an interval of seconds.

Each test has a domain of its own (``rptN.test``: MX ``mx.rptN.test`` at the sinks'
127.0.0.2, and ``mta-sts.`` and ``tlsrpt.`` names at the HTTPS server on the same
address), so the records one test publishes reach no other.
"""

from __future__ import annotations

import gzip
import itertools
import json
import time
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dkim
import pytest
import trustme

from mailyard.queue import dkimkeys
from tests.support import dns_server as dns_support
from tests.support.certificates import server_context
from tests.support.https_server import PolicyServer
from tests.support.pipeline import ALPHA, Pipeline, message
from tests.support.processes import free_port
from tests.support.smtp_sink import Received

pytestmark = pytest.mark.adapters("embedded")  # delivery's logic; the spool is quicker

INTERVAL = 2.0  # seconds; reports go out within a tenth of it after each interval
CONTACT = "tlsrpt@sender.test"  # the sinks take sender.test's mail too
_numbers = itertools.count(1)


def sts_policy(mode: str, *mx: str) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), "max_age: 86400"]
    return "\r\n".join(lines) + "\r\n"


class Domain:
    """One test's destination domain, its DNS records and its HTTPS server."""

    def __init__(self, dns: dns_support.TestDnsServer, ca: trustme.CA) -> None:
        self.dns = dns
        self.domain = f"rpt{next(_numbers)}.test"
        self.mx = f"mx.{self.domain}"
        dns.add(f"{self.domain}.", "MX", f"10 {self.mx}.")
        dns.add(f"{self.mx}.", "A", ALPHA)
        for name in ("mta-sts", "tlsrpt"):
            dns.add(f"{name}.{self.domain}.", "A", ALPHA)
        context = server_context(ca, f"mta-sts.{self.domain}", f"tlsrpt.{self.domain}")
        self.server = PolicyServer(ALPHA, free_port(ALPHA), context).start()

    @property
    def report_url(self) -> str:
        return f"https://tlsrpt.{self.domain}:{self.server.port}/v1/tlsrpt"

    def enforce(self, mode: str = "enforce", **served: Any) -> None:
        """An MTA-STS policy (enforce, unless told) that lists the domain's MX."""
        self.dns.add(f"_mta-sts.{self.domain}.", "TXT", '"v=STSv1; id=20261201T000000"')
        self.server.serve(self.domain, sts_policy(mode, self.mx), **served)

    def publish(self, *rua: str) -> None:
        self.dns.add(f"_smtp._tls.{self.domain}.", "TXT", f'"v=TLSRPTv1; rua={",".join(rua)}"')

    def send(self, pipeline: Pipeline, local: str = "r") -> None:
        code, text = pipeline.send("app@sender.test", [f"{local}@{self.domain}"], message(local))
        assert code == 250, text


@pytest.fixture
def domain(dns_server, ca):
    made: list[Domain] = []

    def make() -> Domain:
        made.append(Domain(dns_server, ca))
        return made[-1]

    yield make
    for one in made:
        one.server.stop()


def start(
    pipeline_factory,
    ca_file: Path,
    sink_tls,
    domain: Domain,
    *,
    tlsrpt: dict[str, Any] | None = None,
    dkim_key: Path | None = None,
    **delivery: Any,
) -> Pipeline:
    reporting = {
        "enabled": True,
        "interval": f"{INTERVAL}s",
        "organization": "Mailyard Tests",
        "contact": CONTACT,
    }
    overrides: dict[str, Any] = {
        "delivery": {
            "tls_ca_file": str(ca_file),
            "mta_sts": {"https_port": domain.server.port},
            "tlsrpt": {**reporting, **(tlsrpt or {})},
            **delivery,
        },
        # One attempt per message: a deferred one waits an hour, so each test
        # knows how many sessions there were.
        "queue": {"retry_delays": ["1h"]},
    }
    if dkim_key is not None:
        overrides["dkim"] = {
            "keys": [{"domain": "sender.test", "selector": "s1", "key_file": str(dkim_key)}]
        }
    return pipeline_factory(sink_tls=sink_tls, overrides=overrides)


def decoded(compressed: bytes) -> dict[str, Any]:
    assert compressed[:2] == b"\x1f\x8b", "not gzip"
    return json.loads(gzip.decompress(compressed))


def reports_in(received: Received) -> tuple[EmailMessage, dict[str, Any]]:
    """A report mail the sink got: the message, and the JSON of its attachment."""
    mail = message_from_bytes(received.content, policy=default_policy)
    assert isinstance(mail, EmailMessage)
    [attachment] = [part for part in mail.iter_attachments()]
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    return mail, decoded(attachment.get_content())


def to(address: str):
    return lambda m: m.recipients == (address,)


def test_certificate_failures_under_mta_sts_are_posted_to_the_https_rua(
    domain, pipeline_factory, ca, ca_file
) -> None:
    rpt = domain()
    rpt.enforce()
    rpt.publish(rpt.report_url)
    # The MX presents a certificate from the trusted CA, for another name.
    pipeline = start(pipeline_factory, ca_file, server_context(ca, "other.test"), rpt)
    rpt.send(pipeline)
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 20, outcome="deferred")
    [posted] = rpt.server.wait_for_posts(1, 20)
    assert posted.host == f"tlsrpt.{rpt.domain}"
    assert posted.path == "/v1/tlsrpt"
    assert posted.content_type == "application/tlsrpt+gzip"
    report = decoded(posted.body)
    assert report["organization-name"] == "Mailyard Tests"
    assert report["contact-info"] == CONTACT
    assert report["report-id"].endswith("@mx.mailyard.test")
    [policy] = report["policies"]
    assert policy["policy"] == {
        "policy-type": "sts",
        "policy-string": ["version: STSv1", "mode: enforce", f"mx: {rpt.mx}", "max_age: 86400"],
        "policy-domain": rpt.domain,
        "mx-host": [rpt.mx],
    }
    failed = delivery.metric(
        "mailyard_delivery_tls_sessions_total", policy="mta-sts", result="failed"
    )
    assert failed == 1
    assert policy["summary"] == {
        "total-successful-session-count": 0,
        "total-failure-session-count": 1,
    }
    [detail] = policy["failure-details"]
    assert detail["result-type"] == "certificate-host-mismatch"
    assert detail["receiving-mx-hostname"] == rpt.mx
    assert detail["receiving-ip"] == ALPHA
    assert detail["failed-session-count"] == 1
    assert "failure-reason-code" in detail
    time.sleep(2.5 * INTERVAL)  # the next intervals counted nothing: no more reports
    assert len(rpt.server.posts()) == 1
    assert (
        delivery.metric("mailyard_delivery_tlsrpt_reports_total", method="https", result="sent")
        == 1
    )


def test_under_a_testing_policy_the_certificate_is_checked_reported_and_not_held_against_it(
    domain, pipeline_factory, ca, ca_file
) -> None:
    """RFC 8461 §5: mode testing delivers as without a policy; RFC 8460 reports what an
    enforcing sender would have refused."""
    rpt = domain()
    rpt.enforce("testing")
    rpt.publish(rpt.report_url)
    pipeline = start(pipeline_factory, ca_file, server_context(ca, "other.test"), rpt)
    rpt.send(pipeline)
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received.tls
    [posted] = rpt.server.wait_for_posts(1, 20)
    [policy] = decoded(posted.body)["policies"]
    assert policy["policy"]["policy-type"] == "sts"
    assert "mode: testing" in policy["policy"]["policy-string"]
    assert policy["summary"] == {
        "total-successful-session-count": 0,
        "total-failure-session-count": 1,
    }
    assert policy["failure-details"][0]["result-type"] == "certificate-host-mismatch"


def test_a_policy_that_cannot_be_fetched_is_reported_beside_the_sessions_without_it(
    domain, pipeline_factory, ca, ca_file
) -> None:
    rpt = domain()
    rpt.enforce(status=404)
    rpt.publish(rpt.report_url)
    pipeline = start(pipeline_factory, ca_file, server_context(ca, rpt.mx), rpt)
    rpt.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message, as without a policy")
    [posted] = rpt.server.wait_for_posts(1, 20)
    by_type = {p["policy"]["policy-type"]: p for p in decoded(posted.body)["policies"]}
    assert set(by_type) == {"sts", "no-policy-found"}
    [fetch] = by_type["sts"]["failure-details"]
    assert fetch["result-type"] == "sts-policy-fetch-error"
    assert "HTTP 404" in fetch["failure-reason-code"]
    assert by_type["no-policy-found"]["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 0,
    }


@pytest.mark.adapters("embedded", "rabbitmq")
def test_successful_sessions_are_mailed_through_the_pipeline_to_the_mailto_rua(
    domain, pipeline_factory, ca, ca_file, tmp_path
) -> None:
    rpt = domain()
    rpt.publish(f"mailto:{CONTACT}")  # no MTA-STS: no-policy-found
    key = tmp_path / "sender.test.pem"
    dkimkeys.write_key_file(key, dkimkeys.generate("ed25519"))
    record = dkimkeys.load_key("test", key).record.encode()
    pipeline = start(
        pipeline_factory,
        ca_file,
        server_context(ca, rpt.mx),
        rpt,
        dkim_key=key,  # the report's From: is the contact: its domain's key signs it
        connection_reuse=False,  # one session per message
    )
    for n in range(3):
        rpt.send(pipeline, f"r{n}")
    pipeline.sink.wait_for(
        lambda m: len([x for x in m if x.recipients != (CONTACT,)]) == 3, 20, "the messages"
    )

    def successes(messages: list[Received]) -> int:
        return sum(
            reports_in(m)[1]["policies"][0]["summary"]["total-successful-session-count"]
            for m in messages
            if m.recipients == (CONTACT,)
        )

    pipeline.sink.wait_for(lambda m: successes(m) == 3, 30, "reports of 3 successful sessions")
    reports = pipeline.sink.received(to(CONTACT))
    for received in reports:
        mail, report = reports_in(received)
        assert received.mail_from in ("", "<>")  # the null sender: no DSN ever comes back
        assert mail.get_content_type() == "multipart/report"
        assert mail.get_param("report-type") == "tlsrpt"
        assert mail["TLS-Report-Domain"] == rpt.domain
        assert mail["TLS-Report-Submitter"] == "sender.test"
        assert f"Report Domain: {rpt.domain} Submitter: sender.test" in " ".join(
            mail["Subject"].split()
        )
        [attachment] = list(mail.iter_attachments())
        assert attachment.get_filename().startswith(f"sender.test!{rpt.domain}!")
        [policy] = report["policies"]
        assert policy["policy"] == {"policy-type": "no-policy-found", "policy-domain": rpt.domain}
        assert policy["summary"]["total-failure-session-count"] == 0
        assert "failure-details" not in policy
        assert dkim.verify(received.content, dnsfunc=lambda name, timeout=5: record)
        signed = mail["DKIM-Signature"].replace(" ", "").replace("\r\n", "")
        assert "tls-report-domain:tls-report-submitter" in signed
    delivery = pipeline.process("delivery")
    assert delivery.metric("mailyard_delivery_tlsrpt_sessions_total", result="success") == 3
    assert delivery.metric(
        "mailyard_delivery_tlsrpt_reports_total", method="mailto", result="sent"
    ) == len(reports)


def test_the_report_of_a_domain_whose_tls_fails_is_delivered_and_reports_nothing_more(
    domain, pipeline_factory, ca, ca_file
) -> None:
    """RFC 8460 §5.3: reports are delivered despite TLS failures, and their sessions are not
    counted: a report to the failing domain itself reaches it once, and makes no report."""
    rpt = domain()
    rpt.enforce()
    rpt.publish(f"mailto:tlsrpt@{rpt.domain}")
    pipeline = start(pipeline_factory, ca_file, server_context(ca, "other.test"), rpt)
    rpt.send(pipeline)
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the report")
    assert received.recipients == (f"tlsrpt@{rpt.domain}",)
    assert received.tls  # opportunistic: encrypted, the certificate not held against it
    _, report = reports_in(received)
    assert report["policies"][0]["summary"]["total-failure-session-count"] == 1
    time.sleep(3 * INTERVAL)
    assert len(pipeline.sink.received()) == 1, "the report's own session made a report"
    delivery = pipeline.process("delivery")
    assert delivery.metric("mailyard_delivery_tlsrpt_sessions_total", result="failure") == 1
    assert delivery.metric("mailyard_delivery_tlsrpt_sessions_total", result="success") == 0


def test_a_domain_without_a_tlsrpt_record_gets_no_report(
    domain, pipeline_factory, ca, ca_file
) -> None:
    rpt = domain()  # no _smtp._tls record
    pipeline = start(pipeline_factory, ca_file, server_context(ca, rpt.mx), rpt)
    rpt.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_tlsrpt_lookups_total", 1, 20, result="none")
    time.sleep(INTERVAL)
    assert delivery.metric("mailyard_delivery_tlsrpt_reports_total") == 0
    assert len(pipeline.sink.received()) == 1
    assert rpt.server.posts() == []


def test_reporting_switched_off_sends_nothing(domain, pipeline_factory, ca, ca_file) -> None:
    rpt = domain()
    rpt.publish(rpt.report_url, f"mailto:{CONTACT}")
    pipeline = start(
        pipeline_factory, ca_file, server_context(ca, rpt.mx), rpt, tlsrpt={"enabled": False}
    )
    rpt.send(pipeline)
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    time.sleep(3 * INTERVAL)
    assert rpt.server.posts() == []
    assert len(pipeline.sink.received()) == 1
    delivery = pipeline.process("delivery")
    assert delivery.metric("mailyard_delivery_tlsrpt_sessions_total") == 0
    assert delivery.metric("mailyard_delivery_tlsrpt_lookups_total") == 0
