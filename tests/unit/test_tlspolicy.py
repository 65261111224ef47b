"""Which TLS a destination gets, what a session's TLS was, which pooled session may carry it."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.config import ConfigError, load_settings
from mailyard.delivery.attempt import suitable_for
from mailyard.delivery.dane import Tlsa, TlsaRecord
from mailyard.delivery.outcome import RecipientOutcome
from mailyard.delivery.resolver import MailHost
from mailyard.delivery.routes import Route, Router, Smarthost, with_tlsa
from mailyard.delivery.smtp import SmtpSession
from mailyard.delivery.tlspolicy import TlsMode, TlsPolicies, TlsSummary, Verification
from mailyard.delivery.tlsresult import PolicyType, ReportedPolicy
from mailyard.reply import Reply

POLICIES = TlsPolicies(
    TlsMode.OPPORTUNISTIC,
    {
        "example.com": TlsMode.VERIFY,
        ".example.com": TlsMode.NONE,
        ".deep.example.com": TlsMode.VERIFY,
        "plain.test": TlsMode.NONE,
    },
)


@pytest.mark.parametrize(
    ("domain", "mode"),
    [
        ("example.com", TlsMode.VERIFY),  # the domain itself
        ("EXAMPLE.com.", TlsMode.VERIFY),  # case and the root dot do not matter
        ("sub.example.com", TlsMode.NONE),  # ".example.com": subdomains only
        ("a.deep.example.com", TlsMode.VERIFY),  # the nearest parent wins
        ("deep.example.com", TlsMode.NONE),  # ".deep.example.com" is below it
        ("plain.test", TlsMode.NONE),
        ("sub.plain.test", TlsMode.OPPORTUNISTIC),  # no dot: that domain only
        ("other.org", TlsMode.OPPORTUNISTIC),  # delivery.tls
    ],
)
def test_mode_for(domain, mode):
    assert POLICIES.mode_for(domain) is mode


@pytest.mark.parametrize(
    ("summary", "result"),
    [
        (TlsSummary(TlsMode.VERIFY, "TLSv1.3", "TLS_AES_256_GCM_SHA384", True), "verified"),
        (TlsSummary(TlsMode.OPPORTUNISTIC, "TLSv1.2", "ECDHE-RSA-AES128", False), "unverified"),
        (TlsSummary(TlsMode.OPPORTUNISTIC), "clear"),
    ],
)
def test_summary_result(summary, result):
    assert summary.result == result


def test_the_event_carries_the_session_tls():
    tls = TlsSummary(TlsMode.VERIFY, "TLSv1.3", "TLS_AES_128_GCM_SHA256", True)
    result = RecipientOutcome("a@example.com", Reply(250, "2.0.0", "ok"), "mx", 0.1, tls).to_pb()
    assert (result.tls.policy, result.tls.version, result.tls.verified) == (
        "verify",
        "TLSv1.3",
        True,
    )
    unreached = RecipientOutcome("a@example.com", Reply(451, "4.4.1", "no host")).to_pb()
    assert not unreached.HasField("tls")


def session(
    *,
    mx: str = "mx.example.com",
    verification: Verification = Verification.NONE,
    tls: bool | None = None,
    user: str = "",
) -> SmtpSession:
    # No streams: which session suits a route is decided without a socket.
    pooled = SmtpSession(None, None, mx, "192.0.2.1", 25, 30.0)  # type: ignore[arg-type]
    pooled.tls = verification is not Verification.NONE if tls is None else tls
    pooled.verification = verification
    pooled.authenticated_as = user
    return pooled


WEBPKI = Verification.WEBPKI


def route(mode: TlsMode, smarthost: Smarthost | None = None) -> Route:
    return Route([], mode, smarthost)


def test_a_destination_that_verifies_takes_only_a_session_verified_for_that_host():
    suits = suitable_for("mx.example.com", route(TlsMode.VERIFY))
    assert suits(session(verification=WEBPKI))
    assert not suits(session(tls=True))
    # The same address, verified under another MX name, is not verified for this one.
    assert not suits(session(mx="mx.other.net", verification=WEBPKI))


def test_opportunistic_and_none_take_any_session_without_a_login():
    for mode in (TlsMode.OPPORTUNISTIC, TlsMode.NONE):
        suits = suitable_for("mx.example.com", route(mode))
        assert suits(session())
        assert suits(session(verification=WEBPKI))
        assert suits(session(verification=Verification.DANE))
        assert not suits(session(user="relay-user"))  # a relay's session stays the relay's


def test_the_smarthost_takes_only_a_session_logged_in_as_its_user():
    relay = Smarthost("relay.example.net", 587, username="app")
    suits = suitable_for("relay.example.net", route(TlsMode.OPPORTUNISTIC, relay))
    assert suits(session(user="app"))
    assert not suits(session())
    assert not suits(session(user="someone-else"))


def test_tls_policies_and_smarthost_login_are_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILYARD_HOSTNAME", "env.example")
    good = tmp_path / "good.yaml"
    good.write_text(
        "delivery:\n"
        "  tls: verify\n"
        "  tls_policies: {Example.COM: none, .example.org: verify}\n"
        "  smarthost: {host: relay.test, username: app, password_file: /run/pw}\n"
    )
    delivery = load_settings(good).delivery
    assert delivery.tls_policies == {"example.com": "none", ".example.org": "verify"}
    assert delivery.smarthost is not None
    assert delivery.smarthost.tls == "opportunistic"

    for text, key in [
        ("delivery: {tls_policies: {example.com: sometimes}}", "delivery.tls_policies"),
        ("delivery: {tls_policies: {'bad domain': verify}}", "delivery.tls_policies"),
        ("delivery: {smarthost: {host: relay.test, username: app}}", "delivery.smarthost"),
        ("delivery: {smarthost: {host: relay.test, tls: dane}}", "delivery.smarthost.tls"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_settings(bad)


# --- DANE: which routes it may change, what it changes them to, which sessions suit ---

MX = "mx.example.com"
RECORD = TlsaRecord(3, 1, 1, bytes(32))
TLSA = Tlsa(MX, "smtp.provider.example", (RECORD,))
STS = ReportedPolicy(PolicyType.STS, "example.com", ("version: STSv1",), (MX,))


def test_dane_replaces_whatever_tls_the_route_had_mta_sts_included():
    for before in (
        Route([], TlsMode.VERIFY, policy="mta-sts", reported=STS, dane=True),
        Route([], TlsMode.OPPORTUNISTIC, dane=True),
    ):
        after = with_tlsa(before, TLSA)
        assert (after.tls, after.policy_name, after.tlsa) == (TlsMode.DANE, "dane", TLSA)
        # TLSRPT names a DANE policy by its TLSA base domain (RFC 8460 §3).
        assert after.reported == ReportedPolicy(
            PolicyType.TLSA, "smtp.provider.example", ("3 1 1 " + "00" * 32,)
        )


def test_a_host_without_tlsa_keeps_the_route_as_it_was():
    before = Route([], TlsMode.VERIFY, policy="mta-sts", reported=STS, dane=True)
    assert with_tlsa(before, None) is before


class FakeResolver:
    """Answers every domain with one DNSSEC-secure host: no DNS, no socket."""

    async def route(self, domain: str) -> list[MailHost]:
        return [MailHost(MX, ("192.0.2.1",), secure=True)]

    async def host(self, name: str, port: int) -> MailHost:
        return MailHost(name, ("192.0.2.9",), port)


class FakeDane:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def tlsa(self, host: MailHost) -> Tlsa | None:
        self.asked.append(host.name)
        return TLSA


def routed(router: Router, domain: str) -> Route:
    async def run() -> Route:
        route = await router.route(domain)
        return await router.for_host(route, route.hosts[0])

    return asyncio.run(run())


def test_tls_policies_and_the_smarthost_win_over_dane():
    dane = FakeDane()
    router = Router(
        FakeResolver(),  # type: ignore[arg-type]
        smarthost=Smarthost("relay.example.net", 587, frozenset({"relayed.example"})),
        tls=TlsPolicies(TlsMode.OPPORTUNISTIC, {"partner.example": TlsMode.VERIFY}),
        dane=dane,  # type: ignore[arg-type]
    )
    assert routed(router, "partner.example").tls is TlsMode.VERIFY
    assert routed(router, "relayed.example").tls is TlsMode.OPPORTUNISTIC
    assert dane.asked == []  # not even looked up
    assert routed(router, "anyone.example").tls is TlsMode.DANE
    assert dane.asked == [MX]


def test_without_dane_no_host_is_looked_up():
    router = Router(FakeResolver())  # type: ignore[arg-type]
    assert routed(router, "anyone.example") == Route([MailHost(MX, ("192.0.2.1",), secure=True)],
                                                     TlsMode.OPPORTUNISTIC)  # fmt: skip


def test_a_dane_route_takes_only_a_session_dane_verified_for_that_host():
    suits = suitable_for(MX, with_tlsa(Route([], TlsMode.OPPORTUNISTIC), TLSA))
    assert suits(session(verification=Verification.DANE))
    assert not suits(session(verification=WEBPKI))  # a CA's word is not the TLSA records'
    assert not suits(session(tls=True))
    assert not suits(session(mx="mx.other.net", verification=Verification.DANE))
    # And the other way round: DANE-EE checks no name, so it is no Web PKI verification.
    assert not suitable_for(MX, route(TlsMode.VERIFY))(session(verification=Verification.DANE))


def test_only_unusable_tlsa_records_take_any_encrypted_session_but_never_a_clear_one():
    unusable = Tlsa(MX, MX, (TlsaRecord(1, 1, 1, bytes(32)),))  # PKIX-EE: unusable for SMTP
    suits = suitable_for(MX, with_tlsa(Route([], TlsMode.OPPORTUNISTIC), unusable))
    assert suits(session(tls=True))
    assert suits(session(verification=WEBPKI))
    assert not suits(session(tls=False))


def test_dane_is_off_by_default_and_its_key_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILYARD_HOSTNAME", "env.example")
    path = tmp_path / "mailyard.yaml"
    path.write_text("delivery: {}\n")
    assert load_settings(path).delivery.dane.enabled is False
    path.write_text("delivery: {dane: {enabled: true}, nameservers: ['127.0.0.1:53']}\n")
    assert load_settings(path).delivery.dane.enabled is True
    path.write_text("delivery: {dane: {enable: true}}\n")
    with pytest.raises(ConfigError, match=r"delivery\.dane\.enable"):
        load_settings(path)
