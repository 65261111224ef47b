"""The suppression list on a running pipeline: hard bounces suppress, the queue holds
mail back with a DSN, the command line changes it, every replica follows it."""

from __future__ import annotations

import email
import email.policy
import json
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support.pipeline import SENDER, Pipeline, message, wait_until


def dsns(pipeline: Pipeline) -> list[EmailMessage]:
    return [
        email.message_from_bytes(m.content, policy=email.policy.default)  # type: ignore[misc]
        for m in pipeline.sink.received(lambda m: m.host == SENDER)
    ]


def wait_for_dsns(pipeline: Pipeline, count: int, timeout: float = 30) -> list[EmailMessage]:
    pipeline.sink.wait_for(
        lambda ms: sum(m.host == SENDER for m in ms) >= count, timeout, f"{count} DSN(s)"
    )
    return dsns(pipeline)


def status_blocks(dsn: EmailMessage) -> list[EmailMessage]:
    _, status, _ = dsn.get_payload()  # type: ignore[misc]
    return status.get_payload()[1:]


def cli_json(pipeline: Pipeline, *args: str) -> tuple[int, Any]:
    done = pipeline.cli("suppression", *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)  # standard output is the JSON alone


def test_a_hard_bounce_suppresses_and_the_next_message_gets_a_dsn_instead(
    pipeline: Pipeline,
) -> None:
    pipeline.sink.script.rcpt_always["gone@alpha.test"] = "550 5.1.1 No such user here"
    assert pipeline.send("app@sender.test", ["gone@alpha.test"], message("first"))[0] == 250
    [bounced] = wait_for_dsns(pipeline, 1)
    assert [b["Status"] for b in status_blocks(bounced)] == ["5.1.1"]
    added = {"source": "bounce", "class": "InvalidRecipient"}
    pipeline.process("bounce").wait_metric(
        "mailyard_bounce_suppressions_added_total", 1, 10, **added
    )

    code, [entry] = cli_json(pipeline, "check", "gone@alpha.test")
    assert code == 0
    assert (entry["source"], entry["class"], entry["scope"]) == ("bounce", "InvalidRecipient", None)
    assert entry["reason"].startswith("550 5.1.1 No such user here")
    since = datetime.fromisoformat(entry["since"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(entry["expires"].replace("Z", "+00:00"))
    assert expires - since == timedelta(days=365)  # suppression.hard_bounce_expiry's default

    # The bounce service's entry reached the queue service (another process on RabbitMQ).
    attempts = pipeline.sink.rcpt_attempts["gone@alpha.test"]
    recipients = ["gone@alpha.test", "ok@alpha.test"]
    assert pipeline.send("app@sender.test", recipients, message("2nd"))[0] == 250
    pipeline.sink.wait_for(lambda ms: any("ok@alpha.test" in m.recipients for m in ms), 20, "ok@")
    _, suppressed = wait_for_dsns(pipeline, 2)
    pipeline.process("queue").wait_metric("mailyard_queue_suppressed_total", 1, 10, source="bounce")
    assert pipeline.sink.rcpt_attempts["gone@alpha.test"] == attempts  # never tried again
    [block] = status_blocks(suppressed)
    assert block["Final-Recipient"] == "rfc822; gone@alpha.test"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.7.1"
    assert block["X-Mailyard-Bounce-Class"] == "InvalidRecipient"
    assert (
        f"suppressed since {entry['since']} (bounce, class InvalidRecipient)"
        in block["Diagnostic-Code"]
    )
    human, _, original = suppressed.get_payload()  # type: ignore[misc]
    assert "suppression list" in human.get_content()
    assert "Subject: 2nd" in original.get_payload()
    # One suppressed recipient, not a new bounce: the entry stays the first one.
    assert cli_json(pipeline, "list")[1] == [entry]


def test_a_suppressed_and_a_failing_recipient_of_one_message_get_one_dsn(
    pipeline_factory,
) -> None:
    """One recipient held back by the list (alpha.test), one refused by its server
    (beta.test): the queue's suppressed event and delivery's failed event meet in
    the DSN window, and the sender gets one failed DSN with both blocks."""
    pipeline: Pipeline = pipeline_factory(overrides={"bounce": {"dsn_window": "3s"}})
    done = pipeline.cli("suppression", "add", "held@alpha.test", "--reason", "asked us")
    assert done.returncode == 0, done.stderr
    time.sleep(2)  # the queue's follower (the spool's polls every second)
    pipeline.sink.script.rcpt_always["nobody@beta.test"] = "550 5.1.1 No such user here"
    recipients = ["held@alpha.test", "nobody@beta.test"]
    assert pipeline.send("app@sender.test", recipients, message("both"))[0] == 250
    [dsn] = wait_for_dsns(pipeline, 1)
    blocks = {b["Final-Recipient"]: b for b in status_blocks(dsn)}
    assert sorted(blocks) == ["rfc822; held@alpha.test", "rfc822; nobody@beta.test"]
    held, refused = blocks["rfc822; held@alpha.test"], blocks["rfc822; nobody@beta.test"]
    assert (held["Action"], held["Status"]) == ("failed", "5.7.1")
    assert "suppressed since" in held["Diagnostic-Code"]
    assert "(manual): asked us" in held["Diagnostic-Code"]
    assert "Last-Attempt-Date" not in held  # never tried
    assert "Remote-MTA" not in held
    assert (refused["Action"], refused["Status"]) == ("failed", "5.1.1")
    assert "Last-Attempt-Date" in refused
    human, _, original = dsn.get_payload()  # type: ignore[misc]
    assert "suppression list" in human.get_content()
    assert "Subject: both" in original.get_payload()
    assert "held@alpha.test" not in pipeline.sink.rcpt_attempts
    time.sleep(4)  # past the window: no second notice follows
    assert len(dsns(pipeline)) == 1
    bounce = pipeline.process("bounce")
    assert bounce.metric("mailyard_bounce_dsns_total", kind="failed") == 1
    assert bounce.metric("mailyard_bounce_dsn_recipients_total", kind="suppressed") == 1
    assert bounce.metric("mailyard_bounce_dsn_recipients_total", kind="failed") == 1


def test_an_expired_suppression_lets_mail_through_again(pipeline_factory) -> None:
    pipeline: Pipeline = pipeline_factory(overrides={"suppression": {"hard_bounce_expiry": "6s"}})
    # The mailbox is gone once, then back.
    pipeline.sink.script.rcpt["back@alpha.test"] = ["550 5.1.1 No such user here"]
    assert pipeline.send("app@sender.test", ["back@alpha.test"], message("one"))[0] == 250
    # The entry is added as bounce takes the failed event, before its DSN
    # (which waits out bounce.dsn_window): read it while it is in force.
    wait_until(
        lambda: pipeline.cli("suppression", "check", "back@alpha.test").returncode == 0,
        10,
        "the entry",
    )
    [entry] = cli_json(pipeline, "list")[1]
    wait_for_dsns(pipeline, 1)
    assert pipeline.send("app@sender.test", ["back@alpha.test"], message("two"))[0] == 250
    wait_for_dsns(pipeline, 2)  # suppressed: a DSN, no delivery
    assert pipeline.sink.rcpt_attempts["back@alpha.test"] == 1
    expires = datetime.fromisoformat(entry["expires"].replace("Z", "+00:00"))
    # The listing gives whole seconds, cut down: the entry may hold up to a
    # second past what it shows.
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.5)
    assert pipeline.cli("suppression", "check", "back@alpha.test").returncode == 1
    assert pipeline.send("app@sender.test", ["back@alpha.test"], message("three"))[0] == 250
    pipeline.sink.wait_for(lambda ms: any("back@alpha.test" in m.recipients for m in ms), 20, "it")
    assert len(dsns(pipeline)) == 2


def test_the_command_line_changes_what_a_running_pipeline_sends(pipeline: Pipeline) -> None:
    """add, list --json, check, remove while the services run (on the embedded
    spool: while `mailyard all` holds it)."""
    done = pipeline.cli(
        "suppression", "add", "Later@Alpha.TEST", "--reason", "asked us", "--expires", "1h"
    )
    assert done.returncode == 0, done.stderr
    code, entries = cli_json(pipeline, "list")
    assert code == 0
    assert [(e["address"], e["source"], e["reason"]) for e in entries] == [
        ("Later@alpha.test", "manual", "asked us")
    ]
    assert list(entries[0]) == ["address", "scope", "reason", "class", "source", "since", "expires"]
    check = pipeline.cli("suppression", "check", "Later@alpha.test")
    assert check.returncode == 0
    assert "Later@alpha.test" in check.stdout
    assert pipeline.cli("suppression", "check", "later@alpha.test").returncode == 1

    # The running queue service follows the log (the spool's owner polls it
    # every second): within seconds, mail is held back.
    time.sleep(2)
    assert pipeline.send("app@sender.test", ["Later@alpha.test"], message("held"))[0] == 250
    [dsn] = wait_for_dsns(pipeline, 1)
    assert [b["Status"] for b in status_blocks(dsn)] == ["5.7.1"]
    assert "(manual): asked us" in status_blocks(dsn)[0]["Diagnostic-Code"]
    assert pipeline.sink.received(lambda m: m.host != SENDER) == []

    # NOTIFY=NEVER: suppressed all the same, but no DSN.
    queue = pipeline.process("queue")
    before = queue.metric("mailyard_queue_suppressed_total", source="manual")
    with pipeline.smtp() as client:
        assert client.mail("app@sender.test")[0] == 250
        assert client.rcpt("Later@alpha.test", ["NOTIFY=NEVER"])[0] == 250
        assert client.data(message("never"))[0] == 250
    queue.wait_metric("mailyard_queue_suppressed_total", before + 1, 10, source="manual")
    bounce = pipeline.process("bounce")
    bounce.wait_metric("mailyard_bounce_dsns_skipped_total", 1, 10, reason="not_requested")

    removed = pipeline.cli("suppression", "remove", "Later@alpha.test")
    assert removed.returncode == 0, removed.stderr
    assert cli_json(pipeline, "list") == (0, [])
    time.sleep(2)
    assert pipeline.send("app@sender.test", ["Later@alpha.test"], message("again"))[0] == 250
    pipeline.sink.wait_for(
        lambda ms: any("Later@alpha.test" in m.recipients for m in ms), 20, "the delivery"
    )
    assert len(dsns(pipeline)) == 1


def test_expired_messages_in_a_row_suppress(pipeline_factory) -> None:
    pipeline: Pipeline = pipeline_factory(
        overrides={
            "queue": {"retry_delays": ["1s"], "max_lifetime": "2s"},
            "suppression": {"expired_strikes": 2},
        }
    )
    for subject in ("one", "two"):  # servfail.test never answers: both expire
        assert pipeline.send("app@sender.test", ["x@servfail.test"], message(subject))[0] == 250
    wait_for_dsns(pipeline, 2, timeout=40)
    wait_until(
        lambda: pipeline.cli("suppression", "check", "x@servfail.test").returncode == 0,
        10,
        "the entry after two expiries",
    )
    [entry] = cli_json(pipeline, "list", "--source", "bounce")[1]
    assert entry["class"] == "MessageExpired"
    assert entry["reason"].startswith("2 messages in a row expired")


@pytest.mark.adapters("rabbitmq")
def test_every_queue_replica_honours_an_add_within_seconds(pipeline_factory, tmp_path) -> None:
    pipeline: Pipeline = pipeline_factory(split=True)
    second = pipeline.add_replica("queue", tmp_path)
    first = pipeline.process("queue")
    done = pipeline.cli("suppression", "add", "stop@alpha.test")
    assert done.returncode == 0, done.stderr
    added_at = time.monotonic()
    time.sleep(1)  # "within seconds": the streams bring it in milliseconds
    count = 12
    for index in range(count):
        code, _ = pipeline.send("app@sender.test", ["stop@alpha.test"], message(f"m{index}"))
        assert code == 250
    wait_for_dsns(pipeline, count)
    assert time.monotonic() - added_at < 60
    assert pipeline.sink.received(lambda m: m.host != SENDER) == []
    name = "mailyard_queue_suppressed_total"
    by_replica = [p.metric(name, source="manual") for p in (first, second)]
    assert sum(by_replica) == count
    assert all(n > 0 for n in by_replica), f"one replica took every message: {by_replica}"


def test_a_bounce_after_acceptance_and_a_complaint_go_on_the_list(pipeline_factory, tmp_path):
    """VERP on: an asynchronous bounce of a gone address suppresses it for every sender, an
    ARF complaint for good, for mail from the sender it names."""
    from tests.integration.test_async_bounces import arf_for, dsn_for
    from tests.integration.test_async_bounces import start as start_with_verp

    pipeline = start_with_verp(pipeline_factory, tmp_path)
    recipients = ["jane@alpha.test", "pat@alpha.test"]
    assert pipeline.send("app@sender.test", recipients, message("verp"))[0] == 250
    delivered = pipeline.sink.wait_for(lambda m: len(m) == 2, 20, "two deliveries")
    by_recipient = {m.recipients[0]: m for m in delivered}
    jane, pat = by_recipient["jane@alpha.test"], by_recipient["pat@alpha.test"]
    assert (
        pipeline.send(
            "", [jane.mail_from], dsn_for(jane.content, jane.mail_from, jane.recipients[0])
        )[0]
        == 250
    )
    assert pipeline.send("", ["fbl@bounces.test"], arf_for(pat.content, pat.mail_from))[0] == 250
    pipeline.process("bounce").wait_metric("mailyard_bounce_async_total", 2, 20)

    def entries() -> dict[str, dict[str, Any]]:
        return {e["address"]: e for e in cli_json(pipeline, "list")[1]}

    found = wait_until(lambda: len(entries()) == 2 and entries(), 15, "two entries")
    assert (found["jane@alpha.test"]["source"], found["jane@alpha.test"]["class"]) == (
        "bounce",
        "InvalidRecipient",
    )
    assert found["jane@alpha.test"]["reason"].startswith("bounced after acceptance: 550 5.1.1")
    complaint = found["pat@alpha.test"]
    assert (complaint["source"], complaint["scope"], complaint["expires"]) == (
        "complaint",
        "sender.test",
        None,
    )
    time.sleep(1.5)  # the queue's follower (the spool's polls every second)
    # From the same sender: neither gets it. From another: pat does, jane does not.
    assert pipeline.send("app@sender.test", recipients, message("again"))[0] == 250
    assert pipeline.send("shop@other.test", recipients, message("other"))[0] == 250
    pipeline.sink.wait_for(lambda m: len(m) >= 3, 20, "the other sender's mail to pat")
    time.sleep(1)
    after = pipeline.sink.received(lambda m: m.host != SENDER)[2:]  # not the DSNs
    assert [m.recipients for m in after] == [("pat@alpha.test",)]
    assert b"Subject: other" in after[0].content
    # app@sender.test hears of both held back (5.7.1), with why: with VERP each
    # recipient has its own job, hence its own suppressed event, and the DSN
    # window (bounce.dsn_window) makes the two events of the message one DSN.
    [dsn] = wait_for_dsns(pipeline, 1)
    reasons = {b["Final-Recipient"]: b["Diagnostic-Code"] for b in status_blocks(dsn)}
    assert "(complaint, for mail from sender.test)" in reasons["rfc822; pat@alpha.test"]
    assert "(bounce, class InvalidRecipient)" in reasons["rfc822; jane@alpha.test"]
    assert pipeline.process("queue").metric("mailyard_queue_suppressed_total") == 3
