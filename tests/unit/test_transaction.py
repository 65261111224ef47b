"""The outbound transaction as a state machine, replayed from SMTP transcripts — no sockets.

Each test is one rule: what the client writes, what the server answers, and
what that means for every recipient and for the session.
"""

from __future__ import annotations

import pytest

from mailyard.delivery.transaction import Dsn, Envelope, Stage, Transaction
from mailyard.reply import Reply

PIPELINING = {"PIPELINING": "", "SIZE": "1000000", "8BITMIME": ""}
PLAIN: dict[str, str] = {}
CONTENT = b"Subject: t\r\n\r\nbody\r\n"


def envelope(*recipients: str, **options: object) -> Envelope:
    return Envelope("s@example.com", recipients or ("a@example.net",), CONTENT, **options)  # type: ignore[arg-type]


def reply(line: str) -> Reply:
    code, _, text = line.partition(" ")
    return Reply.parse(int(code), text)


def replay(transaction: Transaction, *lines: str) -> list[bytes]:
    """Start, then feed each reply; every write the client made, in order."""
    writes = [transaction.start()]
    for line in lines:
        assert not transaction.done, f"nothing should come after {writes}"
        writes.append(transaction.receive(reply(line)))
    return [w for w in writes if w]


def codes(transaction: Transaction) -> dict[str, str]:
    return {r: f"{x.code} {x.status}".strip() for r, x in transaction.results.items()}


def test_pipelined_success_in_two_writes():
    t = Transaction(envelope("a@example.net", "b@example.net"), PIPELINING)
    writes = replay(t, "250 2.1.0 ok", "250 2.1.5 ok", "250 2.1.5 ok", "354 go", "250 2.0.0 queued")
    assert writes[0] == (
        b"MAIL FROM:<s@example.com> SIZE=20\r\nRCPT TO:<a@example.net>\r\n"
        b"RCPT TO:<b@example.net>\r\nDATA\r\n"
    )
    assert writes[1] == CONTENT + b".\r\n"
    assert t.done
    assert t.reusable
    assert t.data_sent
    assert codes(t) == {"a@example.net": "250 2.0.0", "b@example.net": "250 2.0.0"}


def test_without_pipelining_one_command_per_reply():
    t = Transaction(envelope("a@example.net", "b@example.net"), PLAIN)
    writes = replay(t, "250 ok", "250 ok", "550 5.1.1 no such user", "354 go", "250 2.0.0 queued")
    assert writes == [
        b"MAIL FROM:<s@example.com>\r\n",
        b"RCPT TO:<a@example.net>\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"DATA\r\n",
        CONTENT + b".\r\n",
    ]
    assert codes(t) == {"a@example.net": "250 2.0.0", "b@example.net": "550 5.1.1"}


def test_a_refused_mail_is_every_recipients_reply_and_the_session_is_reset():
    t = Transaction(envelope("a@example.net", "b@example.net"), PIPELINING)
    writes = replay(
        t, "550 5.7.1 sender refused", "503 5.5.1 need MAIL", "503 5.5.1 need MAIL",
        "503 5.5.1 need RCPT", "250 2.0.0 reset",
    )  # fmt: skip
    assert writes[-1] == b"RSET\r\n"
    assert t.done
    assert t.reusable
    assert not t.data_sent
    assert set(codes(t).values()) == {"550 5.7.1"}


def test_a_pipelined_354_after_every_rcpt_failed_is_ended_with_a_lone_dot():
    t = Transaction(envelope("a@example.net"), PIPELINING)
    writes = replay(
        t, "250 ok", "550 5.1.1 unknown", "354 go", "554 5.5.1 no valid recipients", "250 ok"
    )
    assert writes[-1] == b".\r\nRSET\r\n"
    assert t.done
    assert t.reusable
    assert not t.data_sent
    assert codes(t) == {"a@example.net": "550 5.1.1"}


def test_452_too_many_recipients_go_in_a_new_transaction_at_once():
    t = Transaction(envelope("a@example.net", "b@example.net", "c@example.net"), PIPELINING)
    replay(
        t, "250 ok", "250 ok", "452 4.5.3 too many recipients", "452 4.5.3 too many recipients",
        "354 go", "250 2.0.0 queued",
    )  # fmt: skip
    assert codes(t) == {"a@example.net": "250 2.0.0"}
    assert t.again == ["b@example.net", "c@example.net"]


def test_452_for_everyone_stands_rather_than_loop():
    t = Transaction(envelope("a@example.net", "b@example.net"), PIPELINING)
    replay(t, "250 ok", "452 4.5.3 too many", "452 4.5.3 too many", "503 5.5.1 no rcpt", "250 ok")
    assert t.again == []
    assert codes(t) == {"a@example.net": "452 4.5.3", "b@example.net": "452 4.5.3"}


