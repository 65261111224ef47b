"""outcome_of: what a reply means for a recipient."""

from __future__ import annotations

import pytest

from mailyard.delivery.outcome import (
    Outcome,
    outcome_of,
    outcome_of_result,
    recipient_result,
    reply_from_pb,
)
from mailyard.reply import Reply


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (250, "2.0.0", Outcome.DELIVERED),
        (251, "2.1.5", Outcome.DELIVERED),
        (252, "", Outcome.DELIVERED),
        (421, "4.7.0", Outcome.DEFERRED),
        (450, "4.2.1", Outcome.DEFERRED),
        (451, "4.3.0", Outcome.DEFERRED),
        (452, "4.5.3", Outcome.DEFERRED),
        (500, "5.5.2", Outcome.FAILED),
        (550, "5.1.1", Outcome.FAILED),
        (552, "5.3.4", Outcome.FAILED),
        (554, "", Outcome.FAILED),
    ],
)
def test_outcome_of(code, status, expected):
    assert outcome_of(Reply(code, status, "text")) is expected


def test_outcome_values_are_event_names():
    assert [o.value for o in Outcome] == ["delivered", "deferred", "failed"]


def test_recipient_result_round_trip():
    reply = Reply(550, "5.1.1", "No such user")
    result = recipient_result("a@example.net", reply, "mx.example.net")
    assert result.recipient == "a@example.net"
    assert result.remote_mta == "mx.example.net"
    assert reply_from_pb(result.reply) == reply
    assert outcome_of_result(result) is Outcome.FAILED


def test_recipient_result_without_remote_mta():
    result = recipient_result("a@example.net", Reply(451, "4.4.1", "No answer"))
    assert result.remote_mta == ""
    assert outcome_of_result(result) is Outcome.DEFERRED
