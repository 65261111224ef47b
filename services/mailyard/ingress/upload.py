"""One message arriving, line by line (DATA) or chunk by chunk (BDAT) — no I/O.

The server reads bytes off the socket and feeds them here; this decides what
is kept and, once something is wrong, what the client will be told at the
end of the upload (RFC 5321 §4.2.5: the reply comes after the data, so the
rest is read and dropped, never buffered):

- the message may not exceed ``max_size`` (SIZE, RFC 1870): ``552 5.3.4``;
- every session's upload draws on one shared :class:`DataMemory`; when it
  is spent, ``452 4.3.1`` (try again later), and what this one held is
  given back at once;
- a DATA text line is at most 1000 octets with its CRLF (RFC 5321
  §4.5.3.1.6), after the transparency dot is removed;
- the header section is at most ``header_limit`` octets (Postfix's
  ``header_size_limit``): ``552 5.3.4``;
- NUL is refused (``554 5.6.0``) or stripped, by configuration.
"""

from __future__ import annotations

from mailyard.ingress.limits import DataMemory
from mailyard.reply import Reply

TEXT_LINE_LIMIT = 1000  # octets, CRLF included
RESERVE = 64 * 1024  # memory is taken from the shared budget in blocks, not per line

LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 section 4.5.3.1.6: 1000 octets)")
NO_MEMORY = Reply(452, "4.3.1", "Insufficient system storage, try again later")
NUL_REFUSED = Reply(554, "5.6.0", "Message contains NUL characters")


def too_big(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message size exceeds fixed maximum message size of {limit} octets")


def header_too_big(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message header section exceeds {limit} octets")


class Upload:
    def __init__(
        self, *, max_size: int, header_limit: int, strip_nul: bool, memory: DataMemory
    ) -> None:
        self.max_size = max_size
        self.header_limit = header_limit
        self.strip_nul = strip_nul
        self.memory = memory
        self.size = 0  # octets received, kept or not
        self.problem: Reply | None = None
        self.reason = ""  # a metric label for the problem
        self._parts: list[bytes] = []
        self._held = 0  # octets reserved from the shared memory
        self._used = 0  # octets of those that hold the message
        self._in_headers = True
        self._header_size = 0
        self._tail = b""  # the last octets, to find the end of the headers across chunks

    def feed_line(self, line: bytes) -> None:
        """One DATA line as sent (dot-stuffed, with its line ending)."""
        if line.startswith(b"."):
            line = line[1:]
        if len(line) > TEXT_LINE_LIMIT and self.problem is None:
            self._fail(LINE_TOO_LONG, "line_too_long")
        self._feed(line)

    def feed_lines(self, lines: bytes) -> None:
        """DATA lines as sent, at once (each ends with an LF but perhaps the
        last, the part of a line too long that has come so far): what
        :meth:`feed_line` does to each, in a few passes of C over all of them
        (line by line in Python, a 2 KB message cost more than its store).
        Where one of them holds a NUL, a line too long, or the octet that
        crosses ``max_size``, they go line by line instead, so that the first
        problem is the one the client is told, as if they had come one by one."""
        data = lines[1:] if lines.startswith(b".") else lines
        data = data.replace(b"\n.", b"\n")  # the transparency dot of every other line
        if self.problem is not None:
            self.size += len(data)  # counted to the end, nothing kept
            return
        if (
            b"\x00" in data
            or self.size + len(data) > self.max_size
            or (len(data) > TEXT_LINE_LIMIT and _longest_line(data) > TEXT_LINE_LIMIT)
        ):
            for line in _split_lines(lines):
                self.feed_line(line)
            return
        self._feed(data)

    def feed_chunk(self, data: bytes) -> None:
        """One piece of a BDAT chunk: octets as they are, no transparency."""
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.problem is not None:
            return
        if self.size > self.max_size:
            self._fail(too_big(self.max_size), "message_too_big")
            return
        if b"\x00" in data:
            if not self.strip_nul:
                self._fail(NUL_REFUSED, "nul")
                return
            data = data.replace(b"\x00", b"")
        if self._in_headers:
            self._count_header(data)
            if self.problem is not None:
                return
        self._used += len(data)
        if self._used > self._held:
            block = max(RESERVE, self._used - self._held)
            if not self.memory.take(block):
                self._fail(NO_MEMORY, "data_memory")
                return
            self._held += block
        self._parts.append(data)

    def _count_header(self, data: bytes) -> None:
        joined = self._tail + data
        end = joined.find(b"\r\n\r\n")
        if self._header_size == 0 and data.startswith(b"\r\n"):
            end = -2  # no header section at all
        if end == -1:
            self._header_size += len(data)
            self._tail = joined[-3:]
        else:
            self._header_size += max(0, end + 2 - len(self._tail))
            self._in_headers = False
        if self._header_size > self.header_limit:
            self._fail(header_too_big(self.header_limit), "header_too_big")

    def _fail(self, reply: Reply, reason: str) -> None:
        self.problem = reply
        self.reason = reason
        self.release()

    def content(self) -> bytes:
        return b"".join(self._parts)

    def release(self) -> None:
        """Give back the memory this upload holds (when it is stored, or refused)."""
        self._parts = []
        self.memory.give_back(self._held)
        self._held = self._used = 0


def _longest_line(lines: bytes) -> int:
    """The octets of the longest of these lines, counting an LF for each (so a
    last part without one may count one more than it has: then the lines go
    one by one, which tells exactly)."""
    return max(map(len, lines.split(b"\n"))) + 1


def _split_lines(lines: bytes) -> list[bytes]:
    """The lines, each with its LF, and a last part without one if there is one
    (bytes.splitlines would also split at a bare CR)."""
    *whole, rest = lines.split(b"\n")
    return [line + b"\n" for line in whole] + ([rest] if rest else [])
