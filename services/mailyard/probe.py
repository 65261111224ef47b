"""``mailyard probe``: send one message and succeed only on a 250 — for ``helm test``.

Send it to a local domain (``ingress.local_domains``) so that it is accepted
from anywhere and never leaves: the bounce service counts it and that is all.
"""

from __future__ import annotations

import smtplib
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


def probe(host: str, port: int, recipient: str, sender: str, timeout: float) -> int:
    message = EmailMessage()
    message["From"] = sender or f"probe@{socket.getfqdn()}"
    message["To"] = recipient
    message["Subject"] = "Mailyard probe"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="mailyard.probe")
    message["X-Mailyard-Probe"] = "yes"
    message.set_content("This message checks that Mailyard's ingress accepts mail.\n")
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as client:
            client.ehlo("mailyard-probe")
            steps: tuple[tuple[str, Callable[[], tuple[int, bytes]]], ...] = (
                ("MAIL", lambda: client.mail(sender)),
                ("RCPT", lambda: client.rcpt(recipient)),
                ("DATA", lambda: client.data(message.as_bytes())),
            )
            for step, command in steps:
                code, text = command()
                if code != 250:
                    print(f"probe refused at {step}: {code} {text.decode()}", file=sys.stderr)
                    return 1
    except (smtplib.SMTPException, OSError) as exc:
        print(f"probe failed: {host}:{port}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"probe accepted by {host}:{port} for {recipient}: {code} {text.decode()}")
    return 0
