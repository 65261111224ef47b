"""DSNs as RFC 3461/3464 mean them, end to end against real sinks.

NOTIFY (NEVER, SUCCESS, DELAY), RET, ENVID and ORCPT as a client sends them
to ingress, and what comes back to the sender's MX (the aiosmtpd sink on
SENDER) — or what goes on to a next hop that offers DSN (Postfix's
smtp-sink, which offers it unless told ``-N``).
"""

from __future__ import annotations

import email
import email.policy
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.pipeline import ALL_HOSTS, ALPHA, SENDER, Pipeline, message, wait_until
from tests.support.postfix_sink import SMTP_SINK, PostfixSink
from tests.support.processes import MailyardProcess

needs_smtp_sink = pytest.mark.skipif(
    SMTP_SINK is None, reason="Postfix's smtp-sink is not installed (apt-get install postfix)"
)


def send(pipeline: Pipeline, mail: str, rcpts: list[str], content: bytes) -> None:
    """MAIL and RCPT exactly as given (with their DSN parameters), then the content."""
    with pipeline.smtp() as client:
        code, text = client.docmd(f"MAIL FROM:{mail}")
        assert code == 250, text
        for rcpt in rcpts:
            code, text = client.docmd(f"RCPT TO:{rcpt}")
            assert code == 250, text
        code, text = client.data(content)
        assert code == 250, text


def notices(pipeline: Pipeline) -> list[EmailMessage]:
    """Every DSN that reached the sender's MX, oldest first."""
    return [
        email.message_from_bytes(m.content, policy=email.policy.default)  # type: ignore[misc]
        for m in pipeline.sink.received(lambda m: m.host == SENDER)
    ]


def wait_for_notices(pipeline: Pipeline, count: int, timeout: float = 30) -> list[EmailMessage]:
    pipeline.sink.wait_for(
        lambda ms: sum(m.host == SENDER for m in ms) >= count, timeout, f"{count} DSN(s)"
    )
    return notices(pipeline)


def report(dsn: EmailMessage) -> tuple[EmailMessage, list[EmailMessage], EmailMessage]:
    """(per-message fields, per-recipient blocks, the returned part)."""
    assert dsn.get_content_type() == "multipart/report"
    human, status, returned = dsn.get_payload()  # type: ignore[misc]
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    return blocks[0], blocks[1:], returned


def nothing_more_arrives(pipeline: Pipeline, count: int, seconds: float) -> None:
    """Give a wrongly made notice time to travel, then make sure none did."""
    time.sleep(seconds)
    assert len(notices(pipeline)) == count


def test_notify_never_on_a_550_gets_no_dsn(pipeline: Pipeline) -> None:
    pipeline.sink.script.rcpt_always["nobody@alpha.test"] = "550 5.1.1 No such user here"
    send(pipeline, "<app@sender.test>", ["<nobody@alpha.test> NOTIFY=NEVER"], message("never"))
    bounce = pipeline.process("bounce")
    bounce.wait_metric("mailyard_bounce_dsns_skipped_total", 1, 30, reason="not_requested")
    nothing_more_arrives(pipeline, 0, 3)  # dsn_window 1s: long past it
    assert bounce.metric("mailyard_bounce_dsns_total") == 0
    assert pipeline.sink.rcpt_attempts["nobody@alpha.test"] == 1  # it did fail


def test_notify_success_to_a_sink_without_dsn_gets_a_relayed_notice(pipeline: Pipeline) -> None:
    """The aiosmtpd sink does not offer DSN: the success notice is ours to send."""
    send(
        pipeline,
        "<app@sender.test> ENVID=MixedCase+2Bx",
        [
            "<happy@alpha.test> NOTIFY=SUCCESS ORCPT=rfc822;Happy+2BTag@Alpha.Test",
            "<quiet@alpha.test>",
        ],
        message("success please"),
    )
    [dsn] = wait_for_notices(pipeline, 1)
    assert dsn["Subject"] == "Successful Mail Delivery Report"
    per_message, [block], returned = report(dsn)
    # Echoed as the client gave them, xtext decoded (RFC 3461 §6.3 (a), (d)).
    assert per_message["Original-Envelope-Id"] == "MixedCase+x"
    assert block["Original-Recipient"] == "rfc822;Happy+Tag@Alpha.Test"
    assert block["Final-Recipient"] == "rfc822; happy@alpha.test"
    assert block["Action"] == "relayed"
    assert block["Status"] == "2.0.0"
    assert block["Remote-MTA"] == "dns; mx.alpha.test"
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: success please" in returned.get_payload()
    assert pipeline.sink.deliveries() == {
        "happy@alpha.test": 1,
        "quiet@alpha.test": 1,
        "app@sender.test": 1,  # the notice itself
    }
    nothing_more_arrives(pipeline, 1, 2)


