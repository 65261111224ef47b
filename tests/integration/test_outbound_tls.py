"""Verified outbound TLS (delivery.tls, tls_policies, tls_ca_file) and the smarthost's TLS + AUTH.

Real sinks on loopback with certificates from a CA the test makes; delivery
trusts it through ``delivery.tls_ca_file``. What arrives (and what never
does) is checked at the sink.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trustme

from mailyard.v1 import message_pb2 as pb
from tests.integration.test_events import subscribe, take
from tests.support.certificates import server_context
from tests.support.pipeline import Pipeline, message, wait_until
from tests.support.processes import free_port
from tests.support.smtp_sink import Sink

# Delivery's behaviour is the same on both adapters; the embedded one is quicker.
pytestmark = pytest.mark.adapters("embedded")

RELAY = "127.0.0.8"  # the smarthost's own address: not a host of the test zone


def tls_pipeline(pipeline_factory, ca_file: Path, sink_tls, **delivery) -> Pipeline:
    return pipeline_factory(
        sink_tls=sink_tls, overrides={"delivery": {"tls_ca_file": str(ca_file), **delivery}}
    )


def deferred(pipeline: Pipeline, count: int = 1) -> None:
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", count, 20, outcome="deferred")


def test_verify_delivers_over_a_certificate_valid_for_the_mx_name(
    pipeline_factory, ca, ca_file
) -> None:
    pipeline = tls_pipeline(
        pipeline_factory, ca_file, server_context(ca, "mx.alpha.test"), tls="verify"
    )
    code, _ = pipeline.send("app@sender.test", ["v@alpha.test"], message("verified"))
    assert code == 250
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received.tls
    delivery = pipeline.process("delivery")
    assert (
        delivery.metric("mailyard_delivery_tls_sessions_total", policy="verify", result="verified")
        == 1
    )


@pytest.mark.parametrize(
    ("issuer", "name"),
    [
        ("ours", "someone-else.test"),  # a certificate for another name
        ("stranger", "mx.alpha.test"),  # the right name, from a CA not in tls_ca_file
    ],
)
def test_verify_defers_a_certificate_it_cannot_trust_and_never_sends_in_clear(
    pipeline_factory, ca, ca_file, issuer, name
) -> None:
    signer = ca if issuer == "ours" else trustme.CA()
    pipeline = tls_pipeline(pipeline_factory, ca_file, server_context(signer, name), tls="verify")
    code, _ = pipeline.send("app@sender.test", ["v@alpha.test"], message(f"untrusted {name}"))
    assert code == 250
    deferred(pipeline)
    delivery = pipeline.process("delivery")
    assert (
        delivery.metric("mailyard_delivery_tls_sessions_total", policy="verify", result="failed")
        >= 1
    )
    time.sleep(0.5)
    assert pipeline.sink.received() == []
    assert "4.7.5" in delivery.logs()
    assert "mx.alpha.test" in delivery.logs()


def test_verify_defers_a_server_without_starttls(pipeline_factory, ca_file) -> None:
    pipeline = tls_pipeline(pipeline_factory, ca_file, None, tls="verify")
    code, _ = pipeline.send("app@sender.test", ["v@alpha.test"], message("no TLS"))
    assert code == 250
    deferred(pipeline)
    time.sleep(0.5)
    assert pipeline.sink.received() == []
    assert "4.7.4" in pipeline.process("delivery").logs()


def test_opportunistic_encrypts_without_checking_the_certificate(pipeline_factory, ca_file) -> None:
    stranger = trustme.CA()
    pipeline = tls_pipeline(pipeline_factory, ca_file, server_context(stranger, "elsewhere.test"))
    code, _ = pipeline.send("app@sender.test", ["o@alpha.test"], message("opportunistic"))
    assert code == 250
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received.tls
    delivery = pipeline.process("delivery")
    assert (
        delivery.metric(
            "mailyard_delivery_tls_sessions_total", policy="opportunistic", result="unverified"
        )
        == 1
    )


def test_tls_policies_apply_per_domain(pipeline_factory, ca_file) -> None:
    """alpha must verify (and cannot: no STARTTLS); beta goes in clear as before."""
    pipeline = tls_pipeline(pipeline_factory, ca_file, None, tls_policies={"alpha.test": "verify"})
    for recipient in ("a@alpha.test", "b@beta.test"):
        code, _ = pipeline.send("app@sender.test", [recipient], message(recipient))
        assert code == 250
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "beta's message")
    deferred(pipeline)
    time.sleep(0.5)
    assert [r.recipients for r in pipeline.sink.received()] == [("b@beta.test",)]


def test_a_pooled_unverified_session_never_carries_mail_that_needs_verification(
    pipeline_factory, ca, ca_file
) -> None:
    """alias.test's MX is alpha's host: the same address, so the same pool entry."""
    pipeline = tls_pipeline(
        pipeline_factory,
        ca_file,
        server_context(ca, "mx.alpha.test"),
        tls_policies={"alias.test": "verify"},
    )
    pipeline.send("app@sender.test", ["first@alpha.test"], message("opportunistic first"))
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "alpha's message")
    pipeline.send("app@sender.test", ["second@alias.test"], message("then verified"))
    pipeline.sink.wait_for(lambda m: len(m) == 2, 20, "alias's message")
    delivery = pipeline.process("delivery")
    assert (
        delivery.metric(
            "mailyard_delivery_tls_sessions_total", policy="opportunistic", result="unverified"
        )
        == 1
    )
    assert (
        delivery.metric("mailyard_delivery_tls_sessions_total", policy="verify", result="verified")
        == 1
    )
    assert delivery.metric("mailyard_delivery_sessions_opened_total", tls="yes") == 2


@pytest.mark.adapters("rabbitmq")
def test_the_delivered_event_says_how_the_session_was_protected(
    pipeline_factory, ca, ca_file
) -> None:
    pipeline = tls_pipeline(
        pipeline_factory, ca_file, server_context(ca, "mx.alpha.test"), tls="verify"
    )
    queue = subscribe(pipeline.prefix, ["delivered"])
    code, _ = pipeline.send("app@sender.test", ["e@alpha.test"], message("event"))
    assert code == 250
    events: list[pb.DeliveryEvent] = []
    wait_until(lambda: events.extend(take(queue)) or events, 20, "the delivered event")
    tls = events[0].results[0].tls
    assert tls.policy == "verify"
    assert tls.verified
    assert tls.version.startswith("TLSv1.")
    assert tls.cipher


@pytest.fixture
def relay(ca: trustme.CA):
    """Ask for it before ``pipeline_factory``: it must outlive delivery's pooled session."""
    sink = Sink(
        [RELAY],
        free_port(RELAY),
        tls_context=server_context(ca, RELAY),
        logins={"app": "s3cret"},
    ).start()
    yield sink
    sink.stop()


