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
