"""wire: protobuf bodies in AMQP messages, and the checks on the way in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message

from mailyard import wire
from mailyard.v1 import message_pb2 as pb

WHEN = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def accepted_message() -> pb.AcceptedMessage:
    return pb.AcceptedMessage(
        message_id="01MSG",
        mail_from="sender@example.com",
        recipients=["a@example.net", "b@example.org"],
        content=b"Subject: hi\r\n\r\nbody\r\n",
        received_at=wire.timestamp(WHEN),
        client=pb.Client(address="192.0.2.1", helo="client.example", tls=True, login="app"),
        origin=pb.ORIGIN_SMTP,
    )


def reply() -> pb.SmtpReply:
    return pb.SmtpReply(code=451, status="4.7.1", text="Greylisted")


def tls_session() -> pb.TlsSession:
    return pb.TlsSession(
        policy="verify", version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", verified=True
    )


def result() -> pb.RecipientResult:
    return pb.RecipientResult(
        recipient="a@example.net", reply=reply(), remote_mta="mx.example.net", tls=tls_session()
    )


def delivery_job() -> pb.DeliveryJob:
    return pb.DeliveryJob(
        message_id="01MSG",
        queue_id="01MSG.1",
        domain="example.net",
        mail_from="",
        recipients=["a@example.net"],
        content=b"Subject: hi\r\n\r\nbody\r\n",
        received_at=wire.timestamp(WHEN),
        expires_at=wire.timestamp(WHEN),
        attempts=2,
        last_results=[result()],
        origin=pb.ORIGIN_DSN,
    )


def delivery_event() -> pb.DeliveryEvent:
    return pb.DeliveryEvent(
        kind=pb.EVENT_KIND_FAILED,
        message_id="01MSG",
        queue_id="01MSG.1",
        domain="example.net",
        mail_from="sender@example.com",
        results=[result()],
        received_at=wire.timestamp(WHEN),
        occurred_at=wire.timestamp(WHEN),
        attempts=4,
        original_headers=b"Subject: hi\r\n",
        origin=pb.ORIGIN_SMTP,
    )


def client() -> pb.Client:
    return pb.Client(address="2001:db8::1", helo="h", tls=False, login="")


def accepted_batch() -> pb.AcceptedBatch:
    return pb.AcceptedBatch(messages=[accepted_message(), accepted_message()])


def delivery_batch() -> pb.DeliveryBatch:
    return pb.DeliveryBatch(domain="example.net", jobs=[delivery_job(), delivery_job()])


def message_options() -> pb.MessageOptions:
    return pb.MessageOptions(ret="HDRS", envid="QQ314159", smtputf8=True, eight_bit=True)


def recipient_options() -> pb.RecipientOptions:
    return pb.RecipientOptions(notify="SUCCESS,FAILURE", orcpt="rfc822;a+2Bb@example.net")


SAMPLES = {
    "mailyard.v1.MessageOptions": message_options,
    "mailyard.v1.RecipientOptions": recipient_options,
    "mailyard.v1.AcceptedMessage": accepted_message,
    "mailyard.v1.AcceptedBatch": accepted_batch,
    "mailyard.v1.DeliveryBatch": delivery_batch,
    "mailyard.v1.Client": client,
    "mailyard.v1.DeliveryJob": delivery_job,
    "mailyard.v1.RecipientResult": result,
    "mailyard.v1.SmtpReply": reply,
    "mailyard.v1.TlsSession": tls_session,
    "mailyard.v1.DeliveryEvent": delivery_event,
}


def test_samples_cover_every_message_type():
    assert set(SAMPLES) == {d.full_name for d in pb.DESCRIPTOR.message_types_by_name.values()}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_encode_decode_round_trip(name):
    original: Message = SAMPLES[name]()
    amqp = wire.encode(original, message_id="id-1", trace_id="01MSG", queue_id="01MSG.1")
    assert amqp.type == name
    decoded = wire.decode(amqp.body, amqp.type, type(original))
    assert decoded == original
    assert type(decoded) is type(original)


def test_encode_properties():
    encoded = wire.encode(
        delivery_job(), message_id="01MSG.1/2", trace_id="01MSG", queue_id="01MSG.1"
    )
    assert encoded.type == "mailyard.v1.DeliveryJob"
    assert encoded.message_id == "01MSG.1/2"
    assert encoded.headers == {"x-mailyard-message-id": "01MSG", "x-mailyard-queue-id": "01MSG.1"}
    assert encoded.body == delivery_job().SerializeToString()


def test_amqp_properties_of_an_encoded_message():
    from aio_pika import DeliveryMode

    from mailyard.broker.rabbitmq.amqp import amqp_message

    amqp = amqp_message(wire.encode_job(delivery_job()))
    assert amqp.content_type == "application/x-protobuf"
    assert amqp.type == "mailyard.v1.DeliveryJob"
    assert amqp.message_id == "01MSG.1/2"
    assert amqp.delivery_mode == DeliveryMode.PERSISTENT
    assert amqp.headers == {"x-mailyard-message-id": "01MSG", "x-mailyard-queue-id": "01MSG.1"}
    assert amqp.expiration is None


def test_encode_without_queue_id():
    encoded = wire.encode(accepted_message(), message_id="m", trace_id="01MSG")
    assert encoded.headers == {"x-mailyard-message-id": "01MSG"}


def test_an_event_is_encoded_with_its_kind_in_the_id():
    encoded = wire.encode_items([delivery_event()])
    assert encoded.type == "mailyard.v1.DeliveryEvent"
    assert encoded.message_id == "01MSG.1/4/failed"
    assert wire.decode_items(encoded.body, encoded.type, pb.DeliveryEvent) == (
        [delivery_event()],
        [],
    )


def test_type_name():
    assert wire.type_name(pb.DeliveryJob) == "mailyard.v1.DeliveryJob"
    assert wire.type_name(delivery_event()) == "mailyard.v1.DeliveryEvent"


@pytest.mark.parametrize(
    "declared",
    [None, "", "mailyard.v1.DeliveryEvent", "DeliveryJob", "mailyard.v2.DeliveryJob"],
)
def test_decode_rejects_wrong_type_property(declared):
    body = delivery_job().SerializeToString()
    with pytest.raises(wire.UndecodableMessage) as info:
        wire.decode(body, declared, pb.DeliveryJob)
    assert str(info.value) == (
        f"type property is {declared!r}, this queue carries 'mailyard.v1.DeliveryJob'"
    )


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"garbage!", b"\x0a\x05ab"])
def test_decode_rejects_garbage(body):
    with pytest.raises(wire.UndecodableMessage, match=r"not a valid mailyard\.v1\.DeliveryJob"):
        wire.decode(body, "mailyard.v1.DeliveryJob", pb.DeliveryJob)


def test_decode_rejects_empty_body_as_incomplete():
    with pytest.raises(wire.UndecodableMessage, match=r"incomplete mailyard\.v1\.AcceptedMessage"):
        wire.decode(b"", "mailyard.v1.AcceptedMessage", pb.AcceptedMessage)


def without(message: Message, field: str) -> Message:
    message.ClearField(field)
    return message


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (without(accepted_message(), "message_id"), "no message_id"),
        (without(accepted_message(), "recipients"), "no recipients"),
        (without(accepted_message(), "content"), "no content"),
        (without(delivery_job(), "queue_id"), "no queue_id or message_id"),
        (without(delivery_job(), "message_id"), "no queue_id or message_id"),
        (without(delivery_job(), "domain"), "no domain"),
        (without(delivery_job(), "recipients"), "no recipients"),
        (without(delivery_job(), "expires_at"), "no expires_at"),
        (without(delivery_event(), "kind"), "no kind"),
        (without(delivery_event(), "results"), "no results"),
    ],
)
def test_decode_rejects_missing_required_fields(message, reason):
    name = wire.type_name(message)
    with pytest.raises(wire.UndecodableMessage) as info:
        wire.decode(message.SerializeToString(), name, type(message))
    assert str(info.value) == f"incomplete {name}: {reason}"


def test_decode_rejects_a_different_type_that_parses():
    # protobuf parses almost anything: an AcceptedMessage's bytes read as a
    # DeliveryJob must still be refused as incomplete, not passed on.
    body = pb.AcceptedMessage(message_id="01MSG").SerializeToString()
    with pytest.raises(wire.UndecodableMessage, match=r"incomplete mailyard\.v1\.DeliveryJob"):
        wire.decode(body, "mailyard.v1.DeliveryJob", pb.DeliveryJob)


def test_null_sender_is_fine():
    job = delivery_job()
    assert job.mail_from == ""
    assert wire.decode(job.SerializeToString(), "mailyard.v1.DeliveryJob", pb.DeliveryJob) == job


@pytest.mark.parametrize(
    ("factory", "field", "bad"),
    [
        (accepted_message, "recipients", ["a@example.net\r\nDATA"]),
        (accepted_message, "mail_from", "s@example.com\nRCPT TO:<x@y>"),
        (delivery_job, "recipients", ["<a@example.net>"]),
        (delivery_job, "recipients", ["ok@example.net", ""]),
        (delivery_job, "mail_from", "s\x00@example.com"),
        (delivery_event, "mail_from", "s\r@example.com"),
    ],
)
def test_decode_rejects_unsafe_addresses(factory, field, bad):
    message = factory()
    if isinstance(bad, list):
        message.ClearField(field)
        getattr(message, field).extend(bad)
    else:
        setattr(message, field, bad)
    name = wire.type_name(message)
    expected = re.escape(f"incomplete {name}: unsafe address")
    with pytest.raises(wire.UndecodableMessage, match=expected):
        wire.decode(message.SerializeToString(), name, type(message))


def test_decode_rejects_unsafe_result_recipient():
    ev = delivery_event()
    ev.results[0].recipient = "a@example.net\r\nBcc: x"
    with pytest.raises(wire.UndecodableMessage, match="unsafe address"):
        wire.decode(ev.SerializeToString(), "mailyard.v1.DeliveryEvent", pb.DeliveryEvent)


def test_unsafe_address_in_reason_is_shortened():
    message = accepted_message()
    message.mail_from = "\r" + "x" * 500
    with pytest.raises(wire.UndecodableMessage) as info:
        wire.decode(message.SerializeToString(), "mailyard.v1.AcceptedMessage", pb.AcceptedMessage)
    assert len(str(info.value)) < 200


def test_timestamp_round_trip():
    assert wire.to_datetime(wire.timestamp(WHEN)) == WHEN
    assert wire.to_datetime(wire.timestamp(WHEN)).tzinfo is UTC


# --- timestamps, computed without protobuf's slow datetime conversion ----------


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 28, 17, 0, 0, 999_999, tzinfo=UTC),
        datetime(2099, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ],
)
def test_timestamp_matches_protobufs_own_conversion(moment):
    from google.protobuf.timestamp_pb2 import Timestamp

    expected = Timestamp()
    expected.FromDatetime(moment)
    assert wire.timestamp(moment) == expected
    assert wire.to_datetime(wire.timestamp(moment)) == moment


def test_later_adds_a_delay_exactly():
    start = wire.timestamp(datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC))
    later = wire.later(start, timedelta(days=5, microseconds=2))
    assert wire.to_datetime(later) == datetime(2026, 1, 6, 0, 0, 1, 1, tzinfo=UTC)


def test_decode_items_of_a_single_message():
    job = delivery_job()
    items, rejected = wire.decode_items(
        job.SerializeToString(), wire.type_name(job), pb.DeliveryJob
    )
    assert items == [job]
    assert rejected == []


def test_decode_items_of_a_batch_keeps_order():
    first, second = accepted_message(), accepted_message()
    second.message_id = "01SECOND"
    batch = pb.AcceptedBatch(messages=[first, second])
    items, rejected = wire.decode_items(
        batch.SerializeToString(), "mailyard.v1.AcceptedBatch", pb.AcceptedMessage
    )
    assert [m.message_id for m in items] == ["01MSG", "01SECOND"]
    assert rejected == []


def test_decode_items_sets_an_incomplete_item_apart():
    good, unsafe, empty = delivery_job(), delivery_job(), delivery_job()
    unsafe.recipients[0] = "a@example.net\r\nBcc: x@evil.example"
    del empty.recipients[:]
    batch = pb.DeliveryBatch(domain="example.net", jobs=[good, unsafe, empty])
    items, rejected = wire.decode_items(
        batch.SerializeToString(), "mailyard.v1.DeliveryBatch", pb.DeliveryJob
    )
    assert items == [good]
    assert [(item, reason.split(":")[1].strip()) for item, reason in rejected] == [
        (unsafe, "unsafe address 'a@example.net\\r\\nBcc"),
        (empty, "no recipients"),
    ]


def test_decode_items_single_incomplete_message_is_undecodable():
    job = delivery_job()
    del job.recipients[:]
    with pytest.raises(wire.UndecodableMessage, match="no recipients"):
        wire.decode_items(job.SerializeToString(), "mailyard.v1.DeliveryJob", pb.DeliveryJob)


@pytest.mark.parametrize(
    ("body", "declared", "problem"),
    [
        (b"", "mailyard.v1.DeliveryBatch", "empty mailyard.v1.DeliveryBatch"),
        (b"\xff\xff", "mailyard.v1.DeliveryBatch", "not a valid mailyard.v1.DeliveryBatch"),
        (
            b"",
            "mailyard.v1.AcceptedBatch",
            "type property is 'mailyard.v1.AcceptedBatch', this queue carries "
            "'mailyard.v1.DeliveryJob' or 'mailyard.v1.DeliveryBatch'",
        ),
    ],
)
def test_decode_items_rejects_bad_batches(body, declared, problem):
    with pytest.raises(wire.UndecodableMessage) as info:
        wire.decode_items(body, declared, pb.DeliveryJob)
    assert str(info.value).startswith(problem)


def test_batch_message_id_says_how_many_follow():
    assert wire.batch_message_id("01MSG.1/0", 5) == "01MSG.1/0+4"


@pytest.mark.parametrize("count", [1, 3])
def test_encode_items_is_what_decode_items_reads(count):
    jobs = [delivery_job() for _ in range(count)]
    for n, job in enumerate(jobs):
        job.queue_id = f"01MSG.{n + 1}"
    amqp = wire.encode_items(jobs)
    assert amqp.type == ("mailyard.v1.DeliveryJob" if count == 1 else "mailyard.v1.DeliveryBatch")
    assert amqp.message_id == ("01MSG.1/2" if count == 1 else "01MSG.1/2+2")
    assert amqp.headers == {"x-mailyard-message-id": "01MSG", "x-mailyard-queue-id": "01MSG.1"}
    assert wire.decode_items(amqp.body, amqp.type, pb.DeliveryJob) == (jobs, [])

    messages = [accepted_message() for _ in range(count)]
    amqp = wire.encode_items(messages)
    assert amqp.message_id == ("01MSG" if count == 1 else "01MSG+2")
    assert wire.decode_items(amqp.body, amqp.type, pb.AcceptedMessage) == (messages, [])


def test_encode_items_refuses_what_is_never_batched():
    with pytest.raises(TypeError, match="DeliveryEvent"):
        wire.encode_items([delivery_event(), delivery_event()])
