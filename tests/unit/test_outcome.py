"""What a reply means for a recipient, and the one type that carries it to the event."""

from __future__ import annotations

import pytest

from mailyard.broker import EventKind
from mailyard.delivery.outcome import EVENT_KINDS, Outcome, RecipientOutcome, outcome_of
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


def test_every_outcome_has_its_event_kind():
    assert {o.value: k.value for o, k in EVENT_KINDS.items()} == {
        "delivered": "delivered",
        "deferred": "deferred",
        "failed": "failed",
    }
    assert set(EVENT_KINDS.values()) <= set(EventKind)


def test_recipient_outcome_becomes_protobuf_once_with_everything():
    outcome = RecipientOutcome("a@example.net", Reply(550, "5.1.1", "No such user"), "mx.net", 0.25)
    assert outcome.outcome is Outcome.FAILED
    result = outcome.to_pb()
    assert result.recipient == "a@example.net"
    assert (result.reply.code, result.reply.status, result.reply.text) == (
        550,
        "5.1.1",
        "No such user",
    )
    assert result.remote_mta == "mx.net"
    assert result.elapsed_ms == 250


def test_recipient_outcome_without_remote_mta():
    outcome = RecipientOutcome("a@example.net", Reply(451, "4.4.1", "No answer"))
    assert outcome.outcome is Outcome.DEFERRED
    assert outcome.to_pb().remote_mta == ""
    assert outcome.to_pb().elapsed_ms == 0
