"""A message's class, and the X-Mailyard-Class: header that is never delivered — no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from mailyard import wire
from mailyard.broker import Publish, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.config import Settings
from mailyard.content import remove_fields
from mailyard.queue.classes import ClassPolicy, Source, classify
from mailyard.queue.service import QueueService
from mailyard.v1 import message_pb2 as pb

CLASSES = frozenset({"transactional", "bulk", "news"})
POLICY = ClassPolicy(
    CLASSES,
    {"shop.example": "transactional", ".shop.example": "bulk", ".example.org": "news"},
)


def decide(
    *,
    user: str = "",
    sender: str = "app@elsewhere.test",
    header: tuple[bytes, ...] = (),
    origin: int = pb.ORIGIN_SMTP,
) -> tuple[str, Source]:
    decision = POLICY.decide(origin=origin, user_class=user, mail_from=sender, header_values=header)
    return decision.mail_class, decision.source


# --- the decision -----------------------------------------------------------


def test_the_users_file_wins_over_everything_a_client_says():
    assert decide(user="bulk", sender="a@shop.example", header=(b"news",)) == (
        "bulk",
        Source.USER,
    )


def test_then_the_sender_domain():
    assert decide(sender="a@shop.example", header=(b"bulk",)) == ("transactional", Source.SENDER)


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("a@shop.example", "transactional"),  # the domain itself
        ("a@mail.shop.example", "bulk"),  # ".shop.example": every subdomain below it
        ("a@x.y.shop.example", "bulk"),
        ("a@MAIL.Shop.Example.", "bulk"),  # case and a trailing dot do not matter
        ("a@example.org", None),  # ".example.org" is not example.org itself
        ("a@news.example.org", "news"),
        ("a@badshop.example", None),  # whole labels only
        ("", None),  # the null sender matches no key
    ],
)
def test_sender_keys_are_a_domain_or_postfix_style_every_subdomain(sender, expected):
    assert POLICY.sender_class(sender) == expected


def test_the_nearest_key_wins():
    policy = ClassPolicy(CLASSES, {".example.com": "bulk", ".eu.example.com": "news"})
    assert policy.sender_class("a@shop.eu.example.com") == "news"
    assert policy.sender_class("a@shop.us.example.com") == "bulk"


def test_then_the_header_then_transactional():
    assert decide(header=(b"Bulk",)) == ("bulk", Source.HEADER)  # any case
    assert decide() == ("transactional", Source.DEFAULT)


def test_an_unknown_header_value_is_ignored_and_reported():
    decision = POLICY.decide(
        origin=pb.ORIGIN_SMTP, user_class="", mail_from="a@x.test", header_values=[b"promo"]
    )
    assert (decision.mail_class, decision.source) == ("transactional", Source.DEFAULT)
    assert [(i.source, i.name) for i in decision.ignored] == [(Source.HEADER, "promo")]


def test_the_first_header_that_names_a_class_decides():
    assert decide(header=(b"promo", b"news", b"bulk")) == ("news", Source.HEADER)


def test_a_users_file_class_this_queue_does_not_know_falls_through():
    """An ingress whose queue.classes is newer (a rollout): the next source decides."""
    decision = POLICY.decide(
        origin=pb.ORIGIN_SMTP, user_class="promo", mail_from="a@x.test", header_values=[b"bulk"]
    )
    assert (decision.mail_class, decision.source) == ("bulk", Source.HEADER)
    assert [(i.source, i.name) for i in decision.ignored] == [(Source.USER, "promo")]


@pytest.mark.parametrize("origin", [pb.ORIGIN_DSN, pb.ORIGIN_TLSRPT])
def test_what_mailyard_makes_itself_is_transactional(origin):
    assert decide(user="bulk", sender="a@mail.shop.example", header=(b"bulk",), origin=origin) == (
        "transactional",
        Source.GENERATED,
    )


# --- the header -------------------------------------------------------------

TOP = b"Received: from client.test\r\n\tby mx.test; Mon, 1 Jun 2026 10:00:00 +0000\r\n"


def test_the_header_is_removed_with_its_folded_lines():
    content = (
        TOP + b"X-Mailyard-Class: bulk\r\nSubject: hi\r\n"
        b"x-mailyard-class :\r\n  news\r\nTo: a@b.test\r\n\r\nbody\r\n"
    )  # fmt: skip
    cleaned, values = remove_fields(content, b"X-Mailyard-Class")
    assert cleaned == TOP + b"Subject: hi\r\nTo: a@b.test\r\n\r\nbody\r\n"
    assert values == [b"bulk", b"news"]


def test_only_the_header_section_is_looked_at():
    """A message quoted in the body (a forward, a bounce) keeps its fields."""
    content = b"Subject: fwd\r\n\r\nX-Mailyard-Class: bulk\r\n"
    assert remove_fields(content, b"X-Mailyard-Class") == (content, [])


def test_names_must_match_whole():
    content = b"X-Mailyard-Classes: bulk\r\nX-Mailyard-Class-Note: x\r\n\r\n"
    assert remove_fields(content, b"X-Mailyard-Class") == (content, [])


def test_content_that_is_all_header_keeps_the_rest():
    assert remove_fields(b"A: b\r\nX-Mailyard-Class: bulk", b"X-Mailyard-Class") == (
        b"A: b\r\n",
        [b"bulk"],
    )


def accepted(content: bytes, **fields: object) -> pb.AcceptedMessage:
    defaults: dict[str, object] = {
        "message_id": "01C",
        "mail_from": "app@elsewhere.test",
        "recipients": ["a@alpha.test"],
        "origin": pb.ORIGIN_SMTP,
        "received_at": wire.timestamp(datetime.now(UTC)),
    }
    return pb.AcceptedMessage(content=content, **(defaults | fields))  # type: ignore[arg-type]


def test_the_header_goes_whatever_decided_the_class():
    message = accepted(
        TOP + b"X-Mailyard-Class: news\r\nSubject: s\r\n\r\nb\r\n", mail_class="bulk"
    )
    classified, decision = classify(message, POLICY)
    assert (classified.mail_class, decision.source) == ("bulk", Source.USER)
    assert classified.content == TOP + b"Subject: s\r\n\r\nb\r\n"
    assert b"X-Mailyard-Class" in message.content  # the input is left as it was


def test_a_message_without_the_header_keeps_its_content():
    message = accepted(TOP + b"Subject: s\r\n\r\nb\r\n")
    classified, decision = classify(message, POLICY)
    assert (classified.content, classified.mail_class) == (message.content, "transactional")
    assert decision.source is Source.DEFAULT


# --- the queue service ------------------------------------------------------


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_queue_puts_each_message_s_jobs_in_its_lane_without_the_header(caplog):
    settings = Settings(
        hostname="mx.test",
        queue={
            "classes": {"transactional": 10, "bulk": 1},
            "sender_classes": {".news.test": "bulk"},
        },  # type: ignore[arg-type]
    )
    queue = QueueService(settings, MemoryBroker())
    await queue.start()
    broker = queue.broker
    assert isinstance(broker, MemoryBroker)
    ignored = counter("mailyard_queue_class_ignored_total", source="header")
    by_header = counter("mailyard_queue_classified_total", **{"class": "bulk", "source": "header"})
    messages = [
        accepted(TOP + b"X-Mailyard-Class: bulk\r\n\r\nb\r\n", message_id="01H"),
        accepted(TOP + b"\r\nb\r\n", message_id="01S", mail_from="app@mail.news.test"),
        accepted(TOP + b"X-Mailyard-Class: promo\r\n\r\nb\r\n", message_id="01P"),
    ]
    settled = await broker.deliver(QueueName.INBOUND, messages)
    lanes = {
        job.message_id: (output.lane, job.mail_class)
        for output in settled.outputs
        if isinstance(output, Publish) and output.queue is QueueName.DELIVERY
        for job in output.items
    }
    assert lanes == {
        "01H": ("bulk", "bulk"),
        "01S": ("bulk", "bulk"),
        "01P": ("transactional", "transactional"),
    }
    for output in settled.outputs:
        for job in output.items if isinstance(output, Publish) else ():
            assert b"X-Mailyard-Class" not in job.content
    assert counter("mailyard_queue_class_ignored_total", source="header") == ignored + 1
    assert (
        counter("mailyard_queue_classified_total", **{"class": "bulk", "source": "header"})
        == by_header + 1
    )
    [warning] = [r for r in caplog.records if r.getMessage().startswith("ignored a message class")]
    assert (warning.message_id, warning.given) == ("01P", "promo")
    await queue.stop(1)


async def test_jobs_of_two_classes_to_one_domain_are_never_batched_together():
    queue = QueueService(Settings(hostname="mx.test"), MemoryBroker())
    await queue.start()
    broker = queue.broker
    assert isinstance(broker, MemoryBroker)
    settled = await broker.deliver(
        QueueName.INBOUND,
        [
            accepted(TOP + b"X-Mailyard-Class: bulk\r\n\r\nb\r\n", message_id="01A"),
            accepted(TOP + b"\r\nb\r\n", message_id="01B"),
            accepted(TOP + b"X-Mailyard-Class: bulk\r\n\r\nb\r\n", message_id="01C"),
        ],
    )
    batches = sorted(
        (o.lane, [job.message_id for job in o.items])
        for o in settled.outputs
        if isinstance(o, Publish)
    )
    assert batches == [("bulk", ["01A", "01C"]), ("transactional", ["01B"])]
    await queue.stop(1)
