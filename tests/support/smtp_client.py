"""A raw SMTP client for tests that must send exactly the bytes they mean.

smtplib and aiosmtplib are well-behaved clients; the hostile client, the
broken client and the slow one are not, so tests speak to ingress through
this: bytes out as given, replies in as (code, text) with every line.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def status(self) -> str:
        """The enhanced status code of the last line, e.g. "5.7.1"."""
        first = self.lines[-1].split(" ", 1)[0] if self.lines else ""
        return first if first[:1].isdigit() and "." in first else ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class Raw:
    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str = "mx.mailyard.test",
        timeout: float = 15,
        greet: bool = True,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        self.sock: socket.socket = sock
        self._buffer = b""
        self.greeting = self.reply() if greet else None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server; had {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def reply(self) -> Reply:
        lines = []
        while True:
            line = self.line().decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), tuple(lines))

    def cmd(self, command: str | bytes) -> Reply:
        data = command.encode() if isinstance(command, str) else command
        self.send(data + (b"" if data.endswith(b"\n") else b"\r\n"))
        return self.reply()

    def ehlo(self, name: str = "client.test") -> Reply:
        reply = self.cmd(f"EHLO {name}")
        assert reply.code == 250, reply
        return reply

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "mx.mailyard.test") -> None:
        reply = self.cmd("STARTTLS")
        assert reply.code == 220, reply
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def closed(self, wait: float = 5) -> bool:
        """True once the server has hung up (anything it still sends is read and dropped)."""
        deadline = time.monotonic() + wait
        self.sock.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    if not self.sock.recv(65536):
                        return True
                except TimeoutError:
                    continue
                except (ConnectionError, ssl.SSLError, OSError):
                    return True
            return False
        finally:
            self.sock.settimeout(15)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
