"""Asynchronous bounces and ARF complaints: the corpus in tests/corpus/, judged.

Each report arrives for one envelope recipient of ours (a VERP address, fbl@,
another local address) and must give the right event — kind, recipient,
class, original sender, message id — or the right drop reason.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mailyard import verp, wire
from mailyard.bounce.inbound import Mailboxes, Result, judge
from mailyard.bounce.service import BounceService
from mailyard.broker import Emit, EventKind, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.classify import default_classifier
from mailyard.config import Settings
from mailyard.v1 import message_pb2 as pb

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
KEYS = verp.Keyring((b"corpus-secret-0123456789abcdef",))
OTHER_KEYS = verp.Keyring((b"not-our-secret-0123456789abcdef",))
DOMAIN = "bounces.test"
ORIGINAL_ID = "01JAXW3M6B7Q8R9S0T1V2W3X4Y"
HOSTNAME = "mx.mailyard.test"
NOW = datetime(2025, 1, 28, 12, 0, tzinfo=UTC)
MAILBOXES = Mailboxes(hostname=HOSTNAME, return_path_domain=DOMAIN, keyring=KEYS)


def return_path(recipient: str, keys: verp.Keyring = KEYS) -> str:
    return verp.return_path(keys, domain=DOMAIN, message_id=ORIGINAL_ID, recipient=recipient)


def report(name: str, keys: verp.Keyring = KEYS) -> bytes:
    """A corpus file with its placeholders filled in, CRLF as on the wire."""
    text = (CORPUS / name).read_text()
    text = re.sub(r"\{\{verp:([^}]+)\}\}", lambda m: return_path(m.group(1), keys), text)
    text = text.replace("{{id}}", ORIGINAL_ID)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def local_job(content: bytes, *recipients: str) -> pb.DeliveryJob:
    return pb.DeliveryJob(
        message_id="01JB0000000000000000000099",
        queue_id="01JB0000000000000000000099.1",
        domain=DOMAIN,
        mail_from="",
        recipients=recipients,
        content=content,
        expires_at=wire.timestamp(NOW),
    )


def decodes(event: pb.DeliveryEvent, kind: str) -> bool:
    """What a subscriber gets decodes without being parked, under a stable id."""
    encoded = wire.encode_event(event, kind)
    assert encoded.message_id == f"{event.queue_id}/{kind}/{event.results[0].recipient}"
    return wire.decode(encoded.body, encoded.type, pb.DeliveryEvent) == event


def classify(reply):
    return default_classifier().classify(reply).value


def judge_one(content: bytes, to: str, mailboxes: Mailboxes = MAILBOXES):
    [verdict] = judge(local_job(content, to), mailboxes=mailboxes, classify=classify, now=NOW)
    return verdict


BOUNCES = [
    # file, VERP recipient, event recipient, class, status, original sender, message id known
    ("postfix-dsn.eml", "jane@example.org", "jane@example.org", "InvalidRecipient", "5.1.1",
     "app@sender.example", True),
    ("exim-plain.eml", "bob@example.net", "bob@example.net", "InvalidRecipient", "5.1.1",
     "news@sender.example", True),
    ("exchange-ndr.eml", "adele@contoso.example", "adele@contoso.example", "InvalidRecipient",
     "5.1.10", "billing@sender.example", True),
    ("gmail-quota.eml", "sam@gmail.com", "sam@gmail.com", "QuotaIssues", "5.2.2",
     "hello@sender.example", True),
    ("qmail-qsbmf.eml", "kim@example.com", "kim@example.com", "InvalidRecipient", "5.1.1",
     "app@sender.example", True),
    # Forwarded: the bounce names the final address; VERP names whom we sent to.
    ("rfc3464-forwarded.eml", "lee@alumni.example", "lee@alumni.example", "InactiveMailbox",
     "5.2.1", "", False),
    # Too long for the readable form: the hash picks our recipient among the bounce's two.
    ("rfc3464-hashed.eml", "Maximilian.Mustermann-Schmidt@very-long-company-name.example.org",
     "Maximilian.Mustermann-Schmidt@very-long-company-name.example.org", "InvalidRecipient",
     "5.1.1", "", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "verp_for", "recipient", "bounce_class", "status", "sender", "id_known"), BOUNCES
)
def test_a_bounce_to_our_verp_address_is_a_bounced_event(
    name, verp_for, recipient, bounce_class, status, sender, id_known
):
    verdict = judge_one(report(name), return_path(verp_for))
    assert verdict.result is Result.BOUNCED, verdict.detail
    assert verdict.kind is EventKind.BOUNCED
    event = verdict.event
    assert event.kind == pb.EVENT_KIND_BOUNCED
    [result] = event.results
    assert result.recipient == recipient
    assert result.bounce_class == bounce_class
    assert result.reply.status == status
    assert result.reply.code // 100 == 5
    assert event.mail_from == sender
    assert event.message_id == (ORIGINAL_ID if id_known else "")
    assert event.verified
    assert event.domain == recipient.rpartition("@")[2].lower()
    assert event.occurred_at == wire.timestamp(NOW)
    assert event.queue_id == "01JB0000000000000000000099.1"
    assert decodes(event, "bounced")


def test_the_dsn_fields_give_the_reply_and_the_remote_mta():
    event = judge_one(report("gmail-quota.eml"), return_path("sam@gmail.com")).event
    [result] = event.results
    assert result.reply.code == 552
    # Gmail repeats "552-5.2.2" on every line of its reply; once is enough.
    assert result.reply.text.startswith("The recipient's inbox is out of storage space.")
    assert "552" not in result.reply.text
    assert result.remote_mta == "gmail-smtp-in.l.google.com"
    assert event.reporter == "googlemail.com"


def test_a_plain_text_bounce_gives_the_reply_next_to_the_address():
    event = judge_one(report("exim-plain.eml"), return_path("bob@example.net")).event
    assert event.results[0].reply.code == 550
    assert "User unknown in virtual mailbox table" in event.results[0].reply.text
    event = judge_one(report("qmail-qsbmf.eml"), return_path("kim@example.com")).event
    assert "no mailbox here by that name" in event.results[0].reply.text


@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("delayed-dsn.eml", Result.DELAYED),  # a warning: the server still tries
        ("auto-reply.eml", Result.NOT_A_BOUNCE),  # RFC 3834 replies go to the return path too
        ("broken-report.eml", Result.UNPARSABLE),
    ],
)
def test_what_is_no_permanent_failure_makes_no_event(name, result):
    verdict = judge_one(report(name), return_path("jane@example.org"))
    assert (verdict.result, verdict.event) == (result, None)


def test_a_bounce_whose_verp_hmac_fails_is_forged_and_dropped():
    forged = return_path("jane@example.org", OTHER_KEYS)
    verdict = judge_one(report("postfix-dsn.eml", OTHER_KEYS), forged)
    assert (verdict.result, verdict.event, verdict.detail) == (Result.FORGED, None, "mac")


def test_a_tampered_recipient_in_the_verp_address_is_forged():
    tampered = return_path("jane@example.org").replace("jane=", "john=")
    verdict = judge_one(report("postfix-dsn.eml"), tampered)
    assert (verdict.result, verdict.event) == (Result.FORGED, None)


def test_a_bounce_to_another_local_address_proves_nothing():
    verdict = judge_one(report("postfix-dsn.eml"), "bounce@bounces.test")
    assert (verdict.result, verdict.event) == (Result.UNSIGNED, None)


def test_a_hashed_verp_address_needs_a_matching_recipient_in_the_bounce():
    # The address is ours, but the bounce names someone else: no event.
    address = return_path("Someone.Completely.Different@very-long-company-name.example.org")
    verdict = judge_one(report("rfc3464-hashed.eml"), address)
    assert (verdict.result, verdict.event) == (Result.UNPARSABLE, None)


def test_a_previous_secret_still_verifies():
    rotated = verp.Keyring((b"the-new-secret-0123456789abcdef", *KEYS.secrets))
    mailboxes = Mailboxes(hostname=HOSTNAME, return_path_domain=DOMAIN, keyring=rotated)
    verdict = judge_one(report("postfix-dsn.eml"), return_path("jane@example.org"), mailboxes)
    assert verdict.result is Result.BOUNCED


def test_without_verp_no_bounce_is_believed():
    mailboxes = Mailboxes(hostname=HOSTNAME)
    verdict = judge_one(report("postfix-dsn.eml"), return_path("jane@example.org"), mailboxes)
    assert (verdict.result, verdict.event) == (Result.UNSIGNED, None)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff garbage \r\n\r\n\x80", b"Content-Type: multipart/report\r\n\r\n--",
     b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; <>\r\n"],
)  # fmt: skip
def test_garbage_is_never_a_crash_nor_an_event(content):
    verdict = judge_one(content, return_path("jane@example.org"))
    assert verdict.event is None
    assert verdict.result in (Result.NOT_A_BOUNCE, Result.UNPARSABLE)


COMPLAINTS = [
    # file, envelope recipient (None: fbl@), recipient, verified, feedback type, sender, reporter
    ("yahoo-arf.eml", None, "pat@yahoo.com", True, "abuse", "deals@sender.example",
     "Yahoo!-Mail-Feedback/2.0"),
    ("microsoft-jmrp.eml", "chris@outlook.com", "chris@outlook.com", True, "abuse",
     "promo@sender.example", "Hotmail FBL"),
    # AOL redacts the recipient: the VERP Return-Path of the original still names it.
    ("aol-arf.eml", None, "robin@aol.com", True, "abuse", "news@sender.example", "AOL SComp"),
    # No VERP anywhere: the report's own Original-Rcpt-To, unverified.
    ("arf-original-rcpt-to.eml", None, "dana@smallmail.example", False, "fraud", "",
     "mail.smallmail.example"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "verp_for", "recipient", "verified", "feedback_type", "sender", "reporter"),
    COMPLAINTS,
)
def test_an_arf_report_is_a_complained_event(
    name, verp_for, recipient, verified, feedback_type, sender, reporter
):
    to = return_path(verp_for) if verp_for else "fbl@bounces.test"
    verdict = judge_one(report(name), to)
    assert verdict.result is Result.COMPLAINED, verdict.detail
    assert verdict.kind is EventKind.COMPLAINED
    event = verdict.event
    assert event.kind == pb.EVENT_KIND_COMPLAINED
    [result] = event.results
    assert result.recipient == recipient
    assert result.bounce_class == ""
    assert event.verified is verified
    assert event.feedback_type == feedback_type
    assert verdict.feedback_type == feedback_type
    assert event.mail_from == sender
    assert event.reporter == reporter
    assert decodes(event, "complained")


def test_a_complaint_to_fbl_at_any_local_domain_counts():
    verdict = judge_one(report("yahoo-arf.eml"), "FBL@replies.example")
    assert verdict.result is Result.COMPLAINED


def test_a_complaint_to_another_local_address_is_not_one():
    verdict = judge_one(report("yahoo-arf.eml"), "info@replies.example")
    assert (verdict.result, verdict.event) == (Result.NOT_A_BOUNCE, None)


def test_a_complaint_with_a_forged_return_path_falls_back_to_the_report_unverified():
    event = judge_one(report("yahoo-arf.eml", OTHER_KEYS), "fbl@bounces.test").event
    assert event.results[0].recipient == "pat@yahoo.com"
    assert not event.verified


def test_a_complaint_that_names_nobody_is_unparsable():
    verdict = judge_one(report("arf-no-recipient.eml"), "fbl@bounces.test")
    assert (verdict.result, verdict.event) == (Result.UNPARSABLE, None)


def test_a_complaint_to_a_forged_verp_address_is_forged():
    forged = return_path("chris@outlook.com", OTHER_KEYS)
    verdict = judge_one(report("microsoft-jmrp.eml"), forged)
    assert (verdict.result, verdict.event) == (Result.FORGED, None)


def test_a_parser_that_breaks_is_a_drop_reason_not_a_crash(monkeypatch):
    def broken(message):
        raise RuntimeError("a detector's bug")

    monkeypatch.setattr("mailyard.bounce.inbound.read_feedback", broken)
    verdict = judge_one(report("postfix-dsn.eml"), return_path("jane@example.org"))
    assert (verdict.result, verdict.event) == (Result.UNPARSABLE, None)
    assert "a detector's bug" in verdict.detail


def test_each_envelope_recipient_is_judged_on_its_own():
    content = report("postfix-dsn.eml")
    job = local_job(content, return_path("jane@example.org"), "postmaster@bounces.test")
    verdicts = judge(job, mailboxes=MAILBOXES, classify=classify, now=NOW)
    assert [v.result for v in verdicts] == [Result.BOUNCED, Result.UNSIGNED]


# --- the service on the in-memory port -----------------------------------------


def async_count(result: str) -> float:
    return REGISTRY.get_sample_value("mailyard_bounce_async_total", {"result": result}) or 0.0


def settings(secret: Path) -> Settings:
    return Settings(
        hostname=HOSTNAME,
        ingress={"local_domains": [DOMAIN]},
        bounce={"return_path_domain": DOMAIN, "verp_secret_file": str(secret)},
    )


async def test_the_bounce_service_emits_the_events_and_counts_the_rest(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(KEYS.secrets[0] + b"\n")
    service = BounceService(settings(secret), MemoryBroker())
    await service.start()
    broker = service.broker
    assert isinstance(broker, MemoryBroker)
    jobs = [
        local_job(report("postfix-dsn.eml"), return_path("jane@example.org")),
        local_job(report("yahoo-arf.eml"), "fbl@bounces.test"),
        local_job(
            report("postfix-dsn.eml", OTHER_KEYS), return_path("jane@example.org", OTHER_KEYS)
        ),
    ]
    before = {r: async_count(r) for r in ("bounced", "complained", "forged")}
    complaints = REGISTRY.get_sample_value(
        "mailyard_bounce_complaints_total", {"feedback_type": "abuse"}
    )
    settled = await broker.deliver(QueueName.LOCAL, jobs)
    assert (settled.outcome, settled.parked) == ("acked", [])
    assert [(o.kind, o.event.results[0].recipient) for o in settled.outputs] == [
        (EventKind.BOUNCED, "jane@example.org"),
        (EventKind.COMPLAINED, "pat@yahoo.com"),
    ]
    assert all(isinstance(o, Emit) for o in settled.outputs)
    assert {r: async_count(r) - before[r] for r in before} == {
        "bounced": 1,
        "complained": 1,
        "forged": 1,
    }
    assert (
        REGISTRY.get_sample_value("mailyard_bounce_complaints_total", {"feedback_type": "abuse"})
        == complaints + 1
    )
    await service.stop(grace=1)


def test_a_short_secret_stops_the_bounce_service_naming_the_key(tmp_path):
    from mailyard.filewatch import FileProblem

    secret = tmp_path / "secret"
    secret.write_bytes(b"short\n")
    with pytest.raises(FileProblem, match=r"^bounce\.verp_secret_file: "):
        BounceService(settings(secret), MemoryBroker())
