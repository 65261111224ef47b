"""Failures come back to the sender as RFC 3464 DSNs; temporary ones are retried."""

from __future__ import annotations

import email
import email.policy
import time
from email.message import EmailMessage

from tests.support.pipeline import ALPHA, SENDER, Pipeline, message, wait_until


def dsns(pipeline: Pipeline) -> list[EmailMessage]:
    return [
        email.message_from_bytes(m.content, policy=email.policy.default)  # type: ignore[misc]
        for m in pipeline.sink.received(lambda m: m.host == SENDER)
    ]


def wait_for_dsn(pipeline: Pipeline, timeout: float = 30) -> EmailMessage:
    pipeline.sink.wait_for(
        lambda m: any(x.host == SENDER for x in m), timeout, "a DSN at the sender's MX"
    )
    [dsn] = dsns(pipeline)
    return dsn


def report_fields(dsn: EmailMessage) -> tuple[EmailMessage, list[EmailMessage], str]:
    """(per-message fields, per-recipient field blocks, quoted original headers)."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, original = dsn.get_payload()  # type: ignore[misc]
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert original.get_content_type() == "text/rfc822-headers"
    blocks = status.get_payload()
    return blocks[0], blocks[1:], original.get_payload()


def test_550_at_rcpt_sends_a_dsn_to_the_sender(pipeline: Pipeline) -> None:
    pipeline.sink.script.rcpt_always["nobody@alpha.test"] = "550 5.1.1 No such user here"
    subject = "will bounce"
    code, text = pipeline.send(
        "app@sender.test", ["nobody@alpha.test", "ok@alpha.test"], message(subject)
    )
    assert code == 250, text

    dsn = wait_for_dsn(pipeline)
    envelope = pipeline.sink.received(lambda m: m.host == SENDER)[0]
    assert envelope.mail_from == "<>"  # a DSN has the null sender
    assert envelope.recipients == ("app@sender.test",)
    assert dsn["Auto-Submitted"] == "auto-replied"
    per_message, recipients, original = report_fields(dsn)
    assert per_message["Reporting-MTA"] == "dns; mx.mailyard.test"
    assert per_message["Arrival-Date"]
    [failed] = recipients
    assert failed["Final-Recipient"] == "rfc822; nobody@alpha.test"
    assert failed["Action"] == "failed"
    assert failed["Status"] == "5.1.1"
    assert failed["Remote-MTA"] == "dns; mx.alpha.test"
    assert failed["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert f"Subject: {subject}" in original
    # The good recipient in the same transaction was delivered.
    assert pipeline.sink.deliveries().get("ok@alpha.test") == 1


def test_no_dsn_for_a_failed_message_from_the_null_sender(pipeline: Pipeline) -> None:
    pipeline.sink.script.rcpt_always["nobody@alpha.test"] = "550 5.1.1 No such user here"
    code, _ = pipeline.send("", ["nobody@alpha.test"], message("bounce of a bounce"))
    assert code == 250
    bounce = pipeline.process("bounce")
    bounce.wait_metric("mailyard_bounce_dsns_skipped_total", 1, timeout=20, reason="null_sender")
    # Give a wrongly made DSN time to travel, then make sure none did.
    time.sleep(2)
    assert dsns(pipeline) == []
    assert bounce.metric("mailyard_bounce_dsns_total") == 0


def test_451_on_first_attempt_is_delivered_once_after_a_retry(pipeline: Pipeline) -> None:
    pipeline.sink.script.rcpt["later@alpha.test"] = ["451 4.7.1 Greylisted, try again"]
    accepted_at = time.monotonic()
    code, _ = pipeline.send("app@sender.test", ["later@alpha.test"], message("greylisted"))
    assert code == 250
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 30, "the retried delivery")
    assert received.at - accepted_at >= 0.8  # queue.retry_delays: [1s], less its jitter
    assert pipeline.sink.rcpt_attempts["later@alpha.test"] == 2
    time.sleep(1.5)
    assert pipeline.sink.deliveries() == {"later@alpha.test": 1}
    assert dsns(pipeline) == []
    queue = pipeline.process("queue")
    assert queue.metric("mailyard_queue_retries_total", delay="1s") == 1


def test_null_mx_gets_a_dsn_without_any_connection(pipeline: Pipeline) -> None:
    code, _ = pipeline.send("app@sender.test", ["someone@nullmx.test"], message("null mx"))
    assert code == 250
    _, [failed], _ = report_fields(wait_for_dsn(pipeline))
    assert failed["Final-Recipient"] == "rfc822; someone@nullmx.test"
    assert failed["Status"] == "5.1.10"
    assert "Remote-MTA" not in failed
    assert failed["Diagnostic-Code"].startswith("X-Mailyard; 556 5.1.10")
    assert pipeline.sink.received(lambda m: m.host != SENDER) == []


def test_nxdomain_gets_a_dsn(pipeline: Pipeline) -> None:
    code, _ = pipeline.send("app@sender.test", ["someone@nxdomain.test"], message("nxdomain"))
    assert code == 250
    _, [failed], _ = report_fields(wait_for_dsn(pipeline))
    assert failed["Final-Recipient"] == "rfc822; someone@nxdomain.test"
    assert failed["Status"] == "5.1.2"
    assert "does not exist" in failed["Diagnostic-Code"]


def test_servfail_is_retried_and_expires_into_a_dsn(pipeline_factory, dns_server) -> None:
    lifetime = 4.0
    pipeline = pipeline_factory(
        overrides={"queue": {"retry_delays": ["1s"], "max_lifetime": f"{lifetime:g}s"}}
    )
    before = dns_server.query_count("servfail.test", "MX")
    accepted_at = time.monotonic()
    code, _ = pipeline.send("app@sender.test", ["someone@servfail.test"], message("servfail"))
    assert code == 250

    dsn = wait_for_dsn(pipeline, timeout=30)
    arrived_after = time.monotonic() - accepted_at
    assert arrived_after >= lifetime, f"DSN after {arrived_after:.1f}s, before the lifetime"
    attempts = dns_server.query_count("servfail.test", "MX") - before
    assert attempts >= 3, f"only {attempts} MX lookups: not retried"
    _, [failed], _ = report_fields(dsn)
    assert failed["Action"] == "failed"
    assert failed["Status"] == "4.4.7"  # delivery time expired
    assert "4.4.3" in failed["Diagnostic-Code"]  # the last temporary error
    assert pipeline.process("queue").metric("mailyard_queue_expired_total") == 1


def test_dns_timeout_is_temporary(pipeline_factory, dns_server) -> None:
    pipeline = pipeline_factory(
        overrides={
            "queue": {"retry_delays": ["1s"], "max_lifetime": "1h"},
            "delivery": {"dns_timeout": "1s"},
        }
    )
    code, _ = pipeline.send("app@sender.test", ["someone@timeout.test"], message("timeout"))
    assert code == 250
    queue = pipeline.process("queue")
    queue.wait_metric("mailyard_queue_retries_total", 2, timeout=30)
    delivery = pipeline.process("delivery")
    assert delivery.metric("mailyard_delivery_route_failures_total", kind="timeout") >= 2
    assert delivery.metric("mailyard_delivery_recipients_total", outcome="failed") == 0
    assert dsns(pipeline) == []


def test_a_dsn_that_fails_is_not_answered_with_another(pipeline: Pipeline) -> None:
    # The sender's own server refuses the DSN: that failure has the null
    # sender, so it ends there instead of looping.
    pipeline.sink.script.rcpt_always["nobody@alpha.test"] = "550 5.1.1 No such user"
    pipeline.sink.script.rcpt_always["app@sender.test"] = "550 5.1.1 Sender gone too"
    code, _ = pipeline.send("app@sender.test", ["nobody@alpha.test"], message("double bounce"))
    assert code == 250
    bounce = pipeline.process("bounce")
    bounce.wait_metric("mailyard_bounce_dsns_skipped_total", 1, timeout=30, reason="null_sender")
    assert bounce.metric("mailyard_bounce_dsns_total") == 1
    wait_until(lambda: pipeline.sink.rcpt_attempts["app@sender.test"] == 1, 5, "one DSN try")
    assert pipeline.sink.received() == []
    assert pipeline.sink.deliveries() == {}
    assert ALPHA  # (alpha's sink refused the original)
