"""Reading replies on a session: what has arrived at once, the rest under the timeout."""

from __future__ import annotations

import asyncio

import pytest

from mailyard.delivery.smtp import SmtpSession


def session(reader: asyncio.StreamReader, timeout: float = 5.0) -> SmtpSession:
    # read_reply only reads: no writer is needed.
    return SmtpSession(reader, None, "mx.test", "127.0.0.1", 25, timeout)  # type: ignore[arg-type]


async def test_pipelined_replies_that_arrived_together_are_read_in_turn():
    reader = asyncio.StreamReader()
    reader.feed_data(b"250 2.1.0 sender ok\r\n250 2.1.5 rcpt ok\r\n354 go ahead\r\n")
    smtp = session(reader)
    replies = [await smtp.read_reply() for _ in range(3)]
    assert [(r.code, r.text) for r in replies] == [
        (250, "sender ok"),
        (250, "rcpt ok"),
        (354, "go ahead"),
    ]


async def test_a_reply_half_arrived_is_finished_when_the_rest_comes():
    reader = asyncio.StreamReader()
    reader.feed_data(b"250-first line\r\n")
    reading = asyncio.create_task(session(reader).read_reply())
    await asyncio.sleep(0.01)
    assert not reading.done()
    reader.feed_data(b"250 second line\r\n")
    reply = await reading
    assert (reply.code, reply.text) == (250, "first line second line")


async def test_the_rest_of_a_reply_that_never_comes_times_out():
    reader = asyncio.StreamReader()
    reader.feed_data(b"250-first line\r\n")
    with pytest.raises(TimeoutError):
        await session(reader, timeout=0.05).read_reply()


async def test_the_timeout_says_how_long_it_waited():
    reader = asyncio.StreamReader()
    with pytest.raises(TimeoutError, match=r"^no reply within 0\.05s$"):
        await session(reader, timeout=0.05).read_reply()


async def later(reader: asyncio.StreamReader, seconds: float, data: bytes) -> None:
    await asyncio.sleep(seconds)
    reader.feed_data(data)


async def test_a_short_wait_after_a_long_one_is_cut_at_its_own_length():
    # The first wait sets the session's clock 5 s ahead; the second must not wait that long.
    reader = asyncio.StreamReader()
    smtp = session(reader, timeout=5.0)
    feeding = asyncio.create_task(later(reader, 0.02, b"250 ok\r\n"))
    assert (await smtp.read_reply()).code == 250
    await feeding
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError, match=r"within 0\.1s$"):
        await smtp.read_reply(0.1)
    assert 0.09 <= loop.time() - started < 1.0


async def test_a_long_wait_after_a_short_one_is_not_cut_at_the_short_length():
    # The first wait sets the clock 0.1 s ahead; when it fires, the second wait
    # (0.5 s) is on, and its reply comes at 0.25 s.
    reader = asyncio.StreamReader()
    smtp = session(reader)
    feeding = asyncio.create_task(later(reader, 0.01, b"250 first\r\n"))
    assert (await smtp.read_reply(0.1)).text == "first"
    await feeding
    feeding = asyncio.create_task(later(reader, 0.25, b"250 second\r\n"))
    assert (await smtp.read_reply(0.5)).text == "second"
    await feeding


async def test_waits_in_turn_each_get_the_whole_timeout():
    # Four replies 0.06 s apart, each wait 0.1 s: 0.24 s in all, none cut off.
    reader = asyncio.StreamReader()
    smtp = session(reader, timeout=0.1)
    for n in range(4):
        feeding = asyncio.create_task(later(reader, 0.06, f"250 reply {n}\r\n".encode()))
        assert (await smtp.read_reply()).text == f"reply {n}"
        await feeding
