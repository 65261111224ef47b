"""Delivery against remote servers that misbehave: Postfix's smtp-sink, TLS."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import tempfile
from pathlib import Path

import pytest

from tests.support.certificates import server_context
from tests.support.pipeline import ALL_HOSTS, ALPHA, SENDER, Pipeline, message, wait_until
from tests.support.postfix_sink import SMTP_SINK, PostfixSink
from tests.support.smtp_client import Raw

needs_smtp_sink = pytest.mark.skipif(
    SMTP_SINK is None, reason="Postfix's smtp-sink is not installed (apt-get install postfix)"
)


@pytest.fixture
def postfix_alpha(pipeline_factory):
    """A pipeline whose alpha.test MX is smtp-sink (with the given options)."""
    sinks: list[PostfixSink] = []
    # smtp-sink writes its dumps as 'nobody', who cannot enter pytest's tmp_path.
    dump_root = Path(tempfile.mkdtemp(prefix="mailyard-smtp-sink-"))
    dump_root.chmod(0o777)

    def start(*options: str, **pipeline_options) -> tuple[Pipeline, PostfixSink]:
        pipeline = pipeline_factory(hosts=[h for h in ALL_HOSTS if h != ALPHA], **pipeline_options)
        dumps = dump_root / str(len(sinks))
        sink = PostfixSink(ALPHA, pipeline.sink.port, dumps, *options).start()
        sinks.append(sink)
        return pipeline, sink

    yield start
    for sink in sinks:
        sink.stop()
    shutil.rmtree(dump_root, ignore_errors=True)


@needs_smtp_sink
def test_delivers_to_postfix_smtp_sink(postfix_alpha) -> None:
    pipeline, sink = postfix_alpha()
    for index in range(20):
        code, _ = pipeline.send(
            "app@sender.test",
            [f"p{index}@alpha.test", f"q{index}@alpha.test"],
            message(f"m{index}"),
        )
        assert code == 250
    wait_until(lambda: len(sink.messages()) == 20, 30, "20 messages at smtp-sink")
    got = sorted(r for m in sink.messages() for r in m.recipients)
    assert got == sorted(f"<{p}{i}@alpha.test>" for i in range(20) for p in "pq")
    assert {m.mail_from for m in sink.messages()} == {"<app@sender.test>"}


@needs_smtp_sink
@pytest.mark.parametrize(
    ("options", "what"),
    [
        (("-r", "rcpt"), "450 at RCPT"),
        (("-r", "."), "450 after the message"),
        (("-Q", "."), "421 after the message"),
        (("-q", "data"), "hang-up after DATA"),
        (("-q", "connect"), "hang-up at connect"),
    ],
)
def test_temporary_trouble_is_deferred_then_expires_into_a_dsn(
    postfix_alpha, options, what
) -> None:
    pipeline, _ = postfix_alpha(
        *options, overrides={"queue": {"retry_delays": ["1s"], "max_lifetime": "3s"}}
    )
    code, _ = pipeline.send("app@sender.test", ["t@alpha.test"], message(what))
    assert code == 250
    queue = pipeline.process("queue")
    queue.wait_metric("mailyard_queue_retries_total", 2, timeout=30)
    pipeline.sink.wait_for(lambda m: any(x.host == SENDER for x in m), 30, "the expiry DSN")
    dsn = pipeline.sink.received(lambda m: m.host == SENDER)[0].content
    assert b"Status: 4.4.7" in dsn, dsn
    assert b"Final-Recipient: rfc822; t@alpha.test" in dsn
    # (smtp-sink dumps a message even when it then refuses it, so its dumps
    # say nothing here; our own count does.)
    delivery = pipeline.process("delivery")
    # One delivered recipient: the DSN to app@sender.test, nothing at alpha.
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 10, outcome="delivered")
    assert delivery.metric("mailyard_delivery_recipients_total", outcome="delivered") == 1
    assert delivery.metric("mailyard_delivery_recipients_total", outcome="deferred") >= 2


@needs_smtp_sink
@pytest.mark.parametrize(
    ("options", "status"),
    [
        (("-f", "rcpt"), b"Status: 5.3.0"),
        (("-f", "."), b"Status: 5.3.0"),
        (("-f", "mail"), b"Status: 5.3.0"),
    ],
)
def test_permanent_refusals_become_dsns(postfix_alpha, options, status) -> None:
    pipeline, _ = postfix_alpha(*options)
    code, _ = pipeline.send("app@sender.test", ["f@alpha.test"], message("refused"))
    assert code == 250
    pipeline.sink.wait_for(lambda m: any(x.host == SENDER for x in m), 30, "a DSN")
    dsn = pipeline.sink.received(lambda m: m.host == SENDER)[0].content
    assert status in dsn
    assert b"Remote-MTA: dns; mx.alpha.test" in dsn
    assert b"Diagnostic-Code: smtp; 500 5.3.0 Error: command failed" in dsn


def test_starttls_is_used_when_offered(pipeline_factory, ca) -> None:
    pipeline = pipeline_factory(sink_tls=server_context(ca, "mx.alpha.test"))
    code, _ = pipeline.send("app@sender.test", ["tls@alpha.test"], message("encrypted"))
    assert code == 250
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received.tls
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_transactions_total", 1, 10, tls="yes")
    assert delivery.metric("mailyard_delivery_transactions_total", tls="yes") == 1
    assert delivery.metric("mailyard_delivery_transactions_total", tls="no") == 0


def test_broken_tls_falls_back_to_clear_text(pipeline_factory) -> None:
    # The server offers STARTTLS but its context cannot complete a handshake
    # (no certificate). Opportunistic TLS must then deliver in clear.
    broken = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pipeline = pipeline_factory(sink_tls=broken)
    code, _ = pipeline.send("app@sender.test", ["clear@alpha.test"], message("fallback"))
    assert code == 250
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert not received.tls
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_transactions_total", 1, 10, tls="no")
    assert delivery.metric("mailyard_delivery_transactions_total", tls="yes") == 0


@needs_smtp_sink
def test_dsn_requests_are_passed_to_a_next_hop_that_offers_dsn(postfix_alpha) -> None:
    """RFC 3461 §5.2: RET, ENVID, NOTIFY and ORCPT go on as the client gave them."""
    pipeline, sink = postfix_alpha()
    with pipeline.smtp() as client:
        code, _ = client.docmd("MAIL FROM:<app@sender.test> RET=HDRS ENVID=Env+2BId-42")
        assert code == 250
        code, _ = client.docmd(
            "RCPT TO:<dsn@alpha.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig+2BTag@Alpha.Test"
        )
        assert code == 250
        code, _ = client.docmd("RCPT TO:<plain@alpha.test>")
        assert code == 250
        code, _ = client.data(message("dsn options"))
        assert code == 250
    wait_until(lambda: len(sink.messages()) == 1, 30, "the message at smtp-sink")
    [dumped] = sink.messages()
    assert "RET=HDRS" in dumped.mail_from
    assert "ENVID=Env+2BId-42" in dumped.mail_from
    by_recipient = {args.split(" ")[0]: args for args in dumped.recipients}
    assert by_recipient["<dsn@alpha.test>"] == (
        "<dsn@alpha.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig+2BTag@Alpha.Test"
    )
    assert by_recipient["<plain@alpha.test>"] == "<plain@alpha.test>"


EIGHT_BIT_BODY = "Gr\u00fc\u00dfe \u2603, caf\u00e9\r\n.a dot line\r\n".encode()


def eight_bit_message(subject: str) -> bytes:
    return (
        message(subject).split(b"\r\n\r\n")[0]
        + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8"
        + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + EIGHT_BIT_BODY
    )


def send_eight_bit(pipeline: Pipeline, recipient: str, content: bytes) -> None:
    with pipeline.smtp() as client:
        assert client.docmd("MAIL FROM:<app@sender.test> BODY=8BITMIME")[0] == 250
        assert client.rcpt(recipient)[0] == 250
        code, text = client.data(content)
        assert code == 250, text


@needs_smtp_sink
def test_eight_bit_mail_reaches_a_server_without_8bitmime_as_quoted_printable(
    postfix_alpha,
) -> None:
    pipeline, sink = postfix_alpha("-8")  # smtp-sink: do not announce 8BITMIME
    send_eight_bit(pipeline, "seven@alpha.test", eight_bit_message("to a 7-bit server"))
    wait_until(lambda: len(sink.messages()) == 1, 30, "the message at smtp-sink")
    [dumped] = sink.messages()
    assert "BODY=8BITMIME" not in dumped.mail_from
    assert dumped.body.isascii()
    parsed = email.message_from_bytes(dumped.body, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    # smtp-sink's dump ends lines in LF and adds one at the end.
    decoded = parsed.get_payload(decode=True).replace(b"\r\n", b"\n").rstrip(b"\n")
    assert decoded == EIGHT_BIT_BODY.replace(b"\r\n", b"\n").rstrip(b"\n")


@needs_smtp_sink
def test_eight_bit_mail_goes_unchanged_to_a_server_with_8bitmime(postfix_alpha) -> None:
    pipeline, sink = postfix_alpha()
    content = eight_bit_message("to an 8-bit server")
    send_eight_bit(pipeline, "eight@alpha.test", content)
    wait_until(lambda: len(sink.messages()) == 1, 30, "the message at smtp-sink")
    [dumped] = sink.messages()
    assert "BODY=8BITMIME" in dumped.mail_from
    assert b"\r\n\r\n" + EIGHT_BIT_BODY in dumped.body.replace(b"\n", b"\r\n")


def test_lines_longer_than_998_octets_from_bdat_are_re_encoded(pipeline_factory) -> None:
    """RFC 5321 §4.5.3.1.6 on the way out, whatever BDAT let in."""
    pipeline = pipeline_factory()
    long_line = b"x" * 2500
    content = message("long line", body="") + long_line + b"\r\nend\r\n"
    with Raw(pipeline.ingress_port) as raw:
        raw.ehlo()
        assert raw.cmd("MAIL FROM:<app@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<long@alpha.test>").code == 250
        reply = raw.cmd(b"BDAT %d LAST\r\n" % len(content) + content)
        assert reply.code == 250, reply
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the long-lined message")
    lines = received.content.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    parsed = email.message_from_bytes(received.content, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_payload(decode=True) == long_line + b"\r\nend\r\n"
