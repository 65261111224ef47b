"""VERP return paths for outgoing jobs (``bounce.return_path_domain``).

The queue signs each remote recipient's envelope sender (``mailyard/verp.py``,
one job per recipient: ``split.py``), and records the original sender in
the message itself, ``X-Mailyard-Envelope-From:``, because the VERP address
replaced it where the recipient would have seen it (Return-Path) and the
bounce service, which keeps no state, reads it back from the headers a
bounce or complaint quotes (the suppression list scopes entries to it).
The field is added before DKIM signing, which does not sign it (an ``X-``
field is none of RFC 6376 §5.4.1's), so every job carries the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mailyard import verp

log = logging.getLogger(__name__)

ENVELOPE_FROM = "X-Mailyard-Envelope-From"


class ReturnPaths:
    """``(message id, recipient) -> return path`` with the current secret."""

    def __init__(self, domain: str, secret_file: Path) -> None:
        self.domain = domain
        self.keyring = verp.watch_keyring(secret_file)  # a bad secret stops start-up here

    def __call__(self, message_id: str, recipient: str) -> str:
        """The VERP address; "" (the sender as given) for an id that is none of ours."""
        try:
            return verp.return_path(
                self.keyring.value, domain=self.domain, message_id=message_id, recipient=recipient
            )
        except ValueError as exc:  # a producer other than ingress: never hold the mail for it
            log.warning("no VERP return path", extra={"message_id": message_id, "error": str(exc)})
            return ""


def with_envelope_from(content: bytes, mail_from: str) -> bytes:
    """``content`` with ``X-Mailyard-Envelope-From: <mail_from>`` on top.

    On top even when the message has one (from an earlier hop, or a client
    that made one up): the bounce service believes the topmost only."""
    if not mail_from:
        return content
    # mail_from passed ingress's checks (no control characters, no CR or LF).
    return f"{ENVELOPE_FROM}: <{mail_from}>\r\n".encode("utf-8", "surrogateescape") + content
