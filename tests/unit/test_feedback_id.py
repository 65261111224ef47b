"""Gmail's Feedback-ID header: fields from configuration and headers, signed with the rest."""

from __future__ import annotations

import pytest

from mailyard.queue.feedback import FeedbackIdSource, feedback_id, with_feedback_id

SOURCE = FeedbackIdSource(
    "mailyard-esp",
    campaign_header="X-Campaign-ID",
    customer_header="X-Customer-ID",
    mail_type_header="X-Mail-Type",
)
CONTENT = (
    b"Received: from client.test\r\nFrom: app@sender.test\r\nX-Campaign-ID: spring-2027\r\n"
    b"X-Mail-Type: newsletter\r\nSubject: s\r\n\r\nbody\r\n"
)


def test_the_fields_come_from_the_headers_and_the_login() -> None:
    added = with_feedback_id(CONTENT, "shop-42", SOURCE)
    assert added == b"Feedback-ID: spring-2027:shop-42:newsletter:mailyard-esp\r\n" + CONTENT


def test_a_customer_header_wins_over_the_login() -> None:
    content = CONTENT.replace(b"Subject", b"X-Customer-ID: tenant-7\r\nSubject")
    assert with_feedback_id(content, "shop-42", SOURCE).startswith(
        b"Feedback-ID: spring-2027:tenant-7:newsletter:mailyard-esp\r\n"
    )


def test_absent_fields_are_empty_but_keep_their_place() -> None:
    assert feedback_id({}, "", FeedbackIdSource("esp")) == ":::esp"
    assert feedback_id({"x-campaign-id": "c1"}, "", SOURCE) == "c1:::mailyard-esp"


def test_a_message_with_its_own_feedback_id_keeps_it() -> None:
    content = b"Feedback-ID: a:b:c:theirs\r\n" + CONTENT
    assert with_feedback_id(content, "shop-42", SOURCE) is content


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("spring sale: 50% off", "spring-sale-50-off"),  # no colons, no spaces
        ("  padded  ", "padded"),
        ("x" * 100, "x" * 64),
        ("caf\u00e9", "caf"),
    ],
)
def test_field_values_are_made_safe(value: str, cleaned: str) -> None:
    assert feedback_id({"x-campaign-id": value}, "", SOURCE).split(":")[0] == cleaned
