"""Our messages as AMQP messages: properties and headers.

``type`` carries the protobuf type's full name, ``content_type`` is
``application/x-protobuf``, ``message_id`` is stable, and the trace ids are
headers, so one email can be followed in the management UI without decoding
bodies. Every message is persistent.
"""

from __future__ import annotations

from typing import Any

import aio_pika

from mailyard import wire

CONTENT_TYPE = "application/x-protobuf"


def amqp_message(encoded: wire.Encoded, *, expiration: float | None = None) -> aio_pika.Message:
    """``expiration``: a per-message TTL in seconds (on a retry rung, shorter than
    the rung's own TTL, which it then overrides: the jitter of ``Publish.spread``)."""
    built = message(encoded.body, encoded.type, encoded.message_id, dict(encoded.headers))
    if expiration is not None:
        built.expiration = expiration
    return built


def message(
    body: bytes, type_name: str | None, message_id: str | None, headers: dict[str, Any]
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        type=type_name,
        message_id=message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )
