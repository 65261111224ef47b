"""Which TLSA records a host gets (RFC 7672 §2.2, §2.2.3), with a resolver that answers
from a table: no DNS, no socket."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from mailyard.delivery.dane import Tlsa, TlsaRecord
from mailyard.delivery.dane_lookup import DaneLookup
from mailyard.delivery.resolver import MailHost, RouteError, TlsaAnswer
from mailyard.delivery.smtp import HostUnusable
from mailyard.delivery.tlsresult import ResultType
from mailyard.reply import Reply

RECORD = TlsaRecord(3, 1, 1, bytes(32))
SECURE = TlsaAnswer((RECORD,), secure=True)
DENIED = TlsaAnswer((), secure=True)
FAILED = RouteError(Reply(451, "4.4.3", "DNS lookup of TLSA failed: NoNameservers"), "servfail")


class TableResolver:
    def __init__(self, answers: dict[str, TlsaAnswer | RouteError]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def tlsa(self, name: str) -> TlsaAnswer:
        self.asked.append(name)
        answer = self.answers.get(name, DENIED)
        if isinstance(answer, RouteError):
            raise answer
        return answer


def lookup(
    host: MailHost, answers: dict[str, TlsaAnswer | RouteError] | None = None
) -> tuple[Tlsa | None, list[str]]:
    """What DaneLookup finds for ``host``, and the names it asked; ``answers`` by base domain."""
    table = {f"_25._tcp.{name}": answer for name, answer in (answers or {}).items()}
    resolver = TableResolver(table)
    found = asyncio.run(DaneLookup(resolver, port=25).tlsa(host))  # type: ignore[arg-type]
    return found, resolver.asked


MX = MailHost("mx.example.com", ("192.0.2.1",), secure=True)
BEHIND_CNAME = MailHost("mx.example.com", ("192.0.2.1",), secure=True, canonical="smtp.host.net")


def test_a_secure_host_with_records_gets_them():
    found, asked = lookup(MX, {"mx.example.com": SECURE})
    assert found == Tlsa("mx.example.com", "mx.example.com", (RECORD,))
    assert asked == ["_25._tcp.mx.example.com"]


def test_a_host_whose_addresses_are_not_authenticated_is_not_even_looked_up():
    found, asked = lookup(MailHost("mx.example.com", ("192.0.2.1",)), {"mx.example.com": SECURE})
    assert (found, asked) == (None, [])


def counted(result: str) -> float:
    name = "mailyard_delivery_dane_lookups_total"
    return REGISTRY.get_sample_value(name, {"result": result}) or 0.0


def test_records_dnssec_does_not_vouch_for_do_not_count():
    before = counted("insecure")
    found, _ = lookup(MX, {"mx.example.com": TlsaAnswer((RECORD,), secure=False)})
    assert found is None
    assert counted("insecure") == before + 1


def test_behind_a_cname_the_target_is_asked_first_then_the_mx_name():
    found, asked = lookup(BEHIND_CNAME, {"smtp.host.net": SECURE})
    assert found is not None
    assert found.base_domain == "smtp.host.net"
    assert asked == ["_25._tcp.smtp.host.net"]
    found, asked = lookup(BEHIND_CNAME, {"mx.example.com": SECURE})  # none at the target
    assert found is not None
    assert found.base_domain == "mx.example.com"
    assert asked == ["_25._tcp.smtp.host.net", "_25._tcp.mx.example.com"]


def test_an_authenticated_denial_means_no_dane():
    assert lookup(BEHIND_CNAME) == (None, ["_25._tcp.smtp.host.net", "_25._tcp.mx.example.com"])


def test_a_failed_lookup_makes_the_host_unusable():
    before = counted("failed")
    with pytest.raises(HostUnusable) as unusable:
        lookup(MX, {"mx.example.com": FAILED})
    assert unusable.value.tls_failure is ResultType.DNSSEC_INVALID
    assert unusable.value.reply.status == "4.7.5"
    assert "mx.example.com" in unusable.value.reply.text
    assert counted("failed") == before + 1


def test_the_port_is_the_one_delivery_connects_to():
    resolver = TableResolver({"_2525._tcp.mx.example.com": SECURE})
    found = asyncio.run(DaneLookup(resolver, port=2525).tlsa(MX))  # type: ignore[arg-type]
    assert found is not None
