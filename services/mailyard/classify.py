"""Bounce classification: a reply becomes one of a fixed set of classes — no I/O.

The class names are KumoMTA's (``PreDefinedBounceClass``), so that senders
who know one MTA's reports can read the other's. A class says what the
sender should do about a failure: stop mailing the address
(InvalidRecipient, BadDomain, InactiveMailbox), fix their setup
(AuthenticationFailed, BadConfiguration), look at their reputation
(SpamBlock, SpamContent) or wait (TransientFailure, ...).

Rules are ordered and the first that matches wins. A rule names a class and
one or more conditions, all of which must hold:

- ``code``: the reply code, with ``x`` for any digit (``550``, ``55x``, ``4xx``);
- ``status``: the enhanced status code (RFC 3463), ``x`` for any one part
  (``5.1.1``, ``x.1.1``, ``5.7.x``);
- ``text``: a regular expression searched in the reply text, case-insensitive.

The defaults (``rules/bounces.yaml`` in this package) know the replies of
the large mailbox providers first, then words that mean the same everywhere,
then RFC 3463's status codes, then the reply code alone. Users' files
(``bounce.classification.rules_files``) come before the defaults, so one of
their rules wins over ours. A file is read when the classifier is made; a
file that cannot be used stops start-up with its name and the rule at fault.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from mailyard.filewatch import FileProblem
from mailyard.reply import Reply
from mailyard.replyrules import (
    CONDITIONS,
    Conditions,
    read_rules_files,
    reply_conditions,
    rule_entries,
)


class BounceClass(StrEnum):
    INVALID_RECIPIENT = "InvalidRecipient"
    BAD_DOMAIN = "BadDomain"
    DNS_FAILURE = "DNSFailure"
    INACTIVE_MAILBOX = "InactiveMailbox"
    QUOTA_ISSUES = "QuotaIssues"
    MESSAGE_EXPIRED = "MessageExpired"
    SPAM_BLOCK = "SpamBlock"
    SPAM_CONTENT = "SpamContent"
    SPAM_RELATED = "SpamRelated"
    POLICY_RELATED = "PolicyRelated"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    RELAY_DENIED = "RelayDenied"
    RELAYING_ISSUES = "RelayingIssues"
    TOO_MANY_RECIPIENTS = "TooManyRecipients"
    TRANSIENT_FAILURE = "TransientFailure"
    NO_ANSWER_FROM_HOST = "NoAnswerFromHost"
    BAD_CONNECTION = "BadConnection"
    BAD_CONFIGURATION = "BadConfiguration"
    PROTOCOL_ERRORS = "ProtocolErrors"
    ROUTING_ERRORS = "RoutingErrors"
    CONTENT_RELATED = "ContentRelated"
    PROHIBITED_ATTACHMENT = "ProhibitedAttachment"
    VIRUS_RELATED = "VirusRelated"
    INVALID_SENDER = "InvalidSender"
    AUTO_REPLY = "AutoReply"
    CHALLENGE_RESPONSE = "ChallengeResponse"
    SUBSCRIBE = "Subscribe"
    UNSUBSCRIBE = "Unsubscribe"
    UNCATEGORIZED = "Uncategorized"


# A hard bounce of these means the address is gone: the suppression list's business.
ADDRESS_GONE = frozenset(
    {BounceClass.INVALID_RECIPIENT, BounceClass.BAD_DOMAIN, BounceClass.INACTIVE_MAILBOX}
)


class RulesError(FileProblem):
    """A rules file cannot be used; the message names the file and the rule.

    A :class:`~mailyard.filewatch.FileProblem`, so it stops start-up like any
    other file named in the configuration."""


@dataclass(frozen=True, slots=True)
class Rule:
    bounce_class: BounceClass
    conditions: Conditions

    def matches(self, reply: Reply) -> bool:
        return self.conditions.match(reply)


class Classifier:
    """The rules of ``files`` (in order), then the defaults; the first match wins."""

    def __init__(self, files: Sequence[Path] = (), *, key: str = "rules_files") -> None:
        mine = [
            rule
            for text, source in read_rules_files(files, key, RulesError)
            for rule in load_rules(text, source)
        ]
        self.rules: tuple[Rule, ...] = (*mine, *default_rules())
        # Bulk mail meets the same few replies over and over.
        self.classify = functools.lru_cache(maxsize=4096)(self._classify)

    def _classify(self, reply: Reply) -> BounceClass:
        for rule in self.rules:
            if rule.matches(reply):
                return rule.bounce_class
        return BounceClass.UNCATEGORIZED


@functools.cache
def default_classifier() -> Classifier:
    return Classifier()


@functools.cache
def default_rules() -> tuple[Rule, ...]:
    text = resources.files("mailyard").joinpath("rules/bounces.yaml").read_text()
    return tuple(load_rules(text, "the default bounce rules"))


def load_rules(text: str, source: str) -> list[Rule]:
    """The rules of one file: ``rules:``, a list of ``{class, code?, status?, text?}``."""
    return [_rule(entry, where) for entry, where in rule_entries(text, source, RulesError)]


def _rule(entry: dict[str, Any], where: str) -> Rule:
    unknown = set(entry) - {"class", *CONDITIONS}
    if unknown:
        raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        bounce_class = BounceClass(str(entry.get("class")))
    except ValueError:
        raise RulesError(
            f"{where}: class {entry.get('class')!r} is not one of {', '.join(BounceClass)}"
        ) from None
    return Rule(bounce_class, Conditions(*reply_conditions(entry, where, RulesError)))
