"""MTA-STS's pure part (RFC 8461): the TXT record, the policy file, MX matching."""

from __future__ import annotations

import pytest

from mailyard.delivery.mtasts import Mode, Policy, PolicyError, parse_policy, record_id


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (["v=STSv1; id=20260101T000000;"], "20260101T000000"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=1"], "1"),  # other TXT records are ignored
        (["v=STSv1; id=1", "v=STSv1; id=2"], None),  # §3.1: two records, no policy
        (["v=STSv1; id=bad-id!"], None),  # id is 1*32(ALPHA / DIGIT)
        (["v=STSv1; id=" + "a" * 33], None),
        (["v=STSv1"], None),
        (["v=STSv10; id=1"], None),
        ([], None),
    ],
)
def test_record_id(records, expected):
    assert record_id(records) == expected


POLICY = (
    "version: STSv1\r\nmode: enforce\r\n"
    "mx: mx1.example.com\r\nmx: *.mail.example.com\r\nmax_age: 604800\r\n"
)


def test_a_policy_is_parsed():
    policy = parse_policy(POLICY, "id1")
    assert policy == Policy("id1", Mode.ENFORCE, ("mx1.example.com", "*.mail.example.com"), 604800)


def test_lf_line_endings_unknown_keys_and_case_are_accepted():
    text = "version: STSv1\nmode: testing\nmx: MX.Example.COM.\nfuture_key: x\nmax_age: 86400\n"
    assert parse_policy(text, "2").mx == ("mx.example.com",)


def test_max_age_is_capped_at_one_year():
    assert parse_policy(POLICY.replace("604800", "99999999"), "1").max_age == 31_557_600


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("version: STSv1", "version: STSv2"), "version"),
        (("mode: enforce", "mode: strict"), "mode"),
        (("max_age: 604800", "max_age: soon"), "max_age"),
        (("max_age: 604800\r\n", ""), "max_age"),
        (("mx: mx1.example.com\r\nmx: *.mail.example.com\r\n", ""), "no mx"),
        (("mode: enforce", "mode enforce"), "key: value"),
    ],
)
def test_bad_policies_say_what_is_wrong(change, problem):
    with pytest.raises(PolicyError, match=problem):
        parse_policy(POLICY.replace(*change), "1")


def test_mode_none_needs_no_mx():
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 1\n", "1").mode is Mode.NONE


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("mx1.example.com", True),
        ("MX1.example.com.", True),
        ("a.mail.example.com", True),  # the wildcard covers one label
        ("a.b.mail.example.com", False),  # not two
        ("mail.example.com", False),  # nor none
        ("mx2.example.com", False),
        ("mx1.example.com.evil.net", False),
    ],
)
def test_mx_matching(host, matches):
    assert parse_policy(POLICY, "1").matches(host) is matches