@pytest.fixture
def smtp_sink_alpha(
    pipeline_factory: Callable[..., Pipeline],
) -> Iterator[Callable[..., tuple[Pipeline, PostfixSink]]]:
    """A pipeline whose alpha.test MX is Postfix's smtp-sink (with the given options)."""
    sinks: list[PostfixSink] = []
    # smtp-sink writes its dumps as 'nobody', who cannot enter pytest's tmp_path.
    dump_root = Path(tempfile.mkdtemp(prefix="mailyard-dsn-sink-"))
    dump_root.chmod(0o777)

    def start(*options: str, **pipeline_options: object) -> tuple[Pipeline, PostfixSink]:
        pipeline = pipeline_factory(hosts=[h for h in ALL_HOSTS if h != ALPHA], **pipeline_options)
        sink = PostfixSink(ALPHA, pipeline.sink.port, dump_root / str(len(sinks)), *options)
        sinks.append(sink.start())
        return pipeline, sink

    yield start
    for sink in sinks:
        sink.stop()
    shutil.rmtree(dump_root, ignore_errors=True)


@needs_smtp_sink
def test_notify_success_to_a_next_hop_with_dsn_is_passed_on_not_answered(
    smtp_sink_alpha: Callable[..., tuple[Pipeline, PostfixSink]],
) -> None:
    """As Postfix does: the next hop took the request, and answers it itself."""
    pipeline, sink = smtp_sink_alpha()
    send(
        pipeline,
        "<app@sender.test> RET=HDRS ENVID=Env+2B1",
        ["<happy@alpha.test> NOTIFY=SUCCESS ORCPT=rfc822;Happy@Alpha.Test"],
        message("success, passed on"),
    )
    wait_until(lambda: len(sink.messages()) == 1, 30, "the message at smtp-sink")
    [dumped] = sink.messages()
    assert dumped.recipients == ("<happy@alpha.test> NOTIFY=SUCCESS ORCPT=rfc822;Happy@Alpha.Test",)
    assert "ENVID=Env+2B1" in dumped.mail_from
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 10, outcome="delivered")
    nothing_more_arrives(pipeline, 0, 3)
    assert pipeline.process("bounce").metric("mailyard_bounce_dsns_total") == 0


@needs_smtp_sink
def test_notify_success_to_smtp_sink_told_not_to_offer_dsn_gets_a_relayed_notice(
    smtp_sink_alpha: Callable[..., tuple[Pipeline, PostfixSink]],
) -> None:
    pipeline, sink = smtp_sink_alpha("-N")  # smtp-sink: do not announce DSN
    send(
        pipeline,
        "<app@sender.test>",
        ["<happy@alpha.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Happy@Alpha.Test"],
        message("success, answered here"),
    )
    [dsn] = wait_for_notices(pipeline, 1)
    _, [block], _ = report(dsn)
    assert block["Action"] == "relayed"
    assert block["Original-Recipient"] == "rfc822;Happy@Alpha.Test"
    # Without DSN at the next hop the parameters are not sent (RFC 3461 §5.2).
    [dumped] = sink.messages()
    assert dumped.recipients == ("<happy@alpha.test>",)


