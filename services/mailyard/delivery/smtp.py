"""Outbound SMTP with aiosmtplib: open a session, run one transaction.

aiosmtplib's exceptions are translated here. What the caller sees:

- :class:`HostUnusable` — we never got to MAIL FROM on this host (refused,
  timed out, bad greeting, TLS broke): try the next address or MX;
- :class:`SessionLost` — a reused connection turned out dead before the
  server answered anything for this message: open a new one and try again;
- otherwise, a :class:`Reply` for every recipient.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib

from mailyard.reply import Reply


class HostUnusable(Exception):
    def __init__(self, reply: Reply, *, tls_failed: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls_failed = tls_failed


class SessionLost(Exception):
    """The connection died before the server answered MAIL FROM."""


def opportunistic_tls_context() -> ssl.SSLContext:
    """STARTTLS without authentication, as RFC 7435 / Postfix's ``may`` level.

    Encrypting with an unchecked certificate still beats sending in clear,
    which is the only alternative when the peer's name cannot be verified.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(eq=False)
class SmtpSession:
    client: aiosmtplib.SMTP
    mx: str
    address: str
    port: int
    tls: bool
    transactions: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.client.is_connected


async def open_session(
    *,
    mx: str,
    address: str,
    port: int,
    helo_name: str,
    tls_context: ssl.SSLContext | None,
    connect_timeout: float,
    command_timeout: float,
) -> SmtpSession:
    client = aiosmtplib.SMTP(
        hostname=address,
        port=port,
        local_hostname=helo_name,
        timeout=command_timeout,
        start_tls=False,
        use_tls=False,
    )
    try:
        await client.connect(timeout=connect_timeout)
        await client.ehlo()
    except aiosmtplib.SMTPResponseException as exc:
        client.close()
        raise HostUnusable(_reply(exc.code, exc.message, f"{mx}[{address}] refused us")) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        client.close()
        raise HostUnusable(
            Reply(451, "4.4.1", f"connect to {mx}[{address}]:{port}: {_describe(exc)}")
        ) from exc
    tls = False
    if tls_context is not None and client.supports_extension("starttls"):
        try:
            await client.starttls(tls_context=tls_context)
            tls = True
        except aiosmtplib.SMTPResponseException as exc:
            if not client.is_connected:
                raise HostUnusable(
                    Reply(451, "4.7.5", f"STARTTLS with {mx}[{address}] failed: {exc.message}"),
                    tls_failed=True,
                ) from exc
            # Offered, then refused, but still talking: carry on in clear.
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            raise HostUnusable(
                Reply(451, "4.7.5", f"TLS handshake with {mx}[{address}] failed: {_describe(exc)}"),
                tls_failed=True,
            ) from exc
    return SmtpSession(client, mx, address, port, tls)


async def send_transaction(
    session: SmtpSession, mail_from: str, recipients: list[str], content: bytes
) -> dict[str, Reply]:
    """MAIL, one RCPT each, DATA: a reply for every recipient."""
    client = session.client
    where = f"{session.mx}[{session.address}]"
    try:
        await client.mail(mail_from)
    except aiosmtplib.SMTPResponseException as exc:
        reply = _reply(exc.code, exc.message, "sender refused")
        await _reset(client)
        return dict.fromkeys(recipients, reply)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
        client.close()
        raise SessionLost(f"{where}: {_describe(exc)}") from exc
    session.transactions += 1

    replies: dict[str, Reply] = {}
    accepted: list[str] = []
    for index, recipient in enumerate(recipients):
        try:
            await client.rcpt(recipient)
            accepted.append(recipient)
        except aiosmtplib.SMTPResponseException as exc:
            replies[recipient] = _reply(exc.code, exc.message, "recipient refused")
            if exc.code == 421:  # the server is closing the session
                return _rest(replies, recipients[index + 1 :], replies[recipient])
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            client.close()
            lost = Reply(
                451, "4.4.2", f"lost connection with {where} during RCPT: {_describe(exc)}"
            )
            return _rest(replies, recipients[index:], lost)
        except ValueError as exc:  # aiosmtplib refuses to put it on the wire
            replies[recipient] = Reply(553, "5.1.3", f"unusable recipient address: {exc}")
    if not accepted:
        await _reset(client)
        return replies

    try:
        response = await client.data(content)
        reply = _reply(response.code, response.message, "accepted")
    except aiosmtplib.SMTPResponseException as exc:
        reply = _reply(exc.code, exc.message, "message refused")
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
        client.close()
        # The server may or may not have the message: like Postfix, we retry,
        # which can make a duplicate (DESIGN.md, guarantee 2).
        reply = Reply(451, "4.4.2", f"lost connection with {where} during DATA: {_describe(exc)}")
    session.last_used = time.monotonic()
    return _rest(replies, accepted, reply)


def _rest(replies: dict[str, Reply], recipients: list[str], reply: Reply) -> dict[str, Reply]:
    for recipient in recipients:
        replies.setdefault(recipient, reply)
    return replies


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refused transaction so the session can be reused; drop it if that fails."""
    if not client.is_connected:
        return
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


async def close_session(session: SmtpSession) -> None:
    if not session.client.is_connected:
        return
    try:
        await session.client.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        session.client.close()


def _reply(code: int, message: str, fallback: str) -> Reply:
    try:
        return Reply.parse(code, message or fallback)
    except ValueError:  # a code outside 200-599: treat as a temporary failure
        return Reply(451, "4.5.0", f"invalid reply from server: {code} {message}")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
