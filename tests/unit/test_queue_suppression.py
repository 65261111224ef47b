"""The queue leaves suppressed recipients out of the split; bounce tells the sender.

The planner is pure and judged against a list (a SuppressionState) and a
moment; the service test runs the handler on the in-memory port, with the
list loaded from its log.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest

from mailyard import wire
from mailyard.bounce.plan import plan_dsn
from mailyard.broker import BOUNCE_EVENTS, Emit, EventKind, Publish, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.config import Settings
from mailyard.notify import Condition, wants
from mailyard.queue import metrics
from mailyard.queue.plan import plan_accepted
from mailyard.queue.service import QueueService
from mailyard.queue.split import split_message
from mailyard.queue.suppress import explain
from mailyard.suppression import LOG_NAME
from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added, encode
from mailyard.suppression.state import SuppressionState
from mailyard.v1 import message_pb2 as pb

NOW = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
SINCE = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)


def entry(address: str, **changes) -> Entry:
    fields = {
        "address": address,
        "scope": None,
        "reason": "550 5.1.1 No such user (said mx.beta.test)",
        "bounce_class": "InvalidRecipient",
        "source": Source.BOUNCE,
        "since": SINCE,
        "expires": None,
    }
    return Entry(**(fields | changes))


def suppressing(*entries: Entry) -> SuppressionState:
    state = SuppressionState()
    for one in entries:
        state.apply(Added(one))
    return state


def accepted(
    recipients: list[str],
    *,
    mail_from: str = "app@Sender.TEST",
    notify: list[str] | None = None,
    message_id: str = "01MSG",
) -> pb.AcceptedMessage:
    message = pb.AcceptedMessage(
        message_id=message_id,
        mail_from=mail_from,
        recipients=recipients,
        content=b"Subject: hello\r\n\r\nbody\r\n",
        received_at=wire.timestamp(NOW),
        origin=pb.ORIGIN_SMTP,
    )
    if notify is not None:
        message.recipient_options.extend(pb.RecipientOptions(notify=n) for n in notify)
    return message


def plan(messages, suppressions: SuppressionState, *, now: datetime = NOW):
    return plan_accepted(
        messages,
        local_domains={"local.test"},
        max_recipients_per_job=50,
        lifetime=timedelta(days=5),
        max_jobs=50,
        max_bytes=1_000_000,
        may_repeat=False,
        suppressions=suppressions,
        now=now,
    )


def jobs_of(outputs) -> dict[str, list[str]]:
    return {
        job.queue_id: list(job.recipients)
        for output in outputs
        if isinstance(output, Publish)
        for job in output.items
    }


def events_of(outputs) -> list[pb.DeliveryEvent]:
    return [o.event for o in outputs if isinstance(o, Emit) and o.kind is EventKind.SUPPRESSED]


def test_a_suppressed_recipient_gets_an_event_and_the_others_are_split_as_usual():
    state = suppressing(entry("gone@beta.test"))
    result = plan(
        [accepted(["ok@alpha.test", "gone@Beta.TEST", "also@beta.test", "p@local.test"])],
        state,
    )
    assert jobs_of(result.outputs) == {
        "01MSG.1": ["ok@alpha.test"],
        "01MSG.2": ["also@beta.test"],  # the same job, less the suppressed recipient
        "01MSG.3": ["p@local.test"],
    }
    [event] = events_of(result.outputs)
    assert event.kind == pb.EVENT_KIND_SUPPRESSED
    assert (event.queue_id, event.domain, event.mail_from) == (
        "01MSG.2",
        "beta.test",
        "app@Sender.TEST",
    )
    [suppressed] = event.results
    assert suppressed.recipient == "gone@beta.test"
    assert (suppressed.reply.code, suppressed.reply.status) == (550, "5.7.1")
    assert suppressed.reply.text == (
        "suppressed since 2025-03-01T08:30:00Z (bounce, class InvalidRecipient): "
        "550 5.1.1 No such user (said mx.beta.test)"
    )
    assert suppressed.bounce_class == "InvalidRecipient"
    assert suppressed.remote_mta == ""  # our verdict, not a server's
    assert b"Subject: hello" in event.original_headers  # what the DSN quotes
    assert [e.source for found in result.suppressed for s in found for e in s.entries] == [
        Source.BOUNCE
    ]
    assert EventKind.SUPPRESSED in BOUNCE_EVENTS  # it reaches the bounce queue, a DSN depends on it


def test_a_job_whose_recipients_are_all_suppressed_is_not_published():
    state = suppressing(entry("a@beta.test"), entry("b@beta.test", source=Source.MANUAL))
    result = plan([accepted(["a@beta.test", "b@beta.test", "c@alpha.test"])], state)
    # Queue ids stay the split's (a split again after a crash gives the same ones).
    assert jobs_of(result.outputs) == {"01MSG.2": ["c@alpha.test"]}
    [event] = events_of(result.outputs)
    assert [r.recipient for r in event.results] == ["a@beta.test", "b@beta.test"]
    assert result.batch_sizes == [1]


def test_held_recipients_keep_their_place_so_queue_ids_do_not_depend_on_the_list():
    recipients = [f"r{n}@beta.test" for n in range(5)] + ["x@alpha.test"]
    common = {"local_domains": (), "max_recipients_per_job": 2, "lifetime": timedelta(days=5)}
    plain = split_message(accepted(recipients), **common)
    held = split_message(
        accepted(recipients),
        **common,
        suppressions=suppressing(entry("r1@beta.test"), entry("r2@beta.test")),
        now=NOW,
    )
    assert [(j.queue_id, list(j.recipients)) for j in plain.remote] == [
        ("01MSG.1", ["r0@beta.test", "r1@beta.test"]),
        ("01MSG.2", ["r2@beta.test", "r3@beta.test"]),
        ("01MSG.3", ["r4@beta.test"]),
        ("01MSG.4", ["x@alpha.test"]),
    ]
    assert [(j.queue_id, list(j.recipients)) for j in held.remote] == [
        ("01MSG.1", ["r0@beta.test"]),
        ("01MSG.2", ["r3@beta.test"]),
        ("01MSG.3", ["r4@beta.test"]),
        ("01MSG.4", ["x@alpha.test"]),
    ]
    assert [(h.job.queue_id, list(h.job.recipients)) for h in held.held] == [
        ("01MSG.1", ["r1@beta.test"]),
        ("01MSG.2", ["r2@beta.test"]),
    ]


def test_without_a_moment_every_entry_applies():
    """split_message's now defaults to the epoch: a caller that forgets it sends less, not more."""
    state = suppressing(entry("r@beta.test", expires=NOW))
    split = split_message(
        accepted(["r@beta.test"]),
        local_domains=(),
        max_recipients_per_job=50,
        lifetime=timedelta(days=5),
        suppressions=state,
    )
    assert split.remote == []


