"""The submission load: STARTTLS, AUTH PLAIN, then 10 messages per session (port 587).

What an application does when it sends through its mail server: a session
costs a TLS handshake and a password check, and carries a few messages.
Hand-written like the rest of the generators (loadgen.py says why); the
same program drives Mailyard and Postfix, configured alike (TLS "may" on
the port, AUTH required, one static user).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from bench.loadgen import Progress, _expect, in_own_thread, message

USER = "bench@bench.test"
PASSWORD = "bench-password-1"  # noqa: S105 (a throw-away user on loopback)
NAME = "mx.bench.test"  # what the certificate is for, and the client checks


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    client: ssl.SSLContext


def make_certificate(directory: Path) -> Certificate:
    """A CA of the run's own and a certificate for both MTAs; a client that trusts it."""
    ca = trustme.CA()
    leaf = ca.issue_cert(NAME)
    cert_file, key_file = directory / "bench.crt", directory / "bench.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    cert_file.chmod(0o644)
    key_file.chmod(0o644)  # Postfix's smtpd reads it as the postfix user
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return Certificate(cert_file, key_file, client)


async def _submit(
    port: int, *, count: int, size: int, concurrency: int, per_session: int, recipient: str,
    tls: ssl.SSLContext, progress: Progress,
) -> None:  # fmt: skip
    next_index = 0
    credentials = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()

    async def session() -> None:
        nonlocal next_index
        while next_index < count:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await _expect(reader, 220)
                writer.write(b"EHLO submit.bench.test\r\n")
                await _expect(reader, 250)
                writer.write(b"STARTTLS\r\n")
                await _expect(reader, 220)
                await writer.start_tls(tls, server_hostname=NAME)
                writer.write(b"EHLO submit.bench.test\r\n")
                await _expect(reader, 250)
                writer.write(f"AUTH PLAIN {credentials}\r\n".encode())
                await _expect(reader, 235)
                for _ in range(per_session):
                    if next_index >= count:
                        break
                    index = next_index
                    next_index += 1
                    writer.write(
                        b"MAIL FROM:<bench@bench.test>\r\n"
                        + f"RCPT TO:<{index}{recipient}>\r\n".encode()
                        + b"DATA\r\n"
                    )
                    for code in (250, 250, 354):
                        await _expect(reader, code)
                    writer.write(message(index, size, recipient) + b".\r\n")
                    await _expect(reader, 250)
                    progress.sent += 1
                writer.write(b"QUIT\r\n")
                await _expect(reader, 221)
            finally:
                writer.close()

    await asyncio.gather(*(session() for _ in range(concurrency)))


def submit(
    port: int, *, count: int, size: int, concurrency: int, per_session: int, recipient: str,
    tls: ssl.SSLContext, progress: Progress,
) -> None:  # fmt: skip
    """Submit ``count`` messages; raises what the run ran into."""
    in_own_thread(
        _submit(
            port,
            count=count,
            size=size,
            concurrency=concurrency,
            per_session=per_session,
            recipient=recipient,
            tls=tls,
            progress=progress,
        )
    )
