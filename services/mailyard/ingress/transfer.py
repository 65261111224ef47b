"""Reading a message off the socket: DATA lines to the lone dot, BDAT chunks by size.

What is kept, and what the client is told, is ``upload.py``'s business; this
only moves bytes from the stream into it, restarts the idle timer on every
piece (a slow but steady upload is not idle) and stops a client that sends
more slowly than ``ingress.limits.min_data_rate``.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Protocol

from mailyard.ingress.upload import Upload

PIECE = 64 * 1024  # BDAT is read in pieces: a chunk's size is the client's word


class Status(Enum):
    DONE = "done"
    CLOSED = "closed"  # the client went away
    TOO_SLOW = "too_slow"


class Stream(Protocol):
    @property
    def reader(self) -> asyncio.StreamReader: ...

    def restart_idle_timer(self) -> None: ...

    def too_slow(self, started: float, size: int) -> bool: ...


def too_slow(elapsed: float, size: int, *, idle_timeout: float, min_rate: int) -> bool:
    """Postfix's smtpd_min_data_rate: the deadline grows with what arrived."""
    return bool(min_rate) and elapsed > idle_timeout + size / min_rate


TERMINATOR = b"\r\n.\r\n"


def whole_lines(arrived: bytes | bytearray, after_crlf: bool) -> tuple[int, bool]:
    """How many of the octets that have ``arrived`` are whole DATA lines to take
    now, and whether they end the message (its terminator then counted in).

    ``after_crlf``: whether the line before them ended in CRLF. The message
    ends at the first "." line that follows a CRLF-ended line, which is the
    first CRLF "." CRLF (or a "." line at once, after one). 0: no whole
    line has arrived.
    """
    if after_crlf and arrived[:3] == b".\r\n":
        return 3, True
    end = arrived.find(TERMINATOR)
    if end >= 0:
        return end + len(TERMINATOR), True
    return arrived.rfind(b"\n") + 1, False


async def read_lines(stream: Stream, upload: Upload, started: float) -> Status:
    """DATA lines to the lone dot.

    A line ends at LF so that a bare LF can be seen, but the message ends
    only at CRLF "." CRLF: the dot line must follow a line that ended in
    CRLF (SMTP smuggling uses the other forms).

    What has already arrived is taken as a block of whole lines (the
    message is usually all there after its first line); only a line not yet
    complete is waited for, one line at a time.
    """
    reader = stream.reader
    after_crlf = True
    while True:
        # StreamReader has no public view of what it holds (see the server's
        # _more_input_waiting); without one, every line is read on its own.
        arrived: bytearray | None = getattr(reader, "_buffer", None)
        take, done = whole_lines(arrived, after_crlf) if arrived else (0, False)
        if take:
            piece = await reader.readexactly(take)  # all there: no wait
        else:  # not one whole line yet: wait for the next
            try:
                piece = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as error:
                piece = await reader.read(error.consumed)  # a line too long, in parts
            except asyncio.IncompleteReadError:
                return Status.CLOSED
            done = after_crlf and piece == b".\r\n"
        stream.restart_idle_timer()
        if done:
            if len(piece) > 3:
                upload.feed_lines(piece[:-3])  # less the "." line
            return Status.DONE
        after_crlf = piece.endswith(b"\r\n")
        upload.feed_lines(piece)
        if stream.too_slow(started, upload.size):
            return Status.TOO_SLOW


async def read_chunk(stream: Stream, upload: Upload, size: int, started: float) -> Status:
    remaining = size
    while remaining:
        try:
            piece = await stream.reader.readexactly(min(remaining, PIECE))
        except asyncio.IncompleteReadError:
            return Status.CLOSED
        stream.restart_idle_timer()
        remaining -= len(piece)
        upload.feed_chunk(piece)
        if stream.too_slow(started, upload.size):
            return Status.TOO_SLOW
    return Status.DONE


async def skip(stream: Stream, size: int) -> None:
    """Read a refused chunk and drop it, so the session keeps its place in the stream."""
    remaining = size
    while remaining:
        piece = await stream.reader.readexactly(min(remaining, PIECE))
        stream.restart_idle_timer()
        remaining -= len(piece)