def test_nothing_changes_while_the_list_is_empty_or_holds_others():
    for state in (SuppressionState(), suppressing(entry("someone@else.test"))):
        result = plan([accepted(["x@alpha.test", "y@beta.test"])], state)
        assert jobs_of(result.outputs) == {"01MSG.1": ["x@alpha.test"], "01MSG.2": ["y@beta.test"]}
        assert events_of(result.outputs) == []


def test_the_local_part_must_match_exactly_the_domain_in_any_case():
    state = suppressing(entry("Gone@beta.test"))
    result = plan([accepted(["gone@beta.test", "Gone@BETA.test"])], state)
    assert jobs_of(result.outputs) == {"01MSG.1": ["gone@beta.test"]}
    assert [r.recipient for e in events_of(result.outputs) for r in e.results] == ["Gone@beta.test"]


def test_a_scope_matches_the_envelope_sender_domain_case_folded():
    state = suppressing(entry("bob@beta.test", scope="news.test", source=Source.UNSUBSCRIBE))
    from_news = plan([accepted(["bob@beta.test"], mail_from="letters@NEWS.test")], state)
    assert jobs_of(from_news.outputs) == {}
    [event] = events_of(from_news.outputs)
    assert "for mail from news.test" in event.results[0].reply.text
    from_shop = plan([accepted(["bob@beta.test"], mail_from="orders@shop.test")], state)
    assert jobs_of(from_shop.outputs) == {"01MSG.1": ["bob@beta.test"]}
    # A subdomain is another sender domain.
    from_sub = plan([accepted(["bob@beta.test"], mail_from="x@mail.news.test")], state)
    assert events_of(from_sub.outputs) == []


def test_the_null_sender_meets_only_entries_for_every_sender():
    state = suppressing(entry("bob@beta.test", scope="news.test"), entry("gone@beta.test"))
    result = plan([accepted(["bob@beta.test", "gone@beta.test"], mail_from="")], state)
    assert jobs_of(result.outputs) == {"01MSG.1": ["bob@beta.test"]}


def test_mail_for_local_domains_is_never_suppressed():
    state = suppressing(entry("postmaster@local.test"))
    result = plan([accepted(["postmaster@local.test"])], state)
    assert jobs_of(result.outputs) == {"01MSG.1": ["postmaster@local.test"]}


def test_an_expired_entry_lets_mail_through():
    state = suppressing(entry("gone@beta.test", expires=NOW + timedelta(seconds=1)))
    assert jobs_of(plan([accepted(["gone@beta.test"])], state).outputs) == {}
    later = plan([accepted(["gone@beta.test"])], state, now=NOW + timedelta(seconds=1))
    assert jobs_of(later.outputs) == {"01MSG.1": ["gone@beta.test"]}


