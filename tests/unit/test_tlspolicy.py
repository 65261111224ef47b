"""Which TLS a destination gets, what a session's TLS was, which pooled session may carry it."""

from __future__ import annotations

import pytest

from mailyard.config import ConfigError, load_settings
from mailyard.delivery.attempt import suitable_for
from mailyard.delivery.outcome import RecipientOutcome
from mailyard.delivery.routes import Route, Smarthost
from mailyard.delivery.smtp import SmtpSession
from mailyard.delivery.tlspolicy import TlsMode, TlsPolicies, TlsSummary
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


def session(*, mx: str = "mx.example.com", verified: bool = False, user: str = "") -> SmtpSession:
    # No streams: which session suits a route is decided without a socket.
    pooled = SmtpSession(None, None, mx, "192.0.2.1", 25, 30.0)  # type: ignore[arg-type]
    pooled.verified = verified
    pooled.authenticated_as = user
    return pooled


def route(mode: TlsMode, smarthost: Smarthost | None = None) -> Route:
    return Route([], mode, smarthost)


def test_a_destination_that_verifies_takes_only_a_session_verified_for_that_host():
    suits = suitable_for("mx.example.com", route(TlsMode.VERIFY))
    assert suits(session(verified=True))
    assert not suits(session(verified=False))
    # The same address, verified under another MX name, is not verified for this one.
    assert not suits(session(mx="mx.other.net", verified=True))


def test_opportunistic_and_none_take_any_session_without_a_login():
    for mode in (TlsMode.OPPORTUNISTIC, TlsMode.NONE):
        suits = suitable_for("mx.example.com", route(mode))
        assert suits(session())
        assert suits(session(verified=True))
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
