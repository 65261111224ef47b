"""The bounce service adds to the suppression list: hard bounces of the classes that
mean "the address is gone", N expired messages in a row, complaints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.bounce import metrics
from mailyard.bounce.service import BounceService
from mailyard.bounce.suppress import SuppressionPolicy, complaint, plan_suppressions
from mailyard.broker import Publish, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.broker.port import PublishError
from mailyard.classify import ADDRESS_GONE, BounceClass
from mailyard.config import Settings
from mailyard.suppression import LOG_NAME
from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added, Removed, Struck, decode
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

NOW = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
POLICY = SuppressionPolicy(
    hard_bounce_expiry=timedelta(days=365),
    expired_strikes=3,
    expired_strikes_window=timedelta(days=30),
    expired_strikes_expiry=timedelta(days=30),
)


def event(
    kind: int,
    results: list[tuple[str, str]],
    *,
    message_id: str = "01MSG",
    reply: pb.SmtpReply | None = None,
) -> pb.DeliveryEvent:
    return pb.DeliveryEvent(
        kind=kind,
        message_id=message_id,
        queue_id=f"{message_id}.1",
        domain="beta.test",
        mail_from="app@sender.test",
        results=[
            pb.RecipientResult(
                recipient=recipient,
                reply=reply or pb.SmtpReply(code=550, status="5.1.1", text="No such user"),
                remote_mta="mx.beta.test",
                bounce_class=bounce_class,
            )
            for recipient, bounce_class in results
        ],
        received_at=wire.timestamp(NOW),
        occurred_at=wire.timestamp(NOW),
        attempts=1,
        original_headers=b"Subject: s\r\n",
    )


def failed(*results: tuple[str, str]) -> pb.DeliveryEvent:
    return event(pb.EVENT_KIND_FAILED, list(results))


def expired(message_id: str, *recipients: str) -> pb.DeliveryEvent:
    return event(
        pb.EVENT_KIND_EXPIRED,
        [(r, "MessageExpired") for r in recipients],
        message_id=message_id,
        reply=pb.SmtpReply(code=451, status="4.4.1", text="connection timed out"),
    )


def fold(state: SuppressionState, records) -> SuppressionState:
    for record in records:
        state.apply(record)
    return state


@pytest.mark.parametrize("bounce_class", list(BounceClass))
def test_only_the_classes_that_mean_the_address_is_gone_suppress(bounce_class):
    records = plan_suppressions(
        failed(("bob@beta.test", bounce_class.value)), SuppressionState(), POLICY, now=NOW
    )
    if bounce_class in ADDRESS_GONE:
        [added] = records
        assert added == Added(
            Entry(
                address="bob@beta.test",
                scope=None,
                reason="550 5.1.1 No such user (said mx.beta.test)",
                bounce_class=bounce_class.value,
                source=Source.BOUNCE,
                since=NOW,
                expires=NOW + timedelta(days=365),
            )
        )
    else:
        assert records == []


def test_a_failure_of_several_recipients_suppresses_only_the_gone_ones():
    records = plan_suppressions(
        failed(("a@beta.test", "InvalidRecipient"), ("b@beta.test", "SpamBlock")),
        SuppressionState(),
        POLICY,
        now=NOW,
    )
    assert [r.entry.address for r in records] == ["a@beta.test"]


def test_an_address_already_suppressed_gets_nothing_new():
    state = fold(
        SuppressionState(),
        plan_suppressions(
            failed(("a@beta.test", "InvalidRecipient")), SuppressionState(), POLICY, now=NOW
        ),
    )
    later = NOW + timedelta(hours=1)
    assert plan_suppressions(failed(("a@beta.test", "BadDomain")), state, POLICY, now=later) == []
    # A scoped entry alone does not count: mail from other senders still bounced.
    scoped = fold(
        SuppressionState(), [complaint("c@beta.test", scope="news.test", reason="x", now=NOW)]
    )
    assert (
        len(plan_suppressions(failed(("c@beta.test", "InvalidRecipient")), scoped, POLICY, now=NOW))
        == 1
    )


def test_soft_bounces_and_other_kinds_add_nothing():
    for kind in (pb.EVENT_KIND_DEFERRED, pb.EVENT_KIND_DELIVERED, pb.EVENT_KIND_SUPPRESSED):
        one = event(kind, [("a@beta.test", "InvalidRecipient")])
        assert plan_suppressions(one, SuppressionState(), POLICY, now=NOW) == []


def test_the_third_expired_message_in_a_row_suppresses():
    state = SuppressionState()
    first = plan_suppressions(expired("m1", "slow@beta.test"), state, POLICY, now=NOW)
    assert first == [Struck("slow@beta.test", "m1", NOW)]
    fold(state, first)
    # The same event again (a redelivery) strikes once.
    again = plan_suppressions(expired("m1", "slow@beta.test"), state, POLICY, now=NOW)
    fold(state, again)
    assert state.strikes("slow@beta.test", since=NOW - timedelta(days=1)) == 1
    fold(state, plan_suppressions(expired("m2", "slow@beta.test"), state, POLICY, now=NOW))
    third = plan_suppressions(
        expired("m3", "slow@beta.test"), state, POLICY, now=NOW + timedelta(days=2)
    )
    [added] = third
    assert isinstance(added, Added)
    assert added.entry.bounce_class == "MessageExpired"
    assert added.entry.source is Source.BOUNCE
    assert added.entry.expires == NOW + timedelta(days=32)
    assert added.entry.reason.startswith("3 messages in a row expired; the last: 451 4.4.1")
    fold(state, third)
    assert state.strikes("slow@beta.test", since=NOW - timedelta(days=1)) == 0  # forgotten


def test_strikes_older_than_the_window_do_not_count():
    state = SuppressionState()
    old = NOW - timedelta(days=31)
    fold(state, [Struck("slow@beta.test", "m1", old), Struck("slow@beta.test", "m2", old)])
    records = plan_suppressions(expired("m3", "slow@beta.test"), state, POLICY, now=NOW)
    assert records == [Struck("slow@beta.test", "m3", NOW)]


def test_a_removal_starts_the_count_again():
    state = SuppressionState()
    for key in ("m1", "m2"):
        fold(state, plan_suppressions(expired(key, "slow@beta.test"), state, POLICY, now=NOW))
    state.apply(Removed("slow@beta.test", every_scope=True))
    records = plan_suppressions(expired("m3", "slow@beta.test"), state, POLICY, now=NOW)
    assert records == [Struck("slow@beta.test", "m3", NOW)]


def test_expired_strikes_zero_turns_them_off():
    off = SuppressionPolicy(timedelta(days=1), 0, timedelta(days=1), timedelta(days=1))
    assert (
        plan_suppressions(expired("m1", "slow@beta.test"), SuppressionState(), off, now=NOW) == []
    )


def test_one_strike_suppresses_when_expired_strikes_is_one():
    one = SuppressionPolicy(timedelta(days=1), 1, timedelta(days=1), timedelta(hours=2))
    [added] = plan_suppressions(expired("m1", "slow@beta.test"), SuppressionState(), one, now=NOW)
    assert isinstance(added, Added)
    assert added.entry.expires == NOW + timedelta(hours=2)


def report(kind: int, recipient: str, **fields) -> pb.DeliveryEvent:
    """A bounced or complained event, as bounce/inbound.py makes them."""
    bounce_class = fields.pop("bounce_class", "")
    reply = fields.pop("reply", pb.SmtpReply())
    return pb.DeliveryEvent(
        kind=kind,
        queue_id="01REPORT.1",
        results=[
            pb.RecipientResult(
                recipient=recipient, reply=reply, bounce_class=bounce_class, remote_mta=""
            )
        ],
        occurred_at=wire.timestamp(NOW),
        **fields,
    )


def test_an_asynchronous_bounce_of_a_gone_address_suppresses_when_verp_verified_it():
    gone = pb.SmtpReply(code=550, status="5.1.1", text="user unknown")
    bounced = report(
        pb.EVENT_KIND_BOUNCED,
        "Bob@Beta.TEST",
        bounce_class="InvalidRecipient",
        reply=gone,
        verified=True,
        reporter="mx.beta.test",
    )
    [added] = plan_suppressions(bounced, SuppressionState(), POLICY, now=NOW)
    assert isinstance(added, Added)
    assert added.entry.address == "Bob@beta.test"
    assert added.entry.source is Source.BOUNCE
    assert added.entry.expires == NOW + timedelta(days=365)
    assert added.entry.reason == (
        "bounced after acceptance: 550 5.1.1 user unknown, reported by mx.beta.test"
    )
    # Not verified (anyone can mail us a bounce), or not gone: nothing.
    unverified = report(
        pb.EVENT_KIND_BOUNCED, "bob@beta.test", bounce_class="InvalidRecipient", verified=False
    )
    assert plan_suppressions(unverified, SuppressionState(), POLICY, now=NOW) == []
    full = report(pb.EVENT_KIND_BOUNCED, "bob@beta.test", bounce_class="QuotaIssues", verified=True)
    assert plan_suppressions(full, SuppressionState(), POLICY, now=NOW) == []


def test_a_complaint_event_suppresses_for_ever_scoped_to_the_sender_it_names():
    quoted = report(
        pb.EVENT_KIND_COMPLAINED,
        "bob@beta.test",
        mail_from="news@Letters.TEST",
        feedback_type="abuse",
        verified=True,
        reporter="fbl.example",
    )
    [added] = plan_suppressions(quoted, SuppressionState(), POLICY, now=NOW)
    assert isinstance(added, Added)
    assert (added.entry.source, added.entry.scope, added.entry.expires) == (
        Source.COMPLAINT,
        "letters.test",
        None,
    )
    assert added.entry.reason == "complaint (abuse) from fbl.example"
    state = fold(SuppressionState(), [added])
    assert plan_suppressions(quoted, state, POLICY, now=NOW) == []  # reported twice: once
    # Without the original sender: every sender.
    unscoped = report(pb.EVENT_KIND_COMPLAINED, "ann@beta.test", verified=True)
    [every] = plan_suppressions(unscoped, SuppressionState(), POLICY, now=NOW)
    assert every.entry.scope is None


def test_an_unverified_complaint_counts_unless_turned_off():
    named = report(pb.EVENT_KIND_COMPLAINED, "bob@beta.test", feedback_type="abuse")
    [added] = plan_suppressions(named, SuppressionState(), POLICY, now=NOW)
    assert added.entry.reason.endswith("unverified: only the report names the recipient")
    strict = SuppressionPolicy(
        timedelta(days=1), 3, timedelta(days=1), timedelta(days=1), unverified_complaints=False
    )
    assert plan_suppressions(named, SuppressionState(), strict, now=NOW) == []
    # A complaint upgrades an entry that would expire.
    expiring = fold(
        SuppressionState(),
        plan_suppressions(
            failed(("bob@beta.test", "InvalidRecipient")), SuppressionState(), POLICY, now=NOW
        ),
    )
    [upgrade] = plan_suppressions(named, expiring, POLICY, now=NOW)
    assert upgrade.entry.expires is None


def test_a_complaint_never_expires():
    record = complaint("Bob@beta.test", scope=None, reason="abuse report from fbl.example", now=NOW)
    assert record.entry.source is Source.COMPLAINT
    assert record.entry.expires is None
    assert fold(SuppressionState(), [record]).lookup(
        "Bob@beta.test", "x.test", NOW + timedelta(days=9999)
    )


# --- the service, on the in-memory port ---------------------------------------


def settings(window: str = "0s", **suppression: object) -> Settings:
    return Settings(
        hostname="mx.test",
        bounce={"dsn_window": window},  # type: ignore[arg-type]
        suppression=suppression,  # type: ignore[arg-type]
    )


def dsns(broker: MemoryBroker) -> list[pb.AcceptedMessage]:
    """The DSNs the window's flush stored (they are not the handler's outputs)."""
    return [
        item
        for output in broker.stored
        if isinstance(output, Publish) and output.queue is QueueName.INBOUND
        for item in output.items
        if isinstance(item, pb.AcceptedMessage)
    ]


def log_records(broker: MemoryBroker) -> list:
    return [decode(entry.data) for entry in broker.logs.get(LOG_NAME, [])]


async def test_the_bounce_service_appends_before_it_releases_and_still_sends_the_dsn():
    broker = MemoryBroker()
    bounce = BounceService(settings(hard_bounce_expiry="2d"), broker)
    await bounce.start()
    added = metrics.SUPPRESSIONS_ADDED.labels("bounce", "InvalidRecipient")._value.get()
    try:
        settled = await broker.deliver(
            QueueName.BOUNCE,
            [failed(("gone@beta.test", "InvalidRecipient"), ("spam@beta.test", "SpamBlock"))],
        )
        assert settled.outcome == "acked"
        [record] = log_records(broker)
        assert isinstance(record, Added)
        assert record.entry.address == "gone@beta.test"
        assert record.entry.expires - record.entry.since == timedelta(days=2)
        assert len(dsns(broker)) == 1  # the DSN, as before (stored by the window)
        assert metrics.SUPPRESSIONS_ADDED.labels("bounce", "InvalidRecipient")._value.get() == (
            added + 1
        )
        # Three messages to one address expire: strike, strike, suppressed.
        for key in ("m1", "m2"):
            await broker.deliver(QueueName.BOUNCE, [expired(key, "slow@beta.test")])
        await broker.deliver(QueueName.BOUNCE, [expired("m3", "slow@beta.test")])
        assert [type(r).__name__ for r in log_records(broker)] == [
            "Added",
            "Struck",
            "Struck",
            "Added",
        ]
        now = datetime.now(UTC)
        assert bounce.suppressions.state.lookup("slow@beta.test", "", now) is not None
    finally:
        await bounce.stop(1)


async def test_when_the_log_refuses_the_event_is_tried_again_without_a_dsn():
    broker = MemoryBroker()
    bounce = BounceService(settings(), broker)
    await bounce.start()
    try:
        broker.log(LOG_NAME).fail_with = PublishError("stream unavailable")
        settled = await broker.deliver(
            QueueName.BOUNCE, [failed(("gone@beta.test", "InvalidRecipient"))]
        )
        assert settled.outcome == "requeued"
        assert settled.outputs == []
        assert broker.stored == []
    finally:
        await bounce.stop(1)


async def test_the_complaint_hook_adds_an_entry_every_replica_sees():
    broker = MemoryBroker()
    bounce = BounceService(settings(), broker)
    await bounce.start()
    try:
        await bounce.suppress_complaint("Bob@beta.test", scope="news.test", reason="ARF abuse")
        [record] = log_records(broker)
        assert isinstance(record, Added)
        assert (record.entry.source, record.entry.scope, record.entry.expires) == (
            Source.COMPLAINT,
            "news.test",
            None,
        )
    finally:
        await bounce.stop(1)


async def test_expiries_handled_side_by_side_each_count():
    broker = MemoryBroker()
    bounce = BounceService(settings(expired_strikes=2), broker)
    await bounce.start()
    log = broker.log(LOG_NAME)
    real_append = log.append

    async def slow_append(records):  # a broker's confirm takes a while
        await asyncio.sleep(0.05)
        await real_append(records)

    log.append = slow_append  # type: ignore[method-assign]
    try:
        await asyncio.gather(
            broker.deliver(QueueName.BOUNCE, [expired("m1", "slow@beta.test")]),
            broker.deliver(QueueName.BOUNCE, [expired("m2", "slow@beta.test")]),
        )
        assert [type(r).__name__ for r in log_records(broker)] == ["Struck", "Added"]
    finally:
        await bounce.stop(1)


async def test_reports_that_come_back_go_on_the_list_before_they_are_released(tmp_path):
    """The corpus's Postfix bounce (InvalidRecipient) and Yahoo ARF complaint, through on_local."""
    from tests.unit.test_async_bounces import (
        DOMAIN,
        HOSTNAME,
        KEYS,
        local_job,
        report,
        return_path,
    )

    secret = tmp_path / "secret"
    secret.write_bytes(KEYS.secrets[0] + b"\n")
    broker = MemoryBroker()
    bounce = BounceService(
        Settings(
            hostname=HOSTNAME,
            ingress={"local_domains": [DOMAIN]},
            bounce={"return_path_domain": DOMAIN, "verp_secret_file": str(secret)},
        ),
        broker,
    )
    await bounce.start()
    try:
        jobs = [
            local_job(report("postfix-dsn.eml"), return_path("jane@example.org")),
            local_job(report("yahoo-arf.eml"), "fbl@bounces.test"),
        ]
        settled = await broker.deliver(QueueName.LOCAL, jobs)
        assert settled.outcome == "acked"
        entries = {r.entry.address: r.entry for r in log_records(broker)}
        assert set(entries) == {"jane@example.org", "pat@yahoo.com"}
        assert entries["jane@example.org"].source is Source.BOUNCE
        assert entries["jane@example.org"].bounce_class == "InvalidRecipient"
        assert entries["pat@yahoo.com"].source is Source.COMPLAINT
        assert entries["pat@yahoo.com"].expires is None
        # The same reports again (a redelivery) add nothing.
        await broker.deliver(QueueName.LOCAL, jobs)
        assert len(log_records(broker)) == 2
    finally:
        await bounce.stop(1)


