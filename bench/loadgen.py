"""Load: Postfix's ``smtp-source`` where installed, otherwise our asyncio generator.

The paced generator is also how latency is measured: it sends at a fixed
rate and notes when each message got its 250, so that, with the timing
sink's arrival times, each message's accept-to-delivery latency is known.
It speaks just enough SMTP by hand (EHLO, pipelined MAIL/RCPT/DATA): it
shares two cores with the MTA it measures, and aiosmtplib costs about as
much per message as an MTA hop.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

SMTP_SOURCE = shutil.which("smtp-source") or (
    "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None
)
_COUNTER = re.compile(rb"(\d+)\r")


class Progress:
    """Messages sent so far, updated by whichever generator runs."""

    def __init__(self) -> None:
        self.sent = 0


def smtp_source(
    host: str, port: int, *, count: int, size: int, concurrency: int, recipient: str,
    progress: Progress,
) -> None:  # fmt: skip
    """Blast ``count`` messages over ``concurrency`` sessions, reusing connections (-d)."""
    assert SMTP_SOURCE is not None
    process = subprocess.Popen(
        [
            SMTP_SOURCE, "-c", "-d", "-N", "-s", str(concurrency), "-m", str(count),
            "-l", str(size), "-f", "bench@sender.bench.test", "-t", recipient,
            "-M", "loadgen.bench.test", f"{host}:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    buffer = b""
    while chunk := process.stdout.read1(65536):  # type: ignore[attr-defined]
        buffer = (buffer + chunk)[-256:]
        counts = _COUNTER.findall(buffer)
        if counts:
            progress.sent = int(counts[-1])
    if process.wait() != 0:
        raise RuntimeError(f"smtp-source failed: {process.stderr.read().decode()}")  # type: ignore[union-attr]


def message(index: int, size: int, recipient: str) -> bytes:
    header = (
        f"From: bench@sender.bench.test\r\nTo: {recipient}\r\nSubject: bench {index}\r\n"
        f"Message-ID: <{index}.{time.time_ns()}@loadgen.bench.test>\r\nX-Bench-Id: {index}\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    return header + line * max(1, size // len(line))


async def _generate(
    host: str, port: int, *, count: int, size: int, concurrency: int,
    recipient_for: Callable[[int], str], rate: float | None, accepted: dict[str, float],
    progress: Progress,
) -> None:  # fmt: skip
    start = time.perf_counter()
    next_index = 0

    async def session() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await _expect(reader, 220)
            writer.write(b"EHLO loadgen.bench.test\r\n")
            await _expect(reader, 250)
            while next_index < count:
                index = next_index
                next_index += 1
                if rate:
                    await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
                recipient = recipient_for(index)
                # PIPELINING (RFC 2920): the envelope and DATA in one write.
                writer.write(
                    b"MAIL FROM:<bench@sender.bench.test>\r\n"
                    + f"RCPT TO:<{recipient}>\r\n".encode()
                    + b"DATA\r\n"
                )
                for code in (250, 250, 354):
                    await _expect(reader, code)
                # No line of message() starts with ".": nothing to dot-stuff.
                writer.write(message(index, size, recipient) + b".\r\n")
                await _expect(reader, 250)
                accepted[str(index)] = time.monotonic()  # the timing sink's clock
                progress.sent += 1
            writer.write(b"QUIT\r\n")
            await _expect(reader, 221)
        finally:
            writer.close()

    await asyncio.gather(*(session() for _ in range(concurrency)))


async def _expect(reader: asyncio.StreamReader, code: int) -> None:
    """Read one (possibly multi-line) reply; anything but ``code`` stops the run."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"the server hung up while we waited for {code}")
        if line[3:4] != b"-":
            break
    if not line.startswith(str(code).encode()):
        raise RuntimeError(f"expected {code}, got {line.decode(errors='replace').strip()!r}")


def in_own_thread(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` on an event loop of its own, in a thread of its own; re-raise
    whatever it raised."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # reported to the caller below
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


def generate(
    host: str, port: int, *, count: int, size: int, concurrency: int,
    recipient_for: Callable[[int], str], progress: Progress, rate: float | None = None,
) -> dict[str, float]:  # fmt: skip
    """Send ``count`` messages (at ``rate`` per second if given); when each got its 250."""
    accepted: dict[str, float] = {}
    in_own_thread(
        _generate(
            host,
            port,
            count=count,
            size=size,
            concurrency=concurrency,
            recipient_for=recipient_for,
            rate=rate,
            accepted=accepted,
            progress=progress,
        )
    )
    return accepted
