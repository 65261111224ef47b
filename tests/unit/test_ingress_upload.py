"""A message upload's limits: size, shared memory, line length, header size, NUL."""

from __future__ import annotations

import pytest

from mailyard.ingress.limits import ClientConnections, DataMemory, client_key
from mailyard.ingress.upload import Upload


def upload(memory: DataMemory | None = None, **options: object) -> Upload:
    settings: dict[str, object] = {"max_size": 10_000, "header_limit": 200, "strip_nul": False}
    settings |= options
    return Upload(memory=memory or DataMemory(1 << 20), **settings)  # type: ignore[arg-type]


def test_lines_are_kept_unstuffed():
    up = upload()
    for line in (b"Subject: x\r\n", b"\r\n", b"..dot\r\n", b"end\r\n"):
        up.feed_line(line)
    assert up.problem is None
    assert up.content() == b"Subject: x\r\n\r\n.dot\r\nend\r\n"


def test_over_the_size_limit_nothing_is_kept_and_the_reply_is_552():
    memory = DataMemory(1 << 20)
    up = upload(memory, max_size=100)
    up.feed_line(b"Subject: x\r\n\r\n")
    for _ in range(20):
        up.feed_line(b"x" * 10 + b"\r\n")
    assert (up.problem.code, up.problem.status) == (552, "5.3.4")
    assert up.content() == b""
    assert memory.used == 0
    assert up.size == 14 + 20 * 12  # still counted to the end


def test_the_shared_memory_budget_refuses_with_452_and_gives_back():
    memory = DataMemory(1024 * 1024)
    first, second = upload(memory, max_size=2 << 20), upload(memory, max_size=2 << 20)
    first.feed_line(b"\r\n")
    first.feed_chunk(b"x" * (1024 * 1024 - 100))
    second.feed_line(b"\r\n")
    second.feed_chunk(b"y" * 200)
    assert (second.problem.code, second.problem.status) == (452, "4.3.1")
    assert first.problem is None
    first.release()
    assert memory.used == 0


def test_a_text_line_is_at_most_1000_octets_with_its_crlf():
    up = upload()
    up.feed_line(b"\r\n")
    up.feed_line(b"x" * 998 + b"\r\n")  # the most allowed
    assert up.problem is None
    up.feed_line(b"." + b"x" * 998 + b"\r\n")  # a transparency dot does not count
    assert up.problem is None
    up.feed_line(b"x" * 999 + b"\r\n")
    assert (up.problem.code, up.problem.status) == (500, "5.5.2")


def test_the_header_section_is_capped():
    up = upload(header_limit=100)
    up.feed_line(b"X-Long: " + b"y" * 150 + b"\r\n")
    assert (up.problem.code, up.problem.status) == (552, "5.3.4")
    assert up.reason == "header_too_big"


def test_the_body_does_not_count_as_headers():
    up = upload(header_limit=50)
    up.feed_line(b"Subject: x\r\n")
    up.feed_line(b"\r\n")
    for _ in range(10):
        up.feed_line(b"b" * 40 + b"\r\n")
    assert up.problem is None


def test_the_end_of_the_headers_is_found_across_bdat_chunks():
    up = upload(header_limit=40)
    up.feed_chunk(b"Subject: x\r\n\r")
    up.feed_chunk(b"\n" + b"b" * 100)
    assert up.problem is None


@pytest.mark.parametrize(("strip", "kept"), [(False, None), (True, b"\r\nab\r\n")])
def test_nul_is_refused_or_stripped(strip, kept):
    up = upload(strip_nul=strip)
    up.feed_line(b"\r\n")
    up.feed_line(b"a\x00b\r\n")
    if kept is None:
        assert (up.problem.code, up.problem.status) == (554, "5.6.0")
    else:
        assert up.problem is None
        assert up.content() == kept


def test_connections_per_client_and_release():
    clients = ClientConnections(per_client=2, rate_per_minute=0)
    assert clients.admit("192.0.2.1") is None
    assert clients.admit("::ffff:192.0.2.1") is None  # the same client
    assert clients.admit("192.0.2.1") == "connections_per_client"
    assert clients.admit("192.0.2.2") is None
    clients.release("192.0.2.1")
    assert clients.admit("192.0.2.1") is None


def test_connection_rate_per_client_with_a_clock():
    now = [0.0]
    clients = ClientConnections(per_client=100, rate_per_minute=3, clock=lambda: now[0])
    for _ in range(3):
        assert clients.admit("198.51.100.7") is None
        clients.release("198.51.100.7")
    assert clients.admit("198.51.100.7") == "connection_rate"
    now[0] = 61.0
    assert clients.admit("198.51.100.7") is None


def test_client_keys():
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key("2001:db8::1") == "2001:db8::1"
    assert client_key("not an ip") == "not an ip"