@pytest.mark.parametrize(("mail_from", "notify"), [("", ""), ("app@sender.test", "NEVER")])
async def test_a_failure_that_gets_no_dsn_still_goes_on_the_list(mail_from, notify):
    """The null sender, NOTIFY=NEVER: released at once without a DSN, but planned."""
    broker = MemoryBroker()
    bounce = BounceService(settings("60s"), broker)
    await bounce.start()
    try:
        one = failed(("gone@beta.test", "InvalidRecipient"))
        one.mail_from = mail_from
        if notify:
            one.recipient_options.append(pb.RecipientOptions(notify=notify))
        settled = await asyncio.wait_for(broker.deliver(QueueName.BOUNCE, [one]), 1)
        assert settled.outcome == "acked"
        assert dsns(broker) == []
        [record] = log_records(broker)
        assert isinstance(record, Added)
        assert record.entry.address == "gone@beta.test"
    finally:
        await bounce.stop(1)


async def test_events_that_share_a_dsn_are_each_planned_once():
    """Two failed events of one message meet in the window: one DSN, one entry each."""
    broker = MemoryBroker()
    bounce = BounceService(settings("200ms"), broker)
    await bounce.start()
    try:
        first = failed(("gone@beta.test", "InvalidRecipient"))
        second = failed(("lost@gamma.test", "BadDomain"))
        second.queue_id, second.domain = "01MSG.2", "gamma.test"
        settled = await asyncio.gather(
            broker.deliver(QueueName.BOUNCE, [first]), broker.deliver(QueueName.BOUNCE, [second])
        )
        assert [s.outcome for s in settled] == ["acked", "acked"]
        [notice] = dsns(broker)
        assert b"gone@beta.test" in notice.content
        assert b"lost@gamma.test" in notice.content
        assert sorted(r.entry.address for r in log_records(broker)) == [
            "gone@beta.test",
            "lost@gamma.test",
        ]
    finally:
        await bounce.stop(1)


async def test_a_group_that_will_not_store_plans_nothing_twice_until_redelivered():
    """The DSN cannot be stored: the events go back, their entries stay (once each)."""
    broker = MemoryBroker()
    bounce = BounceService(settings(), broker)
    await bounce.start()
    try:
        broker.fail_with = PublishError("the broker said no")
        settled = await broker.deliver(
            QueueName.BOUNCE, [failed(("gone@beta.test", "InvalidRecipient"))]
        )
        assert settled.outcome == "requeued"
        assert len(log_records(broker)) == 1
        broker.fail_with = None
        again = await broker.deliver(
            QueueName.BOUNCE, [failed(("gone@beta.test", "InvalidRecipient"))]
        )
        assert again.outcome == "acked"
        assert len(log_records(broker)) == 1  # already suppressed: nothing new
        assert len(dsns(broker)) == 1
    finally:
        await bounce.stop(1)
