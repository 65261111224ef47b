"""ingress against the hostile, the broken and the slow client, over real sockets.

The cases come from the SMTP smuggling and session-abuse literature and from
Postfix's smtpd and postscreen. Ingress behaves the same on either broker,
so these run on the embedded spool only (no RabbitMQ needed, faster start).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.pipeline import Pipeline, message
from tests.support.smtp_client import Raw

pytestmark = pytest.mark.adapters("embedded")

OUTSIDE = {"relay_networks": ["192.0.2.0/24"]}  # loopback is not trusted


@pytest.fixture
def strict(pipeline_factory) -> Pipeline:
    """Loopback is an outsider here, with small limits to reach quickly."""
    return pipeline_factory(
        overrides={
            "ingress": {
                **OUTSIDE,
                "idle_timeout": "2s",
                "postmaster": "admin@alpha.test",
                "limits": {
                    "greeting_delay": "300ms",
                    "junk_commands": 5,
                    "connections_per_client": 3,
                    "header_size": 2048,
                },
            }
        }
    )


def session(pipeline: Pipeline) -> Raw:
    raw = Raw(pipeline.ingress_port)
    raw.ehlo()
    return raw


def test_the_extensions_offered(strict: Pipeline) -> None:
    with Raw(strict.ingress_port) as raw:
        keywords = {line.split(" ")[0] for line in raw.ehlo().lines[1:]}
    assert {"SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING", "CHUNKING", "DSN",
            "ENHANCEDSTATUSCODES"} <= keywords  # fmt: skip
    assert "AUTH" not in keywords  # no users file, and no TLS here anyway


def test_a_bare_lf_command_on_port_25_is_refused_and_the_session_closed(strict: Pipeline) -> None:
    with Raw(strict.ingress_port) as raw:
        raw.ehlo()
        reply = raw.cmd(b"MAIL FROM:<a@sender.test>\n")
        assert (reply.code, reply.status) == (500, "5.5.2")
        assert raw.closed()


def test_commands_pipelined_before_ehlo_advertised_it_are_refused(strict: Pipeline) -> None:
    with Raw(strict.ingress_port) as raw:
        raw.send(b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n")
        reply = raw.reply()
        assert (reply.code, reply.status) == (554, "5.5.0")
        assert raw.closed()


def test_content_sent_before_the_354_is_refused(strict: Pipeline) -> None:
    with session(strict) as raw:
        raw.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<x@bounces.test>\r\nDATA\r\nSubject: x\r\n")
        assert raw.reply().code == 250
        assert raw.reply().code == 250
        reply = raw.reply()
        assert (reply.code, reply.status) == (554, "5.5.0")
        assert raw.closed()


def test_a_client_that_talks_before_the_greeting_is_turned_away(strict: Pipeline) -> None:
    with Raw(strict.ingress_port, greet=False) as raw:
        raw.send(b"EHLO eager.test\r\n")
        reply = raw.reply()
        assert (reply.code, reply.status) == (554, "5.5.0")
        assert raw.closed()
    assert (
        strict.process("ingress").metric("mailyard_ingress_limit_hits_total", reason="early_talker")
        == 1
    )


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("MAIL FROM:<" + "l" * 65 + "@sender.test>", (501, "5.1.7")),
        ("MAIL FROM:<a@" + ("d" * 62 + ".") * 4 + "test>", (501, "5.1.7")),
        ("MAIL FROM:<a\x00b@sender.test>", (501, "5.1.7")),
        ("MAIL FROM:<a\rb@sender.test>", (501, "5.1.7")),
        ("MAIL FROM:<j\u00f6rg@sender.test>", (553, "5.6.7")),
    ],
)
def test_bad_senders_get_a_precise_permanent_reply(strict: Pipeline, command, reply) -> None:
    with session(strict) as raw:
        answer = raw.cmd(command.encode("utf-8"))
        assert (answer.code, answer.status) == reply, answer
        assert raw.cmd("NOOP").code == 250  # and the session goes on


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("RCPT TO:<" + "l" * 65 + "@bounces.test>", (501, "5.1.3")),
        ("RCPT TO:<a@" + "d" * 256 + ".test>", (501, "5.1.3")),
        ("RCPT TO:<a\x00b@bounces.test>", (501, "5.1.3")),
        ("RCPT TO:<x@bounces.test> NOTIFY=SOMETIMES", (501, "5.5.4")),
        ("RCPT TO:<x@bounces.test> ORCPT=rfc822", (501, "5.5.4")),
    ],
)
def test_bad_recipients_get_a_precise_permanent_reply(strict: Pipeline, command, reply) -> None:
    with session(strict) as raw:
        assert raw.cmd("MAIL FROM:<a@sender.test>").code == 250
        answer = raw.cmd(command.encode("utf-8"))
        assert (answer.code, answer.status) == reply, answer


def test_an_idle_session_is_told_421_before_it_is_closed(strict: Pipeline) -> None:
    with session(strict) as raw:
        time.sleep(2.5)
        reply = raw.reply()
        assert (reply.code, reply.status) == (421, "4.4.2")
        assert raw.closed()


def test_a_session_is_idle_from_its_last_command_not_its_first(strict: Pipeline) -> None:
    """Commands mark the session active without re-arming its timer each time:
    the timer, when it fires, looks when the last one came."""
    with session(strict) as raw:
        for _ in range(2):  # 2.4 s of commands 1.2 s apart; idle_timeout is 2 s
            time.sleep(1.2)
            assert raw.cmd("NOOP").code == 250
        last = time.monotonic()
        reply = raw.reply()
        waited = time.monotonic() - last
        assert (reply.code, reply.status) == (421, "4.4.2")
        assert 1.8 <= waited < 3.5, waited
        assert raw.closed()


def test_junk_commands_are_cut_off(strict: Pipeline) -> None:
    with session(strict) as raw:
        for _ in range(5):
            assert raw.cmd("NOOP").code == 250
        reply = raw.cmd("NOOP")
        assert (reply.code, reply.status) == (421, "4.7.0")
        assert raw.closed()


def test_a_slow_but_steady_upload_is_not_cut_at_the_idle_timeout(strict: Pipeline) -> None:
    with session(strict) as raw:
        assert raw.cmd("MAIL FROM:<a@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<slow@bounces.test>").code == 250
        assert raw.cmd("DATA").code == 354
        raw.send(b"Subject: slow\r\n\r\n")
        for _ in range(8):  # 3.2 s of upload, idle_timeout is 2 s
            time.sleep(0.4)
            raw.send(b"x" * 800 + b"\r\n")
        reply = raw.cmd(".")
        assert reply.code == 250, reply


def test_too_slow_an_upload_is_cut(pipeline_factory) -> None:
    pipeline = pipeline_factory(
        overrides={"ingress": {"idle_timeout": "1s", "limits": {"min_data_rate": 100_000}}}
    )
    with session(pipeline) as raw:
        assert raw.cmd("MAIL FROM:<a@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<slow@alpha.test>").code == 250
        assert raw.cmd("DATA").code == 354
        raw.send(b"Subject: slow\r\n\r\n")
        for _ in range(6):
            time.sleep(0.3)
            try:
                raw.send(b"x" * 100 + b"\r\n")
            except OSError:
                break  # cut off already
        reply = raw.reply()
        assert (reply.code, reply.status) == (421, "4.4.2")


def test_connections_per_client_are_limited(strict: Pipeline) -> None:
    sessions = [session(strict) for _ in range(3)]
    try:
        with Raw(strict.ingress_port, greet=False) as fourth:
            reply = fourth.reply()
            assert (reply.code, reply.status) == (421, "4.7.0")
        sessions.pop().close()
        time.sleep(0.2)
        with Raw(strict.ingress_port) as again:  # room again
            assert again.greeting is not None
            assert again.greeting.code == 220
    finally:
        for raw in sessions:
            raw.close()


def send_data(raw: Raw, recipient: str, content: bytes) -> None:
    assert raw.cmd("MAIL FROM:<a@sender.test>").code == 250
    assert raw.cmd(f"RCPT TO:<{recipient}>").code == 250
    assert raw.cmd("DATA").code == 354
    raw.send(content)


def test_a_text_line_over_1000_octets_is_refused(strict: Pipeline) -> None:
    with session(strict) as raw:
        send_data(raw, "x@bounces.test", b"Subject: long\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
        reply = raw.reply()
        assert (reply.code, reply.status) == (500, "5.5.2")
        # 998 and CRLF is the most there may be.
        send_data(raw, "x@bounces.test", b"Subject: ok\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")
        assert raw.reply().code == 250


def test_a_command_line_over_512_octets_is_refused(strict: Pipeline) -> None:
    with session(strict) as raw:
        reply = raw.cmd(b"NOOP " + b"x" * 510)
        assert (reply.code, reply.status) == (500, "5.5.2")


def test_a_header_section_over_the_cap_is_552(strict: Pipeline) -> None:
    with session(strict) as raw:
        headers = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"z" * 60) for n in range(40))
        send_data(raw, "x@bounces.test", headers + b"\r\nbody\r\n.\r\n")
        reply = raw.reply()
        assert (reply.code, reply.status) == (552, "5.3.4")


def test_nul_in_the_message_is_refused(strict: Pipeline) -> None:
    with session(strict) as raw:
        send_data(raw, "x@bounces.test", b"Subject: nul\r\n\r\na\x00b\r\n.\r\n")
        reply = raw.reply()
        assert (reply.code, reply.status) == (554, "5.6.0")


def test_memory_for_uploads_is_shared_and_bounded(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"ingress": {"limits": {"data_memory": 1_048_576}}})
    first, second = session(pipeline), session(pipeline)
    try:
        send_data(first, "a@alpha.test", b"Subject: big\r\n\r\n")
        for _ in range(800):
            first.send(b"a" * 998 + b"\r\n")  # ~800 KB held by the first upload
        time.sleep(0.5)
        send_data(second, "b@alpha.test", b"Subject: also big\r\n\r\n")
        for _ in range(400):
            second.send(b"b" * 998 + b"\r\n")
        reply = second.cmd(".")
        assert (reply.code, reply.status) == (452, "4.3.1")
        assert first.cmd(".").code == 250  # the first one was not hurt
    finally:
        first.close()
        second.close()


SMUGGLING_ENDINGS = [
    b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b"\r.\n", b"\r.\r",
    b"\r\n\x00.\r\n",
]  # fmt: skip


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS)
def test_smuggling_never_makes_a_second_message(pipeline_factory, ending: bytes) -> None:
    """A trusted client (exempt from the bare CR/LF rule) and an outsider: never two messages."""
    pipeline = pipeline_factory()
    smuggled = (
        b"MAIL FROM:<smuggler@sender.test>\r\nRCPT TO:<victim@alpha.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
    )
    with session(pipeline) as raw:
        send_data(raw, "first@alpha.test", b"Subject: carrier\r\n\r\nhello" + ending + smuggled)
        raw.send(b"\r\n.\r\n")
        reply = raw.reply()
    if reply.code == 250:
        pipeline.sink.wait_for(lambda m: len(m) >= 1, 20, "the carrier message")
        time.sleep(1)
    assert "victim@alpha.test" not in pipeline.sink.deliveries()


def test_postmaster_and_abuse_of_local_domains_reach_the_postmaster(strict: Pipeline) -> None:
    for recipient in ("postmaster@bounces.test", "Abuse@Bounces.Test"):
        code, text = strict.send("", [recipient], message(f"to {recipient}"))
        assert code == 250, text
    strict.sink.wait_for(lambda m: len(m) == 2, 20, "two messages at the postmaster")
    assert strict.sink.deliveries() == {"admin@alpha.test": 2}


def test_utf8_addresses_with_smtputf8_are_taken_and_the_option_kept(pipeline: Pipeline) -> None:
    with session(pipeline) as raw:
        assert raw.cmd("MAIL FROM:<s\u00e9nder@sender.test> SMTPUTF8".encode()).code == 250
        assert raw.cmd("RCPT TO:<r\u00e9ceiver@alpha.test>".encode()).code == 250
        assert raw.cmd("DATA").code == 354
        reply = raw.cmd(b"Subject: utf8\r\n\r\nhi\r\n.")
        assert reply.code == 250, reply
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the UTF-8 message")
    assert received.mail_from == "s\u00e9nder@sender.test"
    assert received.recipients == ("r\u00e9ceiver@alpha.test",)


def test_bdat_chunks_make_one_message(pipeline: Pipeline) -> None:
    body = b"Subject: chunked\r\n\r\nfirst part\r\n.leading dot kept as is\r\nsecond\r\n"
    with session(pipeline) as raw:
        assert raw.cmd("MAIL FROM:<a@sender.test> BODY=8BITMIME").code == 250
        assert raw.cmd("RCPT TO:<chunks@alpha.test>").code == 250
        first, second = body[:25], body[25:]  # the first chunk ends mid-line
        raw.send(b"BDAT %d\r\n" % len(first) + first)
        reply = raw.reply()
        assert (reply.code, reply.lines[0]) == (250, f"2.0.0 {len(first)} octets received")
        raw.send(b"BDAT %d LAST\r\n" % len(second) + second)
        reply = raw.reply()
        assert reply.code == 250, reply
        assert "queued as" in reply.text
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the chunked message")
    assert received.content.endswith(body)


def test_bdat_refused_still_reads_its_chunk(pipeline: Pipeline) -> None:
    with session(pipeline) as raw:
        reply = raw.cmd(b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n")  # no MAIL: refused, data skipped
        assert (reply.code, reply.status) == (503, "5.5.1")
        assert raw.cmd("NOOP").code == 250  # the session did not read the chunk as commands


def test_bdat_over_the_size_limit_is_552(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"ingress": {"max_message_size": 2048}})
    with session(pipeline) as raw:
        assert raw.cmd("MAIL FROM:<a@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<big@alpha.test>").code == 250
        raw.send(b"BDAT 4000 LAST\r\n" + b"Subject: x\r\n\r\n" + b"y" * 3986)
        reply = raw.reply()
        assert (reply.code, reply.status) == (552, "5.3.4")


def test_bdat_from_an_outsider_with_a_bare_lf_is_refused_like_data(strict: Pipeline) -> None:
    content = b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<a@b>\r\n"
    with session(strict) as raw:
        assert raw.cmd("MAIL FROM:<a@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<x@bounces.test>").code == 250
        reply = raw.cmd(b"BDAT %d LAST\r\n" % len(content) + content)
        assert (reply.code, reply.status) == (550, "5.6.0")


def test_proxy_protocol_v2_source_decides_relay(pipeline_factory) -> None:
    import socket
    import struct

    pipeline = pipeline_factory(
        overrides={
            "ingress": {"proxy_protocol": {"enabled": True, "trusted_networks": ["127.0.0.0/8"]}}
        }
    )
    source, destination = socket.inet_aton("203.0.113.9"), socket.inet_aton("127.0.0.1")
    header = (
        b"\r\n\r\n\x00\r\nQUIT\n"  # the v2 signature
        + bytes([0x21, 0x11])  # version 2, PROXY; TCP over IPv4
        + struct.pack("!H", 12)
        + source + destination + struct.pack("!HH", 40000, 25)
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", pipeline.ingress_port), timeout=10) as sock:
        sock.sendall(header)
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"EHLO lb.test\r\n")
        stream.flush()
        while not stream.readline().startswith(b"250 "):
            pass
        stream.write(b"MAIL FROM:<x@internet.example>\r\nRCPT TO:<a@alpha.test>\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 ")
        assert stream.readline().startswith(b"554 5.7.1")  # 203.0.113.9 may not relay
    assert "203.0.113.9" in pipeline.process("ingress").logs()


def test_many_hostile_sessions_leave_the_service_working(strict: Pipeline) -> None:
    """After all of the above kinds of abuse at once, normal mail still flows."""

    def abuse(kind: int) -> None:
        try:
            with Raw(strict.ingress_port, greet=False) as raw:
                raw.send([b"EHLO x\r\nNOOP\r\n", b"\x00\xff\r\n", b"MAIL FROM:<a\n"][kind % 3])
                raw.closed(1)
        except OSError:
            pass

    threads = [threading.Thread(target=abuse, args=(n,)) for n in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    time.sleep(0.5)
    code, text = strict.send("", ["after@bounces.test"], message("still fine"))
    assert code == 250, text