def test_each_message_of_a_batch_is_judged_on_its_own_sender():
    state = suppressing(entry("bob@beta.test", scope="news.test"))
    result = plan(
        [
            accepted(["bob@beta.test"], mail_from="a@news.test", message_id="01A"),
            accepted(["bob@beta.test"], mail_from="a@shop.test", message_id="01B"),
        ],
        state,
    )
    assert jobs_of(result.outputs) == {"01B.1": ["bob@beta.test"]}
    assert [e.message_id for e in events_of(result.outputs)] == ["01A"]
    assert [len(found) for found in result.suppressed] == [1, 0]


def test_the_planner_needs_a_moment_to_judge_expiry():
    with pytest.raises(TypeError):
        plan_accepted(
            [accepted(["x@beta.test"])],
            local_domains=(),
            max_recipients_per_job=50,
            lifetime=timedelta(days=5),
            max_jobs=50,
            max_bytes=1_000_000,
            may_repeat=False,
            suppressions=suppressing(entry("x@beta.test")),
        )


# --- NOTIFY: the event carries it, the bounce planner honours it ---------------


def dsn_recipients(event: pb.DeliveryEvent) -> list[str] | None:
    dsn = plan_dsn([event], reporting_mta="mx.test", dsn_id="01DSN", now=NOW)
    if not dsn.outputs:
        return None
    [publish] = dsn.outputs
    assert isinstance(publish, Publish)
    [notice] = publish.items
    report = email.message_from_bytes(notice.content, policy=email.policy.default)
    _, status, _ = report.get_payload()
    return [block["Final-Recipient"].removeprefix("rfc822; ") for block in status.get_payload()[1:]]


def test_notify_never_means_no_dsn_but_still_the_event():
    state = suppressing(entry("a@beta.test"), entry("b@beta.test"), entry("c@beta.test"))
    message = accepted(
        ["a@beta.test", "b@beta.test", "c@beta.test", "d@beta.test"],
        notify=["NEVER", "SUCCESS,DELAY", "", "NEVER"],
    )
    result = plan([message], state)
    [event] = events_of(result.outputs)
    assert [r.recipient for r in event.results] == ["a@beta.test", "b@beta.test", "c@beta.test"]
    assert [o.notify for o in event.recipient_options] == ["NEVER", "SUCCESS,DELAY", ""]
    assert dsn_recipients(event) == ["c@beta.test"]  # only c asked (by default) for failures
    [job] = [j for o in result.outputs if isinstance(o, Publish) for j in o.items]
    assert [o.notify for o in job.recipient_options] == ["NEVER"]  # d's options stay with d

    everyone_never = accepted(["a@beta.test"], notify=["NEVER"])
    [quiet] = events_of(plan([everyone_never], state).outputs)
    skipped = plan_dsn([quiet], reporting_mta="mx.test", dsn_id="01DSN", now=NOW)
    assert (skipped.outputs, skipped.skipped) == ([], "not_requested")


def test_the_dsn_says_since_when_and_why():
    state = suppressing(entry("gone@beta.test"))
    [event] = events_of(plan([accepted(["gone@beta.test"])], state).outputs)
    dsn = plan_dsn([event], reporting_mta="mx.test", dsn_id="01DSN", now=NOW)
    [publish] = dsn.outputs
    [notice] = publish.items
    assert list(notice.recipients) == ["app@Sender.TEST"]
    assert notice.mail_from == ""
    report = email.message_from_bytes(notice.content, policy=email.policy.default)
    human, status, original = report.get_payload()
    text = human.get_content()
    assert "suppression list" in text
    assert "suppressed since 2025-03-01T08:30:00Z (bounce, class InvalidRecipient)" in text
    [block] = status.get_payload()[1:]
    assert block["Action"] == "failed"
    assert block["Status"] == "5.7.1"
    assert block["Diagnostic-Code"].startswith("X-Mailyard; 550 5.7.1 suppressed since")
    assert block["X-Mailyard-Bounce-Class"] == "InvalidRecipient"
    assert "Last-Attempt-Date" not in block  # nothing was attempted
    assert "Subject: hello" in original.get_payload()


