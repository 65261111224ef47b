"""Bounce classification: replies seen from the large providers, RFC 3463, users' rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.classify import BounceClass, Classifier, RulesError, default_rules, load_rules
from mailyard.reply import Reply

C = BounceClass

# (code, status, text) as mailbox providers send them, and what they mean for the sender.
CORPUS = [
    # Gmail
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos",
        C.INVALID_RECIPIENT,
    ),
    (550, "5.2.1", "The email account that you tried to reach is disabled.", C.INACTIVE_MAILBOX),
    (552, "5.2.2", "The email account that you tried to reach is over quota.", C.QUOTA_ISSUES),
    (
        550,
        "5.7.26",
        "This mail has been blocked because the sender is unauthenticated. Gmail "
        "requires all senders to authenticate with either SPF or DKIM.",
        C.AUTHENTICATION_FAILED,
    ),
    (
        421,
        "4.7.28",
        "Gmail has detected an unusual rate of unsolicited mail originating from your IP address.",
        C.SPAM_BLOCK,
    ),
    (
        550,
        "5.7.1",
        "Our system has detected that this message is likely unsolicited mail. To "
        "reduce the amount of spam sent to Gmail, this message has been blocked.",
        C.SPAM_CONTENT,
    ),
    (
        550,
        "5.7.25",
        "The IP address sending this message does not have a PTR record setup",
        C.BAD_CONFIGURATION,
    ),
    (
        450,
        "4.2.1",
        "The user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages from being delivered.",
        C.TRANSIENT_FAILURE,
    ),
    (452, "4.5.3", "Your message has too many recipients.", C.TOO_MANY_RECIPIENTS),
    (
        552,
        "5.7.0",
        "This message was blocked because its content presents a potential security "
        "issue. Please visit https://support.google.com/mail/?p=BlockedMessage to review our "
        "message content and attachment content guidelines.",
        C.PROHIBITED_ATTACHMENT,
    ),
    # Yahoo / AOL
    (
        421,
        "4.7.0",
        "[TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1",
        C.SPAM_BLOCK,
    ),
    (
        553,
        "5.7.2",
        "[TSS09] All messages from 203.0.113.5 will be permanently deferred; "
        "Retrying will NOT succeed.",
        C.SPAM_BLOCK,
    ),
    (
        554,
        "",
        "delivery error: dd This user doesn't have a yahoo.com account "
        "(x@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com",
        C.INVALID_RECIPIENT,
    ),
    (
        554,
        "",
        "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. "
        "This mailbox is disabled (554.30)",
        C.INACTIVE_MAILBOX,
    ),
    (
        550,
        "5.7.9",
        "This mail has been blocked because the sender is unauthenticated. Yahoo "
        "requires all senders to authenticate with either SPF or DKIM.",
        C.AUTHENTICATION_FAILED,
    ),
    (552, "", "1 Requested mail action aborted, mailbox not found", C.INVALID_RECIPIENT),
    # Microsoft
    (
        550,
        "5.7.1",
        "Unfortunately, messages from [203.0.113.5] weren't sent. Please contact "
        "your Internet service provider since part of their network is on our block list "
        "(S3150).",
        C.SPAM_BLOCK,
    ),
    (550, "5.7.606", "Access denied, banned sending IP [203.0.113.5].", C.SPAM_BLOCK),
    (
        550,
        "5.7.708",
        "Service unavailable. Access denied, traffic not accepted from this IP.",
        C.SPAM_BLOCK,
    ),
    (
        451,
        "4.7.650",
        "The mail server [203.0.113.5] has been temporarily rate limited due to IP reputation.",
        C.SPAM_BLOCK,
    ),
    (
        550,
        "5.7.515",
        "Access denied, sending domain example.com does not meet the required "
        "authentication level.",
        C.AUTHENTICATION_FAILED,
    ),
    (550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281)", C.INVALID_RECIPIENT),
    (550, "5.5.0", "Requested action not taken: mailbox unavailable", C.INVALID_RECIPIENT),
    # Anywhere
    (
        554,
        "5.7.1",
        "Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org",
        C.SPAM_BLOCK,
    ),
    (554, "5.7.1", "Relay access denied", C.RELAY_DENIED),
    (550, "", "User unknown in virtual mailbox table", C.INVALID_RECIPIENT),
    (552, "5.3.4", "Message size exceeds fixed maximum message size", C.CONTENT_RELATED),
    (554, "5.6.0", "Message contains a virus", C.VIRUS_RELATED),
    (550, "5.1.2", "Host unknown", C.BAD_DOMAIN),
    (556, "5.1.10", "Recipient address has null MX", C.BAD_DOMAIN),
    (421, "", "Too many concurrent connections from this IP", C.TRANSIENT_FAILURE),
    (450, "4.2.0", "Greylisted, see http://postgrey.schweikert.ch/", C.TRANSIENT_FAILURE),
    # Mailyard's own words
    (451, "4.4.1", "no mail host answered", C.NO_ANSWER_FROM_HOST),
    (451, "4.4.2", "mx.example[192.0.2.1] hung up before answering MAIL FROM", C.BAD_CONNECTION),
    (451, "4.4.3", "DNS lookup of example.com failed: SERVFAIL", C.DNS_FAILURE),
    (550, "5.4.4", "example.com has no MX host in a permitted network", C.ROUTING_ERRORS),
    (554, "5.4.6", "mail for example.com loops back to myself", C.ROUTING_ERRORS),
    (
        451,
        "4.7.5",
        "TLS is required, but mx.example failed verification: hostname mismatch",
        C.BAD_CONNECTION,
    ),
    (554, "5.4.7", "delivery time expired", C.MESSAGE_EXPIRED),
    (550, "5.6.7", "the server does not offer SMTPUTF8", C.CONTENT_RELATED),
    # Nothing to go by but the code
    (451, "", "something odd", C.TRANSIENT_FAILURE),
    (553, "", "something odd", C.UNCATEGORIZED),
]


@pytest.mark.parametrize(("code", "status", "text", "expected"), CORPUS)
def test_replies_from_the_field(code: int, status: str, text: str, expected: BounceClass) -> None:
    assert Classifier().classify(Reply(code, status, text)) is expected


def test_a_users_rule_wins_over_the_defaults(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("rules:\n  - {class: TransientFailure, code: 55x, text: 'blacklisted'}\n")
    reply = Reply(554, "5.7.1", "Your IP is blacklisted")
    assert Classifier().classify(reply) is C.SPAM_BLOCK
    assert Classifier([mine]).classify(reply) is C.TRANSIENT_FAILURE
    assert Classifier([mine]).classify(Reply(451, "4.7.1", "blacklisted")) is C.SPAM_BLOCK


@pytest.mark.parametrize(
    ("pattern", "code", "status", "matches"),
    [
        ("{class: SpamBlock, code: 4xx}", 451, "", True),
        ("{class: SpamBlock, code: 4xx}", 550, "", False),
        ("{class: SpamBlock, code: 55x}", 554, "", True),
        ("{class: SpamBlock, status: x.1.1}", 450, "4.1.1", True),
        ("{class: SpamBlock, status: x.1.1}", 550, "5.1.10", False),  # whole parts only
        ("{class: SpamBlock, status: 5.7.x}", 550, "5.7.606", True),
        ("{class: SpamBlock, status: 5.7.x}", 550, "", False),  # no status: no match
        ("{class: SpamBlock, code: '550', status: 5.1.1}", 550, "5.1.2", False),  # all must hold
    ],
)
def test_code_and_status_patterns(pattern: str, code: int, status: str, matches: bool) -> None:
    [rule] = load_rules(f"rules:\n  - {pattern}\n", "test")
    assert rule.matches(Reply(code, status, "text")) is matches


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: [{class: Nope, code: 550}]", "test: rule 1: class 'Nope' is not one of"),
        ("rules: [{class: SpamBlock}]", "test: rule 1: a rule needs code, status or text"),
        ("rules: [{class: SpamBlock, code: 5}]", "test: rule 1: code '5' is not like"),
        ("rules: [{class: SpamBlock, status: '5.7'}]", "test: rule 1: status '5.7' is not like"),
        ("rules: [{class: SpamBlock, text: '(unclosed'}]", "test: rule 1: text is not a regular"),
        ("rules: [{class: SpamBlock, code: 550, colour: red}]", "unknown keys ['colour']"),
        ("rules: [{class: SpamBlock, code: 550}, 7]", "test: rule 2: expected a mapping"),
        ("- a list", "test: expected a mapping with a 'rules' list"),
        ("rules: [", "test: not YAML"),
    ],
)
def test_a_rules_file_that_cannot_be_used_is_named_with_the_rule(text: str, problem: str) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(text, "test")
    assert problem in str(info.value)


def test_the_defaults_load_and_end_with_the_bare_codes() -> None:
    rules = default_rules()
    assert len(rules) > 50
    assert all(rule.conditions.code is not None for rule in rules[-4:])


def test_results_are_cached_per_reply() -> None:
    classifier = Classifier()
    reply = Reply(550, "5.1.1", "no such user")
    assert classifier.classify(reply) is classifier.classify(Reply(550, "5.1.1", "no such user"))
    assert classifier.classify.cache_info().hits == 1
