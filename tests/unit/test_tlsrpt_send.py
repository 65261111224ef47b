"""The TLS reporter on the in-memory port: what it stores, counts and refuses — no sockets.

The TXT lookups are answered by a fake with the resolver's one method used
here; the HTTPS POST, the timer and the whole pipeline are in
tests/integration/test_tlsrpt.py, against real servers.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from ipaddress import ip_network
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailyard.broker import Publish, PublishError, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.config import TlsRptConfig
from mailyard.delivery.resolver import RouteError
from mailyard.delivery.safety import Safety
from mailyard.delivery.smtp import verifying_tls_context
from mailyard.delivery.tlsresult import ResultType
from mailyard.delivery.tlsrpt import no_policy
from mailyard.delivery.tlsrpt_send import TlsReporter
from mailyard.reply import Reply
from mailyard.v1 import message_pb2 as pb

START = datetime(2026, 12, 1, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


class FakeDns:
    """TXT answers by name; ``failing`` names get a SERVFAIL."""

    def __init__(self, records: dict[str, list[str]], failing: tuple[str, ...] = ()) -> None:
        self.records = records
        self.failing = failing
        self.asked: list[str] = []

    async def txt(self, name: str) -> tuple[list[str], float]:
        self.asked.append(name)
        if name in self.failing:
            raise RouteError(Reply(451, "4.4.3", f"DNS lookup of TXT {name} failed"), "servfail")
        return self.records.get(name, []), 60.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def deltas() -> Any:
    """``deltas()`` → how much each TLSRPT counter grew since the test began."""
    names = {
        "reports": ("mailyard_delivery_tlsrpt_reports_total", ("method", "result")),
        "lookups": ("mailyard_delivery_tlsrpt_lookups_total", ("result",)),
        "sessions": ("mailyard_delivery_tlsrpt_sessions_total", ("result",)),
        "dropped": ("mailyard_delivery_tlsrpt_dropped_total", ("kind",)),
    }

    def read() -> dict[tuple[str, tuple[str, ...]], float]:
        values = {}
        for family in REGISTRY.collect():
            for sample in family.samples:
                for short, (name, keys) in names.items():
                    if sample.name == name:
                        values[(short, tuple(sample.labels[k] for k in keys))] = sample.value
        return values

    before = read()
    return lambda: {
        key: value - before.get(key, 0.0)
        for key, value in read().items()
        if value != before.get(key, 0.0)
    }


def reporter(
    dns: FakeDns, broker: MemoryBroker | None = None, clock: Clock | None = None, **config: Any
) -> TlsReporter:
    settings = TlsRptConfig(
        enabled=True, organization="Example Inc.", contact="tlsrpt@example.com", **config
    )
    context = verifying_tls_context(None)
    return TlsReporter(
        settings,
        hostname="mx.mailyard.example",
        resolver=dns,
        broker=broker or MemoryBroker(),
        safety=Safety.build([ip_network("169.254.0.0/16")], "mx.mailyard.example"),
        tls_context=lambda: context,
        clock=clock or Clock(),
    )


def stored_reports(broker: MemoryBroker) -> list[pb.AcceptedMessage]:
    found = []
    for output in broker.stored:
        assert isinstance(output, Publish)
        assert output.queue is QueueName.INBOUND
        found += output.items
    return found


async def test_a_domain_with_a_mailto_record_gets_its_report_as_mail_on_inbound(deltas) -> None:
    dns = FakeDns({"_smtp._tls.example.net": ["v=TLSRPTv1; rua=mailto:tlsrpt@example.net"]})
    broker, clock = MemoryBroker(), Clock()
    tlsrpt = reporter(dns, broker, clock)
    for _ in range(3):
        tlsrpt.success(no_policy("example.net"))
    tlsrpt.failure(
        no_policy("example.net"),
        ResultType.STARTTLS_NOT_SUPPORTED,
        mx="mx.example.net",
        address="192.0.2.1",
    )
    clock.now = LATER
    await tlsrpt.stop()  # the interval under way is sent at once
    [accepted] = stored_reports(broker)
    assert accepted.origin == pb.ORIGIN_TLSRPT
    assert accepted.mail_from == ""
    assert list(accepted.recipients) == ["tlsrpt@example.net"]
    mail = message_from_bytes(accepted.content, policy=default_policy)
    assert mail["TLS-Report-Domain"] == "example.net"
    _, attachment = mail.iter_parts()
    report = json.loads(gzip.decompress(attachment.get_content()))
    assert report["date-range"] == {
        "start-datetime": "2026-12-01T00:00:00Z",
        "end-datetime": "2026-12-01T09:30:00Z",
    }
    assert report["report-id"].startswith(f"20261201T000000Z.{tlsrpt.replica}.")
    assert report["policies"][0]["summary"] == {
        "total-successful-session-count": 3,
        "total-failure-session-count": 1,
    }
    assert deltas() == {
        ("sessions", ("success",)): 3,
        ("sessions", ("failure",)): 1,
        ("lookups", ("found",)): 1,
        ("reports", ("mailto", "sent")): 1,
    }


async def test_no_record_no_report(deltas) -> None:
    dns = FakeDns({"_smtp._tls.other.example": ["v=TLSRPTv1; rua=mailto:r@other.example"]})
    broker = MemoryBroker()
    tlsrpt = reporter(dns, broker)
    tlsrpt.success(no_policy("example.net"))
    await tlsrpt.stop()
    assert dns.asked == ["_smtp._tls.example.net"]
    assert broker.stored == []
    assert deltas() == {("sessions", ("success",)): 1, ("lookups", ("none",)): 1}


async def test_nothing_counted_nothing_looked_up() -> None:
    dns = FakeDns({})
    await reporter(dns).stop()
    assert dns.asked == []


async def test_a_failed_lookup_loses_that_report_and_says_so(deltas) -> None:
    dns = FakeDns(
        {"_smtp._tls.b.example": ["v=TLSRPTv1; rua=mailto:r@b.example"]},
        failing=("_smtp._tls.a.example",),
    )
    broker = MemoryBroker()
    tlsrpt = reporter(dns, broker)
    tlsrpt.success(no_policy("a.example"))
    tlsrpt.success(no_policy("b.example"))
    await tlsrpt.stop()
    [accepted] = stored_reports(broker)  # the other domain's report still goes
    assert list(accepted.recipients) == ["r@b.example"]
    grown = deltas()
    assert grown[("lookups", ("failed",))] == 1
    assert grown[("lookups", ("found",))] == 1


async def test_a_broker_that_does_not_take_the_mail_is_a_failed_report(deltas) -> None:
    dns = FakeDns({"_smtp._tls.example.net": ["v=TLSRPTv1; rua=mailto:r@example.net"]})
    broker = MemoryBroker()
    broker.fail_with = PublishError("no confirm")
    tlsrpt = reporter(dns, broker)
    tlsrpt.success(no_policy("example.net"))
    await tlsrpt.stop()
    assert deltas()[("reports", ("mailto", "failed"))] == 1


@pytest.mark.parametrize(
    "url",
    ["https://169.254.169.254/latest/meta-data/", "https://[::ffff:169.254.169.254]:8443/report"],
)
async def test_a_report_url_on_a_prohibited_network_is_never_connected_to(
    deltas, caplog, url: str
) -> None:
    """A domain's record picks the URL: it must not reach the cloud's metadata service."""
    dns = FakeDns({"_smtp._tls.example.net": [f"v=TLSRPTv1; rua={url}"]})
    tlsrpt = reporter(dns)
    tlsrpt.success(no_policy("example.net"))
    await tlsrpt.stop()
    assert deltas()[("reports", ("https", "failed"))] == 1
    [refused] = [r for r in caplog.records if r.getMessage() == "TLS report not sent"]
    assert "is in delivery.prohibited_networks" in refused.reason  # not tried, refused


async def test_what_does_not_fit_is_counted_as_dropped(deltas) -> None:
    tlsrpt = reporter(FakeDns({}), max_domains=1, max_failure_details=1)
    tlsrpt.success(no_policy("a.example"))
    tlsrpt.success(no_policy("b.example"))  # no room for a second domain
    tlsrpt.failure(no_policy("a.example"), ResultType.CERTIFICATE_EXPIRED, address="192.0.2.1")
    tlsrpt.failure(no_policy("a.example"), ResultType.CERTIFICATE_EXPIRED, address="192.0.2.2")
    assert deltas() == {
        ("sessions", ("success",)): 1,
        ("sessions", ("failure",)): 2,  # both in the summary
        ("dropped", ("policy",)): 1,
        ("dropped", ("failure_detail",)): 1,
    }
