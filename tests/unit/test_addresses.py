"""parse_address / domain_of / is_clean_mailbox."""

from __future__ import annotations

import pytest

from mailyard.addresses import Address, AddressError, domain_of, is_clean_mailbox, parse_address


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("Jane.Doe@Example.COM", "Jane.Doe", "example.com"),
        ("user@localhost", "user", "localhost"),
        ("user+tag@sub.example.org", "user+tag", "sub.example.org"),
        ('"a@b"@example.com', '"a@b"', "example.com"),
        ('"user@evil.com"@Bounces.Test', '"user@evil.com"', "bounces.test"),
        ('"a b"@example.com', '"a b"', "example.com"),
        ("user%evil.com@example.com", "user%evil.com", "example.com"),
        ("USER@[1.2.3.4]", "USER", "[1.2.3.4]"),
        ("user@[IPv6:2001:DB8::1]", "user", "[ipv6:2001:db8::1]"),
        ("x" * 64 + "@example.com", "x" * 64, "example.com"),
    ],
)
def test_parse_address(text, local, domain):
    assert parse_address(text) == Address(local, domain)


def test_str_and_domain_literal_flag():
    assert str(parse_address("Jane@Example.COM")) == "Jane@example.com"
    assert parse_address("a@[10.0.0.1]").is_domain_literal is True
    assert parse_address("a@example.com").is_domain_literal is False


@pytest.mark.parametrize("text", ["", "plain", "@example.com", "user@", "@"])
def test_not_local_at_domain(text):
    with pytest.raises(AddressError, match="is not of the form local-part@domain"):
        parse_address(text)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 65 + "@example.com",
        '"' + "a@" * 32 + '"@example.com',  # quoted local part of 66 characters
        "user@" + ".".join(["a" * 60] * 5),  # 5 + 304 characters
    ],
)
def test_too_long(text):
    with pytest.raises(AddressError, match="too long"):
        parse_address(text)


@pytest.mark.parametrize(
    "domain",
    [
        "example..com",
        ".example.com",
        "example.com.",
        "-example.com",
        "example-.com",
        "exa mple.com",
        "exa_mple.com",
        "b\u00fccher.example",
        "a" * 64 + ".example",
        "example.com:25",
        "[1.2.3.4",
        "1.2.3.4]",
    ],
)
def test_invalid_domain(domain):
    with pytest.raises(AddressError, match="is not a valid domain name"):
        parse_address(f"user@{domain}")


def test_address_error_is_a_value_error():
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("user@Example.COM", "example.com"),
        ('"a@b"@Example.com', "example.com"),
        ("a@[1.2.3.4]", "[1.2.3.4]"),
        ("nodomain", "nodomain"),
    ],
)
def test_domain_of(address, domain):
    assert domain_of(address) == domain


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("user@example.com", True),
        ('"a b"@example.com', True),
        ("", False),
        ("user@example.com\r\nRCPT TO:<x@y>", False),
        ("user\n@example.com", False),
        ("user\x00@example.com", False),
        ("user\x7f@example.com", False),
        ("<user@example.com>", False),
        ("user@example.com>", False),
        ("\tuser@example.com", False),
    ],
)
def test_is_clean_mailbox(text, clean):
    assert is_clean_mailbox(text) is clean