def test_a_421_mid_rcpt_closes_the_session_and_defers_the_rest():
    t = Transaction(envelope("a@example.net", "b@example.net", "c@example.net"), PLAIN)
    replay(t, "250 ok", "250 ok", "421 4.7.0 too fast, closing")
    assert t.done
    assert not t.reusable
    assert codes(t) == {
        "a@example.net": "421 4.7.0",  # accepted, but the message never went
        "b@example.net": "421 4.7.0",
        "c@example.net": "421 4.7.0",
    }


def test_a_421_after_the_dot_is_the_result_and_no_reuse():
    t = Transaction(envelope(), PIPELINING)
    replay(t, "250 ok", "250 ok", "354 go", "421 4.3.2 shutting down")
    assert not t.reusable
    assert t.data_sent  # it may have been delivered: the duplicate window
    assert codes(t) == {"a@example.net": "421 4.3.2"}


def test_a_refused_data_is_the_accepted_recipients_reply():
    t = Transaction(envelope("a@example.net", "b@example.net"), PLAIN)
    writes = replay(t, "250 ok", "250 ok", "550 5.1.1 no", "451 4.3.0 try later", "250 reset")
    assert writes[-1] == b"RSET\r\n"
    assert codes(t) == {"a@example.net": "451 4.3.0", "b@example.net": "550 5.1.1"}


def test_the_final_reply_is_awaited_the_longest():
    t = Transaction(envelope(), PIPELINING)
    assert t.waiting_for is Stage.MAIL
    replay(t, "250 ok", "250 ok")
    assert t.waiting_for is Stage.DATA
    t.receive(reply("354 go"))
    assert t.waiting_for is Stage.DATA_END
    assert Stage.DATA_END.timeout == 600  # RFC 5321 §4.5.3.2.6: 10 minutes
    assert Stage.DATA.timeout == 120
    assert Stage.RCPT.timeout == 300


def test_a_message_over_the_servers_size_is_refused_without_sending():
    t = Transaction(envelope("a@example.net"), {"SIZE": "10"})
    assert t.start() == b""
    assert t.done
    assert codes(t) == {"a@example.net": "552 5.3.4"}
    assert t.reusable


def test_smtputf8_needed_but_not_offered_is_permanent():
    t = Transaction(envelope("j\u00f6rg@example.net", smtputf8=True), PIPELINING)
    assert t.start() == b""
    assert codes(t) == {"j\u00f6rg@example.net": "553 5.6.7"}


def test_smtputf8_offered_is_asked_for():
    t = Transaction(
        envelope("j\u00f6rg@example.net", smtputf8=True), {**PIPELINING, "SMTPUTF8": ""}
    )
    assert b" SMTPUTF8" in t.start().split(b"\r\n")[0]


@pytest.mark.parametrize("offered", [True, False])
def test_dsn_requests_go_only_to_a_server_that_offers_dsn(offered):
    dsn = Dsn(ret="HDRS", envid="E1", notify={"a@example.net": "NEVER"}, orcpt={})
    extensions = {**PLAIN, **({"DSN": ""} if offered else {})}
    t = Transaction(envelope("a@example.net", dsn=dsn), extensions)
    mail = t.start()
    rcpt = t.receive(reply("250 ok"))
    assert (b"RET=HDRS ENVID=E1" in mail) is offered
    assert (b"NOTIFY=NEVER" in rcpt) is offered


def test_an_address_that_would_inject_a_command_is_never_sent():
    t = Transaction(envelope("a@example.net\r\nRCPT TO:<x@evil.example>"), PIPELINING)
    assert t.start() == b""
    assert set(codes(t).values()) == {"553 5.1.3"}


EIGHT_BIT = "Subject: t\r\n\r\ncaf\u00e9\r\n".encode()


def test_eight_bit_content_goes_as_it_is_with_8bitmime_where_offered():
    t = Transaction(Envelope("s@example.com", ("a@example.net",), EIGHT_BIT), PIPELINING)
    writes = replay(t, "250 ok", "250 ok", "354 go", "250 2.0.0 queued")
    assert b"BODY=8BITMIME" in writes[0]
    assert writes[1] == EIGHT_BIT + b".\r\n"


def test_eight_bit_content_is_converted_for_a_server_without_8bitmime():
    t = Transaction(Envelope("s@example.com", ("a@example.net",), EIGHT_BIT), {"PIPELINING": ""})
    writes = replay(t, "250 ok", "250 ok", "354 go", "250 2.0.0 queued")
    assert b"BODY=8BITMIME" not in writes[0]
    sent = writes[1]
    assert sent.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in sent
    assert sent.endswith(b"\r\n\r\ncaf=C3=A9\r\n.\r\n")
    assert codes(t) == {"a@example.net": "250 2.0.0"}


def test_size_is_declared_for_the_converted_content():
    extensions = {"PIPELINING": "", "SIZE": "1000000"}
    t = Transaction(Envelope("s@example.com", ("a@example.net",), EIGHT_BIT), extensions)
    writes = replay(t, "250 ok", "250 ok", "354 go", "250 2.0.0 queued")
    declared = int(writes[0].split(b"SIZE=")[1].split(b"\r\n")[0])
    assert declared == len(writes[1]) - len(b".\r\n")
    assert declared > len(EIGHT_BIT)
