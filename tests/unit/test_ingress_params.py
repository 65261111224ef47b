"""MAIL and RCPT arguments: paths, limits, ESMTP parameters (RFC 5321, 1870, 6152, 6531, 3461)."""

from __future__ import annotations

import pytest

from mailyard.ingress.params import (
    Extensions,
    MailFrom,
    ParamError,
    RcptTo,
    parse_mail,
    parse_rcpt,
)
from mailyard.xtext import decode as decode_xtext

EXT = Extensions(size_limit=10_000)


def refused(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(ParamError) as info:
        call(*args, **kwargs)
    return info.value.reply.code, info.value.reply.status


def test_a_plain_mail_from():
    assert parse_mail("FROM:<a@example.com>", EXT) == MailFrom("a@example.com")


def test_the_null_sender():
    assert parse_mail("FROM:<>", EXT).address == ""


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("FROM:<a@example.com> SIZE=900", MailFrom("a@example.com", size=900, parameters=1)),
        (
            "from:<a@example.com> body=8bitmime",
            MailFrom("a@example.com", eight_bit=True, parameters=1),
        ),
        ("FROM:<a@example.com> BODY=7BIT", MailFrom("a@example.com", parameters=1)),
        ("FROM:<a@example.com> SMTPUTF8", MailFrom("a@example.com", smtputf8=True, parameters=1)),
        (
            "FROM:<a@example.com> RET=hdrs ENVID=QQ314159+2Babc",
            MailFrom("a@example.com", ret="HDRS", envid="QQ314159+2Babc", parameters=2),
        ),
    ],
)
def test_mail_parameters(argument, expected):
    assert parse_mail(argument, EXT) == expected


def test_envid_keeps_its_case_though_the_keyword_does_not_matter():
    assert parse_mail("FROM:<a@b.example> envid=MixedCase", EXT).envid == "MixedCase"


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        ("FROM:<a@example.com> SIZE=20000", (552, "5.3.4")),
        ("FROM:<a@example.com> SIZE=big", (501, "5.5.4")),
        ("FROM:<a@example.com> BODY=BINARYMIME", (501, "5.5.4")),
        ("FROM:<a@example.com> RET=ALL", (501, "5.5.4")),
        ("FROM:<a@example.com> ENVID=has=equals", (501, "5.5.4")),
        ("FROM:<a@example.com> ENVID=" + "x" * 101, (501, "5.5.4")),
        ("FROM:<a@example.com> SMTPUTF8=yes", (501, "5.5.4")),
        ("FROM:<a@example.com> FOO=1", (555, "5.5.4")),
        ("FROM:<a@example.com> SIZE=1 SIZE=2", (501, "5.5.4")),
        ("FROM:<a@example.com> SIZE=", (501, "5.5.4")),
        ("FROM:<a@example.com>SIZE=1", (501, "5.5.4")),
        ("TO:<a@example.com>", (501, "5.5.4")),
        ("FROM:<a@example.com", (501, "5.1.7")),
    ],
)
def test_bad_mail_parameters(argument, reply):
    assert refused(parse_mail, argument, EXT) == reply


def test_dsn_parameters_are_unknown_when_dsn_is_not_offered():
    assert refused(parse_mail, "FROM:<a@b.example> RET=FULL", Extensions(dsn=False)) == (
        555,
        "5.5.4",
    )


def test_a_bare_address_is_taken_as_postfix_does():
    assert parse_mail("FROM:a@example.com SIZE=5", EXT) == MailFrom(
        "a@example.com", size=5, parameters=1
    )


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        ("FROM:<" + "l" * 65 + "@example.com>", (501, "5.1.7")),  # local part over 64
        ("FROM:<a@" + "d" * 250 + ".com>", (501, "5.1.7")),  # path over 256 octets
        ("FROM:<a\x00b@example.com>", (501, "5.1.7")),
        ("FROM:<a\rb@example.com>", (501, "5.1.7")),
        ("FROM:<j\u00f6rg@example.com>", (553, "5.6.7")),  # non-ASCII without SMTPUTF8
        ("FROM:<j\udcf6rg@example.com> SMTPUTF8", (553, "5.6.7")),  # not UTF-8 at all
    ],
)
def test_addresses_beyond_the_limits_or_with_bad_characters(argument, reply):
    assert refused(parse_mail, argument, EXT) == reply


