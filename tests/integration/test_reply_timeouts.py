"""A receiving server that stops answering: the wait for its reply ends at the
command timeout, over a real socket on loopback, and says what it waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from mailyard.delivery.smtp import HostUnusable, SmtpSession, open_session, send_transaction
from mailyard.delivery.tlspolicy import TlsMode
from mailyard.delivery.transaction import Envelope
from mailyard.reply import Reply

HOST = "127.0.0.1"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
T = TypeVar("T")


async def run_against(script: Script, attempt: Callable[[int], Awaitable[T]]) -> T:
    """``attempt(port)`` against a server on loopback that follows ``script``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
            await reader.read()  # then silence, until the client hangs up
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await attempt(port)
    finally:
        server.close()


async def answers_until_rcpt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 slow.test ESMTP\r\n")
    await reader.readline()  # EHLO
    writer.write(b"250 slow.test\r\n")  # no PIPELINING: a command at a time
    await reader.readline()  # MAIL
    writer.write(b"250 2.1.0 ok\r\n")
    await reader.readline()  # RCPT: never answered


async def session_on(port: int, command_timeout: float) -> SmtpSession:
    return await open_session(
        mx="slow.test",
        address=HOST,
        port=port,
        helo_name="mx.mailyard.test",
        tls_mode=TlsMode.NONE,
        tls_context=None,
        connect_timeout=3,
        command_timeout=command_timeout,
    )


def test_a_server_silent_after_mail_from_defers_the_recipient_at_the_command_timeout() -> None:
    async def attempt(port: int) -> tuple[dict[str, Reply], float]:
        session = await session_on(port, command_timeout=0.5)
        started = time.monotonic()
        envelope = Envelope("app@sender.test", ("r@slow.test",), b"Subject: s\r\n\r\nbody\r\n")
        replies = await send_transaction(session, envelope)
        return replies, time.monotonic() - started

    replies, elapsed = asyncio.run(run_against(answers_until_rcpt, attempt))
    reply = replies["r@slow.test"]
    assert (reply.code, reply.status) == (451, "4.4.2")
    assert reply.text == "lost connection with slow.test[127.0.0.1]: no reply within 0.5s"
    assert 0.45 <= elapsed < 2.0


def test_a_server_that_never_greets_is_unusable_at_the_command_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass

    async def attempt(port: int) -> float:
        started = time.monotonic()
        with pytest.raises(HostUnusable) as info:
            await session_on(port, command_timeout=0.3)
        reply = info.value.reply
        assert (reply.code, reply.status) == (451, "4.4.2")
        assert reply.text == "slow.test[127.0.0.1] went silent: no reply within 0.3s"
        return time.monotonic() - started

    elapsed = asyncio.run(run_against(silent, attempt))
    assert 0.25 <= elapsed < 2.0
