"""The SMTP client's protocol logic: reply parsing, commands, the DATA payload."""

import pytest

from mailyard.delivery.protocol import (
    ProtocolError,
    ReplyReader,
    data_payload,
    extensions,
    is_eight_bit,
    mail_command,
    rcpt_command,
)
from mailyard.reply import Reply


def feed_all(reader, *lines):
    replies = [reader.feed(line) for line in lines]
    return [r for r in replies if r is not None]


def test_single_line_reply_with_enhanced_code():
    assert ReplyReader().feed(b"550 5.1.1 No such user\r\n") == Reply(550, "5.1.1", "No such user")


def test_multi_line_reply_completes_on_its_last_line():
    reader = ReplyReader()
    assert reader.feed(b"250-mx.example greets you\r\n") is None
    assert reader.feed(b"250-PIPELINING\r\n") is None
    reply = reader.feed(b"250 SIZE 1000\r\n")
    assert reply is not None
    assert reply.code == 250
    assert reader.lines == ["mx.example greets you", "PIPELINING", "SIZE 1000"]
    assert extensions(reader.lines) == {"PIPELINING": "", "SIZE": "1000"}


def test_pipelined_replies_are_read_one_after_the_other():
    reader = ReplyReader()
    replies = feed_all(
        reader, b"250 2.1.0 Ok\r\n", b"550 5.1.1 nope\r\n", b"250 2.1.5 Ok\r\n", b"354 go\r\n"
    )
    assert [r.code for r in replies] == [250, 550, 250, 354]


def test_bare_code_and_lf_only_lines_are_replies():
    assert ReplyReader().feed(b"250\n") == Reply(250, "", "")


@pytest.mark.parametrize(
    "line",
    [b"hello\r\n", b"2500 too long\r\n", b"25 short\r\n", b"999 out of range\r\n", b"250x\r\n"],
)
def test_garbage_is_a_protocol_error(line):
    with pytest.raises(ProtocolError):
        ReplyReader().feed(line)


def test_code_may_not_change_within_a_reply():
    reader = ReplyReader()
    reader.feed(b"250-first\r\n")
    with pytest.raises(ProtocolError, match="changed"):
        reader.feed(b"550 second\r\n")


def test_endless_multi_line_reply_is_cut_off():
    reader = ReplyReader()
    for _ in range(100):  # MAX_REPLY_LINES
        reader.feed(b"250-more\r\n")
    with pytest.raises(ProtocolError, match="100 lines"):
        reader.feed(b"250-one too many\r\n")


def test_ehlo_keywords_are_upper_cased_and_the_greeting_skipped():
    assert extensions(["mx hello", "starttls", "8bitmime", "AUTH PLAIN LOGIN"]) == {
        "STARTTLS": "",
        "8BITMIME": "",
        "AUTH": "PLAIN LOGIN",
    }


def test_mail_command_with_parameters():
    assert mail_command("a@b.c") == b"MAIL FROM:<a@b.c>\r\n"
    assert mail_command("", size=123) == b"MAIL FROM:<> SIZE=123\r\n"
    assert mail_command("a@b.c", eight_bit=True) == b"MAIL FROM:<a@b.c> BODY=8BITMIME\r\n"


def test_rcpt_command_keeps_quoted_local_parts():
    assert rcpt_command('"a b"@c.d') == b'RCPT TO:<"a b"@c.d>\r\n'


@pytest.mark.parametrize("address", ["a\r\nQUIT@b.c", "a>b@c.d", "a\x00@b.c", "<a@b.c>"])
def test_addresses_that_would_inject_commands_are_refused(address):
    with pytest.raises(ValueError, match="unusable address"):
        rcpt_command(address)


@pytest.mark.parametrize(
    ("content", "payload"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb", b"a\r\nb\r\n.\r\n"),  # bare LF normalised, final CRLF added
        (b"a\rb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".\r\n..x\r\n.end", b"..\r\n...x\r\n..end\r\n.\r\n"),  # dot-stuffing
        (b"line\r\n.\r\nMAIL FROM:<x>\r\n", b"line\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
    ],
)
def test_data_payload_is_dot_stuffed_and_terminated(content, payload):
    assert data_payload(content) == payload


def test_eight_bit_detection():
    assert not is_eight_bit(b"plain ascii\r\n")
    assert is_eight_bit("caf\u00e9".encode())