def test_suppressed_and_failed_recipients_of_one_message_share_one_failed_dsn():
    """The window brings a message's suppressed and failed events together: one
    DSN, a block each, 5.7.1 (nothing attempted) beside the server's 5.1.1."""
    state = suppressing(entry("gone@beta.test"))
    result = plan([accepted(["gone@beta.test", "bad@alpha.test"], notify=["", "FAILURE"])], state)
    [suppressed] = events_of(result.outputs)
    [(job, recipients)] = jobs_of(result.outputs).items()
    assert recipients == ["bad@alpha.test"]
    failed = pb.DeliveryEvent(
        kind=pb.EVENT_KIND_FAILED,
        message_id="01MSG",
        queue_id=job,
        domain="alpha.test",
        mail_from="app@Sender.TEST",
        results=[
            pb.RecipientResult(
                recipient="bad@alpha.test",
                reply=pb.SmtpReply(code=550, status="5.1.1", text="no such user"),
                remote_mta="mx.alpha.test",
            )
        ],
        recipient_options=[pb.RecipientOptions(notify="FAILURE")],
        received_at=wire.timestamp(NOW),
        occurred_at=wire.timestamp(NOW),
        attempts=1,
        original_headers=b"Subject: hello\r\n",
    )
    dsn = plan_dsn([suppressed, failed], reporting_mta="mx.test", dsn_id="01DSN", now=NOW)
    assert dsn.kind == "failed"
    [publish] = dsn.outputs
    [notice] = publish.items
    report = email.message_from_bytes(notice.content, policy=email.policy.default)
    human, status, _ = report.get_payload()
    text = human.get_content()
    assert "suppression list" in text
    assert "permanent" in text
    gone, bad = status.get_payload()[1:]
    assert (gone["Final-Recipient"], gone["Status"]) == ("rfc822; gone@beta.test", "5.7.1")
    assert "Last-Attempt-Date" not in gone
    assert (bad["Final-Recipient"], bad["Status"]) == ("rfc822; bad@alpha.test", "5.1.1")
    assert "Last-Attempt-Date" in bad
    assert [r.suppressed for r in dsn.notice.recipients] == [True, False]


def test_a_suppressed_recipient_of_a_ret_full_message_gets_the_message_back():
    state = suppressing(entry("gone@beta.test"))
    message = accepted(["gone@beta.test"])
    message.options.ret = "FULL"
    [event] = events_of(plan([message], state).outputs)
    assert event.original_content == message.content  # a failed DSN: RET=FULL applies
    dsn = plan_dsn([event], reporting_mta="mx.test", dsn_id="01DSN", now=NOW)
    [publish] = dsn.outputs
    [notice] = publish.items
    report = email.message_from_bytes(notice.content, policy=email.policy.default)
    _, _, returned = report.get_payload()
    assert returned.get_content_type() == "message/rfc822"
    assert "too large" not in notice.content.decode()


@pytest.mark.parametrize(
    ("notify", "wanted"),
    [("", True), ("FAILURE", True), ("SUCCESS,FAILURE", True), ("NEVER", False), ("DELAY", False)],
)
def test_which_notify_asks_for_a_failure_notice(notify, wanted):
    assert wants(notify, Condition.FAILURE) is wanted


def test_explain_names_source_class_scope_and_reason():
    assert explain(entry("x@y.test", source=Source.MANUAL, bounce_class=None, reason="")) == (
        "suppressed since 2025-03-01T08:30:00Z (manual)"
    )


# --- the service, on the in-memory port ---------------------------------------


def settings() -> Settings:
    return Settings(hostname="mx.test", ingress={"local_domains": ["local.test"]})  # type: ignore[arg-type]


async def test_the_queue_service_plans_against_the_list_it_loaded_and_follows():
    broker = MemoryBroker()
    log = broker.log(LOG_NAME)
    await log.append([encode(Added(entry("gone@beta.test", since=datetime.now(UTC))))])
    queue = QueueService(settings(), broker)
    await queue.start()
    suppressed = metrics.SUPPRESSED.labels("bounce")._value.get()
    duplicates = metrics.DUPLICATE_RECIPIENTS._value.get()
    try:
        settled = await broker.deliver(
            QueueName.INBOUND, [accepted(["gone@beta.test", "ok@beta.test"])]
        )
        assert jobs_of(settled.outputs) == {"01MSG.1": ["ok@beta.test"]}
        assert len(events_of(settled.outputs)) == 1
        assert metrics.SUPPRESSED.labels("bounce")._value.get() == suppressed + 1
        assert metrics.DUPLICATE_RECIPIENTS._value.get() == duplicates  # not a duplicate
        # An entry another replica appends is honoured without a restart.
        await log.append([encode(Added(entry("ok@beta.test", source=Source.MANUAL)))])
        for _ in range(100):
            if queue.suppressions.state.lookup("ok@beta.test", "", datetime.now(UTC)):
                break
            await asyncio.sleep(0.01)
        again = await broker.deliver(QueueName.INBOUND, [accepted(["ok@beta.test"])])
        assert jobs_of(again.outputs) == {}
    finally:
        await queue.stop(1)
