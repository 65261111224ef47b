"""One socket write per event-loop turn for the AMQP connection.

aiormq writes every frame (a publish, an ack) to the socket as soon as it is
queued: one ``send()`` system call each, which on the benchmark's profile
was a fifth of the queue and delivery services' CPU — on loopback the sender
pays for the receiver's TCP processing too. Frames queued during one turn of
the event loop (dozens when a batch of deliveries arrives together) are
joined here and sent with one call at the end of that turn.

aiormq lets the transport be chosen (``TransportFactory``); aio-pika passes
only the connection parameters it knows, hence the small connection subclass.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import ConnectionParameter
from aiormq.connection import TCPTransportFactory
from yarl import URL


class CoalescingTransport(asyncio.Transport):
    """Wraps a transport; ``write`` calls in one loop turn become one send."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(inner.get_extra_info("extra"))
        self._inner = inner
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._inner.is_closing():
                self._inner.write(data)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        self._pending.clear()
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        limits: tuple[int, int] = self._inner.get_write_buffer_limits()
        return limits

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()


class CoalescingTransportFactory(TCPTransportFactory):
    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().create(url, **kwargs)
        # Swap the writer's transport in place: a second StreamWriter would
        # close the socket when the first one is garbage-collected.
        writer._transport = CoalescingTransport(  # type: ignore[attr-defined]
            writer.transport,  # type: ignore[arg-type]
            asyncio.get_running_loop(),
        )
        return reader, writer


class CoalescingConnection(aio_pika.RobustConnection):
    PARAMETERS = (
        *aio_pika.RobustConnection.PARAMETERS,
        ConnectionParameter(name="transport_factory", parser=lambda v: v, is_kwarg=True),
    )
