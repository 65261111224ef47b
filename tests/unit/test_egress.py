"""Egress addresses: delivery.source_addresses checked at start-up, and which one a
connection gets (egress.py) — no sockets."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from mailyard.config import ConfigError, load_settings
from mailyard.delivery.egress import Egress, Mail, NoSource, Source, sender_domain, sources_from
from mailyard.v1 import message_pb2 as pb


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("MAILYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILYARD_HOSTNAME", "env.example")


def settings_with(tmp_path, entries: str):
    path = tmp_path / "mailyard.yaml"
    path.write_text(f"delivery:\n  source_addresses:\n{entries}", encoding="utf-8")
    return load_settings(path)


def refusal(tmp_path, entries: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings_with(tmp_path, entries)
    return str(info.value)


# --- configuration ---------------------------------------------------------------


def test_no_source_addresses_by_default():
    assert load_settings(None).delivery.source_addresses == []


def test_entries_are_read_and_normalised(tmp_path):
    settings = settings_with(
        tmp_path,
        "    - {address: 192.0.2.10, ehlo: Out1.Example.COM.}\n"
        "    - {address: '2001:DB8::0:10', ehlo: out6.example.com}\n"
        "    - address: 192.0.2.11\n"
        "      ehlo: bulk.example.com\n"
        "      classes: [bulk]\n"
        "      sender_domains: [News.Example.COM]\n",
    )
    sources = sources_from(settings.delivery.source_addresses)
    assert sources == [
        Source("192.0.2.10", "out1.example.com"),
        Source("2001:db8::10", "out6.example.com"),
        Source(
            "192.0.2.11", "bulk.example.com", frozenset({"bulk"}), frozenset({"news.example.com"})
        ),
    ]


@pytest.mark.parametrize(
    ("entries", "key", "detail"),
    [
        ("    - {address: mx.example.com, ehlo: a.example.com}\n", "0.address", "IPv4 or IPv6"),
        ("    - {address: 192.0.2.300, ehlo: a.example.com}\n", "0.address", "IPv4 or IPv6"),
        ("    - {address: 0.0.0.0, ehlo: a.example.com}\n", "0.address", "unspecified"),
        ("    - {address: '::', ehlo: a.example.com}\n", "0.address", "unspecified"),
        ("    - {address: 224.0.0.1, ehlo: a.example.com}\n", "0.address", "multicast"),
        ("    - {address: 'fe80::1', ehlo: a.example.com}\n", "0.address", "link-local"),
        ("    - {address: '::ffff:192.0.2.1', ehlo: a.example.com}\n", "0.address", "192.0.2.1"),
        ("    - {address: 192.0.2.1, ehlo: localhost}\n", "0.ehlo", "fully-qualified"),
        ("    - {address: 192.0.2.1, ehlo: 192.0.2.1}\n", "0.ehlo", "fully-qualified"),
        ("    - {address: 192.0.2.1, ehlo: '[192.0.2.1]'}\n", "0.ehlo", "not a valid domain"),
        ("    - {address: 192.0.2.1, ehlo: out_1.example.com}\n", "0.ehlo", "not a valid domain"),
        ("    - {address: 192.0.2.1}\n", "0.ehlo", "Field required"),
        ("    - {address: 192.0.2.1, ehlo: a.example.com, pool: x}\n", "0.pool", "unknown key"),
        (
            "    - {address: 192.0.2.1, ehlo: a.example.com}\n"
            "    - {address: 192.0.2.2, ehlo: b.example.com, classes: [Bulk]}\n",
            "1.classes.0",
            "pattern",
        ),
        (
            "    - {address: 192.0.2.1, ehlo: a.example.com}\n"
            "    - {address: 192.0.2.2, ehlo: b.example.com, sender_domains: [a..b]}\n",
            "1.sender_domains.0",
            "not a valid domain",
        ),
    ],
)
def test_a_bad_entry_stops_start_up_naming_its_key(tmp_path, entries, key, detail):
    message = refusal(tmp_path, entries)
    assert f"\n  delivery.source_addresses.{key}: " in message
    assert detail in message


def test_an_address_given_twice_is_refused(tmp_path):
    message = refusal(
        tmp_path,
        "    - {address: 192.0.2.1, ehlo: a.example.com}\n"
        "    - {address: 192.0.2.2, ehlo: b.example.com}\n"
        "    - {address: '192.0.2.1', ehlo: c.example.com, classes: [bulk]}\n",
    )
    assert "\n  delivery.source_addresses: 192.0.2.1 is listed twice (entries 0 and 2)" in message


def test_the_same_address_written_two_ways_is_still_twice(tmp_path):
    message = refusal(
        tmp_path,
        "    - {address: '2001:db8::1', ehlo: a.example.com}\n"
        "    - {address: '2001:DB8:0::1', ehlo: b.example.com}\n",
    )
    assert "2001:db8::1 is listed twice" in message


def test_some_entry_must_serve_the_mail_no_other_names(tmp_path):
    message = refusal(
        tmp_path,
        "    - {address: 192.0.2.1, ehlo: a.example.com, classes: [bulk]}\n"
        "    - {address: 192.0.2.2, ehlo: b.example.com, sender_domains: [example.com]}\n",
    )
    assert "\n  delivery.source_addresses: needs at least one entry without classes" in message


def test_empty_lists_name_nothing(tmp_path):
    settings = settings_with(
        tmp_path,
        "    - {address: 192.0.2.1, ehlo: a.example.com, classes: [], sender_domains: []}\n",
    )
    [source] = sources_from(settings.delivery.source_addresses)
    assert source.names_nothing


def test_the_list_comes_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv(
        "MAILYARD_DELIVERY__SOURCE_ADDRESSES",
        '[{"address": "192.0.2.1", "ehlo": "a.example.com"}]',
    )
    [entry] = load_settings(None).delivery.source_addresses
    assert str(entry.address) == "192.0.2.1"


# --- the mail an entry serves ----------------------------------------------------


def job(mail_from: str = "app@shop.example", mail_class: str = "") -> pb.DeliveryJob:
    return pb.DeliveryJob(mail_from=mail_from, mail_class=mail_class, domain="dest.example")


@pytest.mark.parametrize(
    ("mail_from", "domain"),
    [
        ("app@Shop.Example", "shop.example"),
        ("app@shop.example.", "shop.example"),
        ('"odd@local"@shop.example', "shop.example"),
        ("", ""),
        ("postmaster", ""),
    ],
)
def test_the_sender_domain_is_the_envelope_senders(mail_from, domain):
    assert sender_domain(mail_from) == domain


def test_mail_without_a_class_is_transactional_and_the_null_sender_has_no_domain():
    assert Mail.of(job()) == Mail("transactional", "shop.example")
    assert Mail.of(job("", "bulk")) == Mail("bulk", "")


def test_the_return_path_is_not_the_sender():
    verp = job()
    verp.return_path = "bounce+abc@bounces.example"
    assert Mail.of(verp).sender_domain == "shop.example"


OUT1 = Source("192.0.2.1", "out1.example")
OUT2 = Source("192.0.2.2", "out2.example")
OUT6 = Source("2001:db8::1", "out6.example")
BULK = Source("192.0.2.10", "bulk.example", classes=frozenset({"bulk"}))
NEWS = Source("192.0.2.20", "news.example", sender_domains=frozenset({"news.example"}))
NEWS_BULK = Source(
    "192.0.2.30", "newsbulk.example", frozenset({"bulk"}), frozenset({"news.example"})
)
SOURCES = (OUT1, OUT2, OUT6, BULK, NEWS, NEWS_BULK)


@pytest.mark.parametrize(
    ("mail", "pool"),
    [
        (Mail("transactional", "shop.example"), (OUT1, OUT2, OUT6)),
        (Mail("bulk", "shop.example"), (BULK,)),
        (Mail("transactional", "news.example"), (NEWS,)),
        # Every entry that names it: the class-only one, the domain-only one, both.
        (Mail("bulk", "news.example"), (BULK, NEWS, NEWS_BULK)),
        (Mail("bulk", ""), (BULK,)),  # a DSN of bulk mail, if it is ever classed so
        (Mail("transactional", ""), (OUT1, OUT2, OUT6)),  # DSNs: no domain to match
        (Mail("marketing", "shop.example"), (OUT1, OUT2, OUT6)),  # a class nobody names
    ],
)
def test_mail_goes_to_the_entries_that_name_it_else_to_those_that_name_nothing(mail, pool):
    assert Egress(SOURCES).pool(mail) == pool


def test_an_entry_naming_both_takes_only_mail_matching_both():
    egress = Egress((OUT1, NEWS_BULK))
    assert egress.pool(Mail("bulk", "news.example")) == (NEWS_BULK,)
    assert egress.pool(Mail("bulk", "shop.example")) == (OUT1,)
    assert egress.pool(Mail("transactional", "news.example")) == (OUT1,)


# --- which address a new connection gets -----------------------------------------


def test_without_sources_the_system_chooses():
    egress = Egress()
    assert not egress.configured
    assert egress.order(Mail("bulk", "shop.example"), "2001:db8::25") == (None,)
    assert egress.may_carry(Mail("bulk", "shop.example"))("")


def test_a_pool_is_used_in_turn_per_new_connection():
    egress = Egress(SOURCES)
    mail = Mail("transactional", "shop.example")
    picked = [egress.order(mail, "198.51.100.25")[0] for _ in range(6)]
    assert picked == [OUT1, OUT2] * 3


def test_the_rest_of_the_pool_follows_in_case_the_first_cannot_be_bound():
    a, b, c = (Source(f"192.0.2.{n}", f"out{n}.example") for n in (1, 2, 3))
    egress = Egress((a, b, c, BULK))
    mail = Mail("transactional", "shop.example")
    orders = [egress.order(mail, "198.51.100.25") for _ in range(4)]
    assert orders == [(a, b, c), (b, c, a), (c, a, b), (a, b, c)]


def test_the_turn_is_the_pools_not_the_mails():
    """Two mails with the same pool share its turn: the addresses stay evenly used."""
    egress = Egress(SOURCES)
    first = egress.order(Mail("transactional", "shop.example"), "198.51.100.25")
    second = egress.order(Mail("marketing", "other.example"), "198.51.100.26")
    assert (first, second) == ((OUT1, OUT2), (OUT2, OUT1))
    assert egress.order(Mail("bulk", "shop.example"), "198.51.100.25") == (BULK,)


def test_the_destinations_family_picks_from_the_pool():
    egress = Egress(SOURCES)
    mail = Mail("transactional", "shop.example")
    assert [egress.order(mail, "2001:db8:25::1") for _ in range(2)] == [(OUT6,), (OUT6,)]
    counts = Counter(egress.order(mail, "198.51.100.25")[0] for _ in range(4))
    assert counts == {OUT1: 2, OUT2: 2}


def test_an_address_no_source_of_the_pool_can_reach_is_refused_with_the_reason():
    egress = Egress(SOURCES)
    with pytest.raises(NoSource) as info:
        egress.order(Mail("bulk", "shop.example"), "2001:db8:25::1")
    reply = info.value.reply
    assert (reply.code, reply.status) == (451, "4.4.4")
    assert reply.text == (
        "no address in delivery.source_addresses serves bulk mail from shop.example over "
        "IPv6, which 2001:db8:25::1 needs"
    )


def test_mail_dedicated_to_an_address_never_falls_back_to_another_pool():
    """The catch-all has IPv6; bulk's pool does not: an IPv6-only MX gets no bulk mail."""
    egress = Egress((OUT6, BULK))
    with pytest.raises(NoSource, match="from the null sender"):
        egress.order(Mail("bulk", ""), "2001:db8:25::1")