@pytest.fixture
def relay_without_tls():
    sink = Sink([RELAY], free_port(RELAY), logins={"app": "s3cret"}).start()
    yield sink
    sink.stop()


def through_relay(pipeline_factory, relay: Sink, ca_file: Path, password_file: Path, **extra):
    return pipeline_factory(
        overrides={
            "delivery": {
                "tls_ca_file": str(ca_file),
                "smarthost": {
                    "host": RELAY,
                    "port": relay.port,
                    "tls": "verify",
                    "username": "app",
                    "password_file": str(password_file),
                    **extra,
                },
            }
        }
    )


def test_the_smarthost_gets_mail_over_verified_tls_with_auth(
    relay, pipeline_factory, ca_file, tmp_path
) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")  # a Secret's file often ends in a newline
    pipeline = through_relay(pipeline_factory, relay, ca_file, password)
    code, _ = pipeline.send("app@sender.test", ["r@gamma.test"], message("relayed"))
    assert code == 250
    [received] = relay.wait_for(lambda m: len(m) == 1, 20, "the relayed message")
    assert received.tls
    assert received.login == "app"
    assert pipeline.sink.received() == []  # not to gamma's MX


def test_a_refused_password_defers_and_a_rotated_one_is_used(
    relay, pipeline_factory, ca_file, tmp_path
) -> None:
    password = tmp_path / "password"
    password.write_text("wrong")
    pipeline = through_relay(pipeline_factory, relay, ca_file, password)
    code, _ = pipeline.send("app@sender.test", ["r@gamma.test"], message("relayed"))
    assert code == 250
    deferred(pipeline)
    assert relay.received() == []
    assert relay.auth_attempts
    password.write_text("s3cret")  # the Secret is rotated; the next retry reads it
    relay.wait_for(lambda m: len(m) == 1, 30, "the message after the rotation")


def test_credentials_never_cross_a_connection_in_clear(
    relay_without_tls, pipeline_factory, ca_file, tmp_path
) -> None:
    plain = relay_without_tls
    password = tmp_path / "password"
    password.write_text("s3cret")
    pipeline = through_relay(pipeline_factory, plain, ca_file, password, tls="opportunistic")
    code, _ = pipeline.send("app@sender.test", ["r@gamma.test"], message("in clear?"))
    assert code == 250
    deferred(pipeline)
    assert plain.auth_attempts == []
    assert plain.received() == []
    assert "without TLS" in pipeline.process("delivery").logs()
