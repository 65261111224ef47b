"""xtext (RFC 3461 §4) and what NOTIFY asks for (§4.1): shared by queue, delivery and bounce."""

from __future__ import annotations

import pytest

from mailyard import xtext
from mailyard.notify import Condition, wants


@pytest.mark.parametrize(
    ("text", "valid"),
    [("abc", True), ("a+2Bb", True), ("a+2bb", False), ("a=b", False), ("a b", False), ("", True)],
)
def test_is_xtext(text, valid):
    assert xtext.is_xtext(text) is valid


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("MixedCase+2Bx", "MixedCase+x"),
        ("rfc822;Orig+2BTag@Alpha.Test", "rfc822;Orig+Tag@Alpha.Test"),
        ("a+3Db", "a=b"),
        ("plain", "plain"),
    ],
)
def test_decode(text, decoded):
    assert xtext.decode(text) == decoded


def test_a_dsn_field_shows_the_decoded_value_in_its_own_case():
    assert xtext.for_dsn_field("QQ+2B314159") == "QQ+314159"
    assert xtext.for_dsn_field("rfc822;Mixed@Example.COM") == "rfc822;Mixed@Example.COM"


@pytest.mark.parametrize("text", ["evil+0D+0ABcc:+20x@y", "caf+C3+A9", "tab+09"])
def test_a_value_a_field_cannot_carry_keeps_its_xtext_form(text):
    """Decoded CR LF would start a new field (RFC 3464 §2.1.1: no CR or LF in *text)."""
    assert xtext.for_dsn_field(text) == text


@pytest.mark.parametrize(
    ("notify", "success", "failure", "delay"),
    [
        ("", False, True, True),  # the default: failures and delays
        ("NEVER", False, False, False),
        ("SUCCESS", True, False, False),
        ("FAILURE", False, True, False),
        ("DELAY", False, False, True),
        ("SUCCESS,FAILURE", True, True, False),
        ("SUCCESS,FAILURE,DELAY", True, True, True),
        ("failure,delay", False, True, True),
    ],
)
def test_what_notify_asks_for(notify, success, failure, delay):
    assert wants(notify, Condition.SUCCESS) is success
    assert wants(notify, Condition.FAILURE) is failure
    assert wants(notify, Condition.DELAY) is delay
