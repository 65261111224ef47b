"""split_message: one delivery job per destination domain and chunk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.queue.split import delivery_batches, split_message
from mailyard.v1 import message_pb2 as pb

RECEIVED = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
CONTENT = b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n"


def accepted(recipients: list[str], *, message_id: str = "01MSG") -> pb.AcceptedMessage:
    return pb.AcceptedMessage(
        message_id=message_id,
        mail_from="Sender@Example.com",
        recipients=recipients,
        content=CONTENT,
        received_at=wire.timestamp(RECEIVED),
        client=pb.Client(address="192.0.2.1", helo="client.example"),
        origin=pb.ORIGIN_SMTP,
    )


def split(recipients, *, local=(), per_job=50, lifetime=timedelta(days=5), message_id="01MSG"):
    return split_message(
        accepted(recipients, message_id=message_id),
        local_domains=frozenset(local),
        max_recipients_per_job=per_job,
        lifetime=lifetime,
    )


def summary(jobs: list[pb.DeliveryJob]) -> list[tuple[str, str, list[str]]]:
    return [(job.queue_id, job.domain, list(job.recipients)) for job in jobs]


def test_groups_by_lower_cased_domain_keeping_local_part_case():
    result = split(["Alice@Example.COM", "bob@example.com", "Carol@Other.NET", "dave@EXAMPLE.com"])
    assert summary(result.remote) == [
        ("01MSG.1", "example.com", ["Alice@example.com", "bob@example.com", "dave@example.com"]),
        ("01MSG.2", "other.net", ["Carol@other.net"]),
    ]
    assert result.local == []


def test_exact_duplicates_are_delivered_once():
    result = split(["a@example.com", "a@EXAMPLE.COM", "a@example.com", "b@example.com"])
    assert summary(result.remote) == [
        ("01MSG.1", "example.com", ["a@example.com", "b@example.com"])
    ]


def test_local_parts_differing_in_case_are_different_recipients():
    result = split(["User@example.com", "user@example.com"])
    assert list(result.remote[0].recipients) == ["User@example.com", "user@example.com"]


def test_quoted_local_part_with_at_sign_is_routed_by_the_last_at():
    result = split(['"a@evil.test"@Example.com'])
    assert summary(result.remote) == [("01MSG.1", "example.com", ['"a@evil.test"@example.com'])]


def test_chunks_of_max_recipients_per_job_in_order():
    recipients = [f"r{i}@example.com" for i in range(7)] + ["x@other.net"]
    result = split(recipients, per_job=3)
    assert summary(result.remote) == [
        ("01MSG.1", "example.com", ["r0@example.com", "r1@example.com", "r2@example.com"]),
        ("01MSG.2", "example.com", ["r3@example.com", "r4@example.com", "r5@example.com"]),
        ("01MSG.3", "example.com", ["r6@example.com"]),
        ("01MSG.4", "other.net", ["x@other.net"]),
    ]


def test_local_domains_go_to_local_jobs():
    result = split(
        ["a@example.com", "Bounce+x@Bounces.Test", "b@bounces.test", "c@sub.bounces.test"],
        local={"bounces.test"},
    )
    assert summary(result.local) == [
        ("01MSG.2", "bounces.test", ["Bounce+x@bounces.test", "b@bounces.test"]),
    ]
    assert summary(result.remote) == [
        ("01MSG.1", "example.com", ["a@example.com"]),
        ("01MSG.3", "sub.bounces.test", ["c@sub.bounces.test"]),
    ]


def test_queue_ids_are_unique_and_deterministic():
    recipients = [f"r{i}@d{i % 4}.example" for i in range(30)]
    first = split(recipients, local={"d2.example"}, per_job=2)
    second = split(recipients, local={"d2.example"}, per_job=2)
    ids = [job.queue_id for job in first.remote + first.local]
    assert len(ids) == len(set(ids)) == 16
    assert sorted(ids, key=lambda q: int(q.rpartition(".")[2])) == [
        f"01MSG.{n}" for n in range(1, 17)
    ]
    assert summary(first.remote) == summary(second.remote)
    assert summary(first.local) == summary(second.local)


def test_queue_ids_follow_the_message_id():
    result = split(["a@example.com"], message_id="01OTHER")
    assert result.remote[0].queue_id == "01OTHER.1"
    assert result.remote[0].message_id == "01OTHER"


@pytest.mark.parametrize("lifetime", [timedelta(days=5), timedelta(hours=1), timedelta(0)])
def test_job_fields(lifetime):
    message = accepted(["a@example.com", "b@other.net"])
    result = split_message(
        message, local_domains=frozenset(), max_recipients_per_job=50, lifetime=lifetime
    )
    for job in result.remote:
        assert job.message_id == "01MSG"
        assert job.mail_from == "Sender@Example.com"
        assert job.content == CONTENT
        assert job.received_at == message.received_at
        assert wire.to_datetime(job.expires_at) == RECEIVED + lifetime
        assert job.attempts == 0
        assert list(job.last_results) == []
        assert job.origin == pb.ORIGIN_SMTP


def test_null_sender_stays_empty():
    message = accepted(["a@example.com"])
    message.mail_from = ""
    job = split_message(
        message, local_domains=(), max_recipients_per_job=5, lifetime=timedelta(days=1)
    ).remote[0]
    assert job.mail_from == ""


def test_jobs_are_valid_on_the_wire():
    result = split([f"r{i}@example.com" for i in range(3)], per_job=2)
    for job in result.remote:
        decoded = wire.decode(job.SerializeToString(), "mailyard.v1.DeliveryJob", pb.DeliveryJob)
        assert decoded == job


def job(domain: str, queue_id: str, size: int = 10) -> pb.DeliveryJob:
    return pb.DeliveryJob(queue_id=queue_id, domain=domain, content=b"x" * size)


def ids_of(batches: list[list[pb.DeliveryJob]]) -> list[list[str]]:
    return [[j.queue_id for j in batch] for batch in batches]


def test_delivery_batches_group_by_domain_in_arrival_order():
    jobs = [job("a.example", "1"), job("b.example", "2"), job("a.example", "3")]
    batches = delivery_batches(jobs, max_jobs=50, max_bytes=1 << 20)
    assert ids_of(batches) == [["1", "3"], ["2"]]


def test_delivery_batches_respect_max_jobs():
    jobs = [job("a.example", str(n)) for n in range(5)]
    assert ids_of(delivery_batches(jobs, max_jobs=2, max_bytes=1 << 20)) == [
        ["0", "1"], ["2", "3"], ["4"]
    ]  # fmt: skip


def test_delivery_batches_respect_max_bytes_and_send_a_big_job_alone():
    jobs = [job("a.example", "small1", 400), job("a.example", "big", 5000)]
    jobs += [job("a.example", "small2", 400), job("a.example", "small3", 400)]
    batches = delivery_batches(jobs, max_jobs=50, max_bytes=1000)
    assert ids_of(batches) == [["small1"], ["big"], ["small2", "small3"]]


def test_delivery_batches_of_one_when_batching_is_off():
    jobs = [job("a.example", "1"), job("a.example", "2")]
    assert ids_of(delivery_batches(jobs, max_jobs=1, max_bytes=1 << 20)) == [["1"], ["2"]]


def test_delivery_batches_of_nothing():
    assert delivery_batches([], max_jobs=50, max_bytes=1 << 20) == []


def verp_split(recipients, *, mail_from="app@sender.example", local=()):
    message = accepted(recipients, message_id="01JAXW3M6B7Q8R9S0T1V2W3X4Y")
    message.mail_from = mail_from
    return split_message(
        message,
        local_domains=frozenset(local),
        max_recipients_per_job=50,
        lifetime=timedelta(days=5),
        return_path=lambda message_id, recipient: f"b-{recipient.replace('@', '=')}@bounces.test",
    )


def test_with_verp_every_remote_recipient_has_a_job_and_a_return_path_of_its_own():
    result = verp_split(["a@example.com", "b@example.com", "c@other.net", "x@bounces.test"],
                        local=["bounces.test"])  # fmt: skip
    assert [(j.queue_id, list(j.recipients), j.return_path) for j in result.remote] == [
        ("01JAXW3M6B7Q8R9S0T1V2W3X4Y.1", ["a@example.com"], "b-a=example.com@bounces.test"),
        ("01JAXW3M6B7Q8R9S0T1V2W3X4Y.2", ["b@example.com"], "b-b=example.com@bounces.test"),
        ("01JAXW3M6B7Q8R9S0T1V2W3X4Y.3", ["c@other.net"], "b-c=other.net@bounces.test"),
    ]
    # The original sender stays: DSNs go to it, events name it.
    assert {j.mail_from for j in result.remote} == {"app@sender.example"}
    # Mail for a local domain is not sent anywhere: no return path, no split.
    [local] = result.local
    assert local.return_path == ""


def test_with_verp_the_null_sender_is_never_rewritten():
    result = verp_split(["a@example.com", "b@example.com"], mail_from="")
    [job] = result.remote
    assert list(job.recipients) == ["a@example.com", "b@example.com"]
    assert job.return_path == ""


def test_verp_jobs_of_one_domain_still_travel_in_one_batch():
    jobs = verp_split([f"r{i}@example.com" for i in range(5)]).remote
    assert [len(b) for b in delivery_batches(jobs, max_jobs=50, max_bytes=1 << 20)] == [5]
