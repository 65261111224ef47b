"""Log lines: one JSON object per record, ``extra=`` fields at the top level."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from mailyard.logs import JsonFormatter


def line(message: str = "delivered", *, level: int = logging.INFO, **extra: object) -> str:
    record = logging.getLogger("mailyard.test").makeRecord(
        "mailyard.test", level, __file__, 1, message, (), None, extra=extra
    )
    record.created = datetime(2026, 12, 2, 18, 43, 21, 123_400, tzinfo=UTC).timestamp()
    return JsonFormatter().format(record)


def test_a_record_is_one_json_object_with_its_extra_fields_at_the_top():
    text = line(to="user@example.net", attempt=1, delay=0.25, relay=None)
    assert "\n" not in text
    assert json.loads(text) == {
        "ts": "2026-12-02T18:43:21.123+00:00",
        "level": "info",
        "logger": "mailyard.test",
        "msg": "delivered",
        "attempt": 1,
        "delay": 0.25,
        "relay": None,
        "to": "user@example.net",
    }


def test_values_json_does_not_know_are_written_as_text():
    class Opaque:
        def __str__(self) -> str:
            return "opaque thing"

    entry = json.loads(line(path=Path("/var/spool"), what=Opaque(), sources={"x"}))
    assert entry["path"] == "/var/spool"
    assert entry["what"] == "opaque thing"
    assert entry["sources"] == "{'x'}"


def test_what_the_fast_encoder_refuses_is_still_a_line():
    entry = json.loads(line(big=2**70, counts={1: "one"}))
    assert entry["big"] == 2**70
    assert entry["counts"] == {"1": "one"}


def test_text_that_is_not_ascii_stays_readable_and_valid():
    text = line(to="jörg@exämple.de", reply='550 "no" \\ here\r\nnext')
    entry = json.loads(text)
    assert entry["to"] == "jörg@exämple.de"
    assert entry["reply"] == '550 "no" \\ here\r\nnext'
    assert "\n" not in text  # a control character in a value never splits the line


def test_an_exception_is_written_with_its_traceback():
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.getLogger("mailyard.test").makeRecord(
            "mailyard.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error"
    assert entry["exception"].startswith("Traceback")
    assert entry["exception"].endswith("ValueError: broken")