def test_a_delay_warning_comes_once_then_the_failure(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    lifetime, warning = 7.0, 2.0
    pipeline = pipeline_factory(
        overrides={
            "queue": {
                "retry_delays": ["1s"],
                "max_lifetime": f"{lifetime:g}s",
                "delay_warning": f"{warning:g}s",
            }
        }
    )
    pipeline.sink.script.rcpt_always["slow@alpha.test"] = "451 4.7.1 Greylisted, try later"
    accepted = time.monotonic()
    send(
        pipeline,
        "<app@sender.test> ENVID=Slow+2B1",
        ["<slow@alpha.test> ORCPT=rfc822;Slow@Alpha.Test"],
        message("slow one"),
    )
    [delayed] = wait_for_notices(pipeline, 1)
    assert time.monotonic() - accepted >= warning
    assert delayed["Subject"] == "Delayed Mail (still being retried)"
    per_message, [block], returned = report(delayed)
    assert per_message["Original-Envelope-Id"] == "Slow+1"
    assert block["Original-Recipient"] == "rfc822;Slow@Alpha.Test"
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.7.1"
    assert block["Diagnostic-Code"] == "smtp; 451 4.7.1 Greylisted, try later"
    assert block["Will-Retry-Until"]
    assert returned.get_content_type() == "text/rfc822-headers"

    first, failed = wait_for_notices(pipeline, 2, timeout=lifetime + 30)
    assert first["Message-ID"] == delayed["Message-ID"]
    assert time.monotonic() - accepted >= lifetime
    assert failed["Subject"] == "Undelivered Mail Returned to Sender"
    _, [block], _ = report(failed)
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert pipeline.process("queue").metric("mailyard_queue_delay_warnings_total") == 1
    # It was retried all along, and warned of only once.
    assert pipeline.sink.rcpt_attempts["slow@alpha.test"] >= 4
    nothing_more_arrives(pipeline, 2, 2)


def test_notify_failure_alone_gets_no_delay_warning(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(
        overrides={"queue": {"retry_delays": ["1s"], "max_lifetime": "5s", "delay_warning": "1s"}}
    )
    pipeline.sink.script.rcpt_always["slow@alpha.test"] = "451 4.7.1 Greylisted"
    send(pipeline, "<app@sender.test>", ["<slow@alpha.test> NOTIFY=FAILURE"], message("no warning"))
    [failed] = wait_for_notices(pipeline, 1, timeout=40)
    _, [block], _ = report(failed)
    assert block["Action"] == "failed"
    assert pipeline.process("queue").metric("mailyard_queue_delay_warnings_total") == 0


@pytest.mark.parametrize(("ret", "full"), [("FULL", True), ("HDRS", False)])
def test_ret_decides_what_the_failure_notice_returns(
    pipeline: Pipeline, ret: str, full: bool
) -> None:
    pipeline.sink.script.rcpt_always["nobody@alpha.test"] = "550 5.1.1 No such user here"
    body = "The body that RET=FULL asks back.\r\n.A line that starts with a dot.\r\n"
    send(pipeline, f"<app@sender.test> RET={ret}", ["<nobody@alpha.test>"], message("ret", body))
    [dsn] = wait_for_notices(pipeline, 1)
    _, [block], returned = report(dsn)
    assert block["Action"] == "failed"
    if full:
        assert returned.get_content_type() == "message/rfc822"
        [original] = returned.get_payload()
        assert original["Subject"] == "ret"
        assert "The body that RET=FULL asks back." in original.get_content()
        assert ".A line that starts with a dot." in original.get_content()  # unstuffed
    else:
        assert returned.get_content_type() == "text/rfc822-headers"
        assert "Subject: ret" in returned.get_payload()
        assert "asks back" not in returned.get_payload()


def test_three_domains_that_fail_together_get_one_dsn_with_three_blocks(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(overrides={"bounce": {"dsn_window": "3s"}})
    recipients = ["nobody@alpha.test", "nobody@beta.test", "nobody@gamma.test"]
    for recipient in recipients:
        pipeline.sink.script.rcpt_always[recipient] = "550 5.1.1 No such user here"
    send(pipeline, "<app@sender.test>", [f"<{r}>" for r in recipients], message("three"))
    [dsn] = wait_for_notices(pipeline, 1)
    _, blocks, _ = report(dsn)
    assert sorted(b["Final-Recipient"] for b in blocks) == [f"rfc822; {r}" for r in recipients]
    assert {b["Action"] for b in blocks} == {"failed"}
    nothing_more_arrives(pipeline, 1, 4)
    bounce = pipeline.process("bounce")
    assert bounce.metric("mailyard_bounce_dsns_total", kind="failed") == 1
    assert bounce.metric("mailyard_bounce_dsn_recipients_total", kind="failed") == 3


@pytest.mark.adapters("rabbitmq")  # replicas: the embedded spool has one process
def test_two_bounce_replicas_one_notice_and_none_lost_when_the_active_one_dies(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path
) -> None:
    """The bounce queue's single active consumer sees every event of the message;
    killed with them waiting in its window, the replica standing by takes them
    over and makes the DSN."""
    pipeline = pipeline_factory(split=True, overrides={"bounce": {"dsn_window": "10s"}})
    standby = MailyardProcess("bounce", pipeline.config_path, tmp_path).start().wait_ready()
    try:
        recipients = ["nobody@alpha.test", "nobody@beta.test", "nobody@gamma.test"]
        for recipient in recipients:
            pipeline.sink.script.rcpt_always[recipient] = "550 5.1.1 No such user here"
        send(pipeline, "<app@sender.test>", [f"<{r}>" for r in recipients], message("replicas"))
        replicas = [pipeline.process("bounce"), standby]
        waiting = "mailyard_bounce_dsn_window_events"
        active = wait_until(
            lambda: next((r for r in replicas if r.metric(waiting) == 3), None),
            20,
            "one replica holding all three events",
        )
        [other] = [r for r in replicas if r is not active]
        assert other.metric(waiting) == 0
        active.kill()
        [dsn] = wait_for_notices(pipeline, 1, timeout=40)
        _, blocks, _ = report(dsn)
        assert sorted(b["Final-Recipient"] for b in blocks) == [f"rfc822; {r}" for r in recipients]
        assert other.metric("mailyard_bounce_dsns_total", kind="failed") == 1
        nothing_more_arrives(pipeline, 1, 3)
    finally:
        standby.close()
