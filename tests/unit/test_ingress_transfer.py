"""Reading DATA off the stream: whole lines in blocks, the end found as line by line."""

from __future__ import annotations

import asyncio
import random

import pytest

from mailyard.ingress import transfer
from mailyard.ingress.limits import DataMemory
from mailyard.ingress.transfer import Status, whole_lines
from mailyard.ingress.upload import Upload


def upload(**options: object) -> Upload:
    settings: dict[str, object] = {"max_size": 10_000, "header_limit": 500, "strip_nul": False}
    settings |= options
    return Upload(memory=DataMemory(1 << 30), **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arrived", "after_crlf", "expected"),
    [
        (b".\r\nQUIT\r\n", True, (3, True)),  # an empty message
        (b".\r\n", False, (3, False)),  # after a bare LF: a line of content
        (b"a\r\nb\r\n.\r\nQUIT\r\n", True, (9, True)),
        (b"a\r\nb\r\n.\r", True, (6, False)),  # the end not all there: whole lines only
        (b"a\r\nb\n.\r\nc\r\n.\r\n", True, (14, True)),  # "." after a bare LF is content
        (b"a\r\n.\nb\r\n", True, (8, False)),  # "." CR-less is content
        (b"half a line", True, (0, False)),
        (b"a\r\npart", True, (3, False)),
        (b"\r\n.\r\n", False, (5, True)),  # an empty CRLF line, then the end
    ],
)
def test_whole_lines(arrived: bytes, after_crlf: bool, expected: tuple[int, bool]):
    assert whole_lines(arrived, after_crlf) == expected


LINES = [
    b"Subject: x\r\n",
    b"\r\n",
    b"body\r\n",
    b".\r\n",
    b"..\r\n",
    b".dot\r\n",
    b"bare\n",
    b"cr\rinside\r\n",
    b"nul\x00here\r\n",
    b"x" * 998 + b"\r\n",
    b"x" * 999 + b"\r\n",
    b"." + b"y" * 998 + b"\r\n",
    b"z" * 400 + b"\r\n",
]


def by_lines(lines: list[bytes], **options: object) -> Upload:
    up = upload(**options)
    for line in lines:
        up.feed_line(line)
    return up


def in_blocks(lines: list[bytes], cuts: list[int], **options: object) -> Upload:
    up = upload(**options)
    for start, end in zip([0, *cuts], [*cuts, len(lines)], strict=True):
        if end > start:
            up.feed_lines(b"".join(lines[start:end]))
    return up


@pytest.mark.parametrize("seed", range(300))
def test_blocks_of_lines_give_what_line_by_line_gives(seed: int):
    rng = random.Random(seed)
    lines = [rng.choice(LINES) for _ in range(rng.randint(1, 40))]
    cuts = sorted(rng.sample(range(1, len(lines) + 1), k=rng.randint(0, min(5, len(lines)))))
    options = {
        "max_size": rng.choice([300, 3000, 100_000]),
        "header_limit": rng.choice([50, 5000]),
        "strip_nul": rng.random() < 0.5,
    }
    one, other = by_lines(lines, **options), in_blocks(lines, cuts, **options)
    assert (other.problem, other.reason, other.size) == (one.problem, one.reason, one.size)
    assert other.content() == one.content()


def test_the_part_of_a_line_too_long_is_refused_and_counted_like_line_by_line():
    # What read_lines hands on when a line outgrows the stream's limit.
    part = b"." + b"x" * 1500
    one, other = by_lines([b"Subject: x\r\n", part]), upload()
    other.feed_lines(b"Subject: x\r\n" + part)
    assert (other.problem, other.reason, other.size) == (one.problem, one.reason, one.size)
    assert other.reason == "line_too_long"
    assert other.size == 12 + 1500


def test_a_block_is_unstuffed_like_its_lines():
    up = upload()
    up.feed_lines(b"..first\r\nplain\r\n...two\r\n.\r\n")
    assert up.problem is None
    assert up.content() == b".first\r\nplain\r\n..two\r\n\r\n"


async def read(pieces: list[bytes], **options: object) -> tuple[Status, Upload, bytes]:
    """read_lines on a real StreamReader fed ``pieces`` one loop turn apart; also
    what is left in the stream after the message."""
    reader = asyncio.StreamReader()
    up = upload(**options)

    class Stream:
        def __init__(self) -> None:
            self.reader = reader
            self.restarts = 0

        def restart_idle_timer(self) -> None:
            self.restarts += 1

        def too_slow(self, started: float, size: int) -> bool:
            return False

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    status = await transfer.read_lines(Stream(), up, 0.0)
    await feeding
    return status, up, await reader.read()


async def test_the_message_ends_at_crlf_dot_crlf_and_what_follows_stays_in_the_stream():
    status, up, rest = await read([b"Subject: x\r\n\r\n..body\r\n.\r\nQUIT\r\n"])
    assert status is Status.DONE
    assert up.content() == b"Subject: x\r\n\r\n.body\r\n"
    assert rest == b"QUIT\r\n"


async def test_an_end_split_across_reads_is_found():
    pieces = [b"Subject: x\r\n", b"\r\nbo", b"dy\r\n.", b"\r", b"\nMAIL FROM:<a@b>\r\n"]
    status, up, rest = await read(pieces)
    assert status is Status.DONE
    assert up.content() == b"Subject: x\r\n\r\nbody\r\n"
    assert rest == b"MAIL FROM:<a@b>\r\n"


@pytest.mark.parametrize("smuggled", [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r"])
async def test_the_smuggling_forms_of_the_end_are_content(smuggled: bytes):
    message = b"Subject: x\r\n\r\nbody" + smuggled + b"MAIL FROM:<evil@x>\r\n"
    status, up, rest = await read([message + b".\r\n"])
    assert status is Status.DONE
    assert b"MAIL FROM:<evil@x>" in up.content()
    assert rest == b""


async def test_a_line_longer_than_the_stream_limit_is_read_in_parts_and_refused():
    reader_limit = 64  # what aiosmtpd gives its reader is line_length_limit
    reader = asyncio.StreamReader(limit=reader_limit)
    up = upload()

    class Stream:
        def __init__(self) -> None:
            self.reader = reader

        def restart_idle_timer(self) -> None:
            pass

        def too_slow(self, started: float, size: int) -> bool:
            return False

    reader.feed_data(b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\nend\r\n.\r\nQUIT\r\n")
    reader.feed_eof()
    assert await transfer.read_lines(Stream(), up, 0.0) is Status.DONE
    assert up.reason == "line_too_long"
    assert up.size == 14 + 1202 + 5
    assert await reader.read() == b"QUIT\r\n"


async def test_a_client_that_leaves_mid_message_is_closed():
    status, _, _ = await read([b"Subject: x\r\n\r\nbody\r\nno end"])
    assert status is Status.CLOSED