def test_the_limits_themselves_are_accepted():
    local = "l" * 64
    domain = ("d" * 60 + ".") * 3 + "ex.com"  # 189 octets: the path is 256 with its brackets
    assert parse_mail(f"FROM:<{local}@{domain}>", EXT).address == f"{local}@{domain}"
    assert refused(parse_mail, f"FROM:<{local}@x{domain}>", EXT) == (501, "5.1.7")


def test_utf8_addresses_with_smtputf8():
    assert (
        parse_mail("FROM:<j\u00f6rg@example.com> SMTPUTF8", EXT).address == "j\u00f6rg@example.com"
    )
    assert parse_rcpt("TO:<\u00fcser@example.net>", EXT, smtputf8=True).address == (
        "\u00fcser@example.net"
    )
    assert refused(parse_rcpt, "TO:<\u00fcser@example.net>", EXT, smtputf8=False) == (
        553,
        "5.6.7",
    )


def test_a_source_route_is_dropped():
    assert parse_rcpt("TO:<@hop.example,@two.example:user@example.net>", EXT, smtputf8=False) == (
        RcptTo("user@example.net")
    )


def test_a_quoted_local_part_may_hold_a_bracket():
    assert parse_rcpt('TO:<"a>b"@example.net>', EXT, smtputf8=False).address == '"a>b"@example.net'


@pytest.mark.parametrize(
    ("argument", "notify"),
    [
        ("TO:<a@b.example> NOTIFY=NEVER", "NEVER"),
        ("TO:<a@b.example> NOTIFY=delay,success", "SUCCESS,DELAY"),
        ("TO:<a@b.example> NOTIFY=FAILURE", "FAILURE"),
    ],
)
def test_notify(argument, notify):
    assert parse_rcpt(argument, EXT, smtputf8=False).notify == notify


@pytest.mark.parametrize(
    "value",
    ["NEVER,SUCCESS", "SOMETIMES", "SUCCESS,SUCCESS", ""],
)
def test_bad_notify_is_501_5_5_4(value):
    argument = f"TO:<a@b.example> NOTIFY={value}" if value else "TO:<a@b.example> NOTIFY"
    assert refused(parse_rcpt, argument, EXT, smtputf8=False) == (501, "5.5.4")


def test_orcpt_is_kept_exactly_as_given():
    rcpt = parse_rcpt(
        "TO:<a@b.example> ORCPT=rfc822;Original+2BTag@Example.NET", EXT, smtputf8=False
    )
    assert rcpt.orcpt == "rfc822;Original+2BTag@Example.NET"
    assert decode_xtext(rcpt.orcpt) == "rfc822;Original+Tag@Example.NET"


@pytest.mark.parametrize(
    "orcpt",
    ["rfc822", "rfc822;", ";a@b", "rfc822;a b", "rfc822;a+zz@b", "rfc 822;a@b"],
)
def test_bad_orcpt(orcpt):
    argument = f"TO:<a@b.example> ORCPT={orcpt}"
    assert refused(parse_rcpt, argument, EXT, smtputf8=False)[0] in (501, 555)


def test_an_empty_recipient_is_refused():
    assert refused(parse_rcpt, "TO:<>", EXT, smtputf8=False) == (501, "5.1.3")


def test_envid_and_orcpt_come_back_exactly_as_the_client_gave_them():
    """aiosmtpd upper-cases parameters; ours are read from the raw argument."""
    mail = parse_mail("FROM:<a@b.example> RET=FULL ENVID=MixedCase+2Bx", EXT)
    rcpt = parse_rcpt("TO:<a@b.example> ORCPT=rfc822;Mixed@Example.COM", EXT, smtputf8=False)
    assert (mail.ret, mail.envid) == ("FULL", "MixedCase+2Bx")
    assert rcpt.orcpt == "rfc822;Mixed@Example.COM"