# --- which pooled sessions may carry which mail ----------------------------------


@pytest.mark.parametrize(
    ("mail", "carried_by"),
    [
        (Mail("transactional", "shop.example"), {OUT1, OUT2, OUT6}),
        (Mail("bulk", "shop.example"), {BULK}),
        (Mail("bulk", "news.example"), {BULK, NEWS, NEWS_BULK}),
        (Mail("transactional", "news.example"), {NEWS}),
    ],
)
def test_a_session_carries_only_mail_its_address_serves(mail, carried_by):
    carries = Egress(SOURCES).may_carry(mail)
    assert {source for source in SOURCES if carries(source.address)} == carried_by
    # An unbound session (there is none while sources are configured) carries nothing.
    assert not carries("")


def test_a_source_address_for_a_class_queue_classes_lacks_stops_start_up(tmp_path):
    from mailyard.config import ConfigError, load_settings

    config = tmp_path / "mailyard.yaml"
    config.write_text(
        "delivery:\n  source_addresses:\n"
        "    - {address: 192.0.2.1, ehlo: out1.example.com}\n"
        "    - {address: 192.0.2.2, ehlo: out2.example.com, classes: [newsletter]}\n"
    )
    with pytest.raises(ConfigError, match=r"delivery\.source_addresses\.1\.classes: unknown class"):
        load_settings(config)
