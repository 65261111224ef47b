"""Reply: SMTP replies as values."""

from __future__ import annotations

import dataclasses

import pytest

from mailyard.reply import Reply


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (Reply(250, "2.1.5", "Recipient OK"), "250 2.1.5 Recipient OK"),
        (
            Reply(554, "5.7.1", "<a@b.example>: Relay access denied"),
            "554 5.7.1 <a@b.example>: Relay access denied",
        ),
        (Reply(220, "", "mx.example.com ESMTP"), "220 mx.example.com ESMTP"),
        (Reply(451, "4.3.0", "try again\n"), "451 4.3.0 try again"),
        (Reply(250, "2.0.0", ""), "250 2.0.0 "),
    ],
)
def test_render_single_line(reply, wire):
    assert reply.render() == wire


def test_render_multi_line_with_status():
    reply = Reply(550, "5.7.1", "first line\nsecond line\r\nthird line")
    assert reply.render() == (
        "550-5.7.1 first line\r\n550-5.7.1 second line\r\n550 5.7.1 third line"
    )


def test_render_multi_line_without_status():
    assert Reply(250, "", "first\nsecond").render() == "250-first\r\n250 second"


def test_str():
    assert str(Reply(550, "5.1.1", "No such user")) == "550 5.1.1 No such user"
    assert str(Reply(220, "", "ready")) == "220 ready"


@pytest.mark.parametrize(
    ("code", "message", "status", "text"),
    [
        (550, "5.1.1 No such user", "5.1.1", "No such user"),
        (250, "2.0.0 Ok: queued as ABC", "2.0.0", "Ok: queued as ABC"),
        (451, "4.7.1 Greylisted", "4.7.1", "Greylisted"),
        (550, "5.1.1", "5.1.1", ""),
        (552, "5.3.4 Message size\nexceeds limit", "5.3.4", "Message size exceeds limit"),
        (550, "  5.1.1 No such user  ", "5.1.1", "No such user"),
        # class of the enhanced code does not match the reply code: not taken
        (550, "4.1.1 Try later", "", "4.1.1 Try later"),
        (450, "5.1.1 No such user", "", "5.1.1 No such user"),
        (250, "5.0.0 odd", "", "5.0.0 odd"),
        # not an enhanced code at all
        (550, "No such user", "", "No such user"),
        (550, "5.1 No such user", "", "5.1 No such user"),
        (550, "5.1.1.1 text", "", "5.1.1.1 text"),
        (550, "5.1.1000 text", "", "5.1.1000 text"),
        (550, "3.1.1 text", "", "3.1.1 text"),
        (550, "", "", ""),
        (421, "mx.example.net closing\nconnection", "", "mx.example.net closing connection"),
    ],
)
def test_parse(code, message, status, text):
    assert Reply.parse(code, message) == Reply(code, status, text)


@pytest.mark.parametrize("code", [0, 199, 600, 999, -250])
def test_code_out_of_range(code):
    with pytest.raises(ValueError, match="SMTP reply code out of range"):
        Reply(code, "", "x")


@pytest.mark.parametrize("status", ["5.1", "5", "x.y.z", "6.1.1", "1.0.0", "5.1.1 ", "5.1000.1"])
def test_bad_status(status):
    with pytest.raises(ValueError, match="not an enhanced status code"):
        Reply(550, status, "x")


@pytest.mark.parametrize("code", [200, 599])
def test_code_range_limits_are_allowed(code):
    assert Reply(code, "", "x").code == code


@pytest.mark.parametrize(
    ("code", "positive", "transient", "permanent", "status_class"),
    [
        (220, True, False, False, "2xx"),
        (250, True, False, False, "2xx"),
        (354, True, False, False, "3xx"),
        (399, True, False, False, "3xx"),
        (400, False, True, False, "4xx"),
        (451, False, True, False, "4xx"),
        (499, False, True, False, "4xx"),
        (500, False, False, True, "5xx"),
        (550, False, False, True, "5xx"),
        (599, False, False, True, "5xx"),
    ],
)
def test_classification(code, positive, transient, permanent, status_class):
    reply = Reply(code, "", "x")
    assert reply.is_positive is positive
    assert reply.is_transient is transient
    assert reply.is_permanent is permanent
    assert reply.status_class == status_class


def test_is_frozen():
    reply = Reply(250, "2.0.0", "OK")
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.code = 550  # type: ignore[misc]
