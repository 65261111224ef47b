"""IngressPolicy: relay control, address syntax, recipient limits, content checks."""

from __future__ import annotations

import ipaddress

import pytest

from mailyard.ingress.policy import (
    BARE_NEWLINE,
    RECIPIENT_OK,
    SENDER_OK,
    TOO_MANY_HOPS,
    TOO_MANY_RECIPIENTS,
    IngressPolicy,
)
from mailyard.reply import Reply

LOCAL = "bounces.test"


@pytest.fixture
def policy() -> IngressPolicy:
    return IngressPolicy.build(
        [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")],
        [LOCAL],
        max_recipients=3,
        max_hops=5,
    )


def rcpt(policy: IngressPolicy, address: str, *, may_relay: bool, so_far: int = 0) -> Reply:
    return policy.recipient(address, may_relay=may_relay, accepted_so_far=so_far)


def assert_relay_denied(reply: Reply, address: str) -> None:
    assert (reply.code, reply.status) == (554, "5.7.1")
    assert reply.text == f"<{address}>: Relay access denied"


# --- relay control: a client outside relay_networks -------------------------


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "user@evil.com",
        "user@sub.bounces.test",  # a subdomain of a local domain is not local
        "user@bounces.test.evil.com",
        "user@bouncestest",
    ],
)
def test_outsider_may_not_send_to_remote_domains(policy, address):
    assert_relay_denied(rcpt(policy, address, may_relay=False), address)


@pytest.mark.parametrize(
    "address",
    [
        "user%evil.com@bounces.test",
        "user%evil.com@BOUNCES.TEST",
        "evil.com!user@bounces.test",
        '"user@evil.com"@bounces.test',
        "user\\@evil.com@bounces.test",
        "@relay.evil.com:user@bounces.test",  # a source route left in the local part
        "a%b!c@bounces.test",
        "%@bounces.test",
        "!@bounces.test",
    ],
)
def test_outsider_routing_tricks_in_local_part_are_relay_denied(policy, address):
    assert_relay_denied(rcpt(policy, address, may_relay=False), address)


@pytest.mark.parametrize(
    "address",
    ["user@[1.2.3.4]", "user@[127.0.0.1]", "user@[IPv6:::1]", "postmaster@[10.0.0.1]"],
)
def test_outsider_domain_literals_are_relay_denied(policy, address):
    assert_relay_denied(rcpt(policy, address, may_relay=False), address)


@pytest.mark.parametrize(
    "address",
    [
        "user@bounces.test",
        "USER@BOUNCES.TEST",
        "User@Bounces.Test",
        "first.last+tag@bounces.test",
        '"quoted local"@bounces.test',
    ],
)
def test_outsider_may_send_plain_local_parts_to_local_domains(policy, address):
    assert rcpt(policy, address, may_relay=False) == RECIPIENT_OK


@pytest.mark.parametrize("may_relay", [False, True])
def test_trailing_dot_domain_is_not_local_and_is_refused(policy, may_relay):
    reply = rcpt(policy, "user@bounces.test.", may_relay=may_relay)
    assert (reply.code, reply.status) == (501, "5.1.3")
    assert not reply.is_positive


def test_no_local_domains_means_outsider_may_send_nowhere():
    policy = IngressPolicy.build([], [], max_recipients=10, max_hops=5)
    assert_relay_denied(rcpt(policy, "user@bounces.test", may_relay=False), "user@bounces.test")


# --- relay clients -------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "user@bounces.test",
        "USER@EXAMPLE.COM",
        "user%evil.com@bounces.test",
        "evil.com!user@example.com",
        '"user@evil.com"@example.com',
    ],
)
def test_relay_client_may_send_anywhere(policy, address):
    assert rcpt(policy, address, may_relay=True) == RECIPIENT_OK


@pytest.mark.parametrize("address", ["user@[1.2.3.4]", "user@[IPv6:2001:db8::1]"])
def test_relay_client_gets_550_for_domain_literals(policy, address):
    reply = rcpt(policy, address, may_relay=True)
    assert (reply.code, reply.status) == (550, "5.1.2")
    assert reply.text == f"<{address}>: address literals are not accepted"


# --- may_relay -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::25", True),
        ("2001:db9::25", False),
        ("::1", False),
        ("", False),
        ("localhost", False),
        ("not an address", False),
        ("127.0.0.1:25", False),
        ("999.0.0.1", False),
    ],
)
def test_may_relay(policy, client, expected):
    assert policy.may_relay(client) is expected


def test_may_relay_with_no_networks_is_always_false():
    policy = IngressPolicy.build([], [LOCAL], max_recipients=1, max_hops=1)
    assert policy.may_relay("127.0.0.1") is False


# --- sender --------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["<>", "sender@example.com", "Sender@Example.COM", '"a b"@example.com']
)
def test_sender_accepted(policy, address):
    assert policy.sender(address) == SENDER_OK


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "@example.com",
        "user@",
        "user@exa mple.com",
        "user@-bad.example",
        "user@bad..example",
        "user@under_score.example",
        "x" * 65 + "@example.com",
        "user@[1.2.3.4]",
    ],
)
def test_bad_sender_syntax_is_501_5_1_7(policy, address):
    reply = policy.sender(address)
    assert (reply.code, reply.status) == (501, "5.1.7")
    assert reply.text.startswith("Bad sender address syntax")


def test_the_null_sender_is_accepted_in_either_spelling(policy):
    assert policy.sender("").is_positive  # as the MAIL parser gives it
    assert policy.sender("<>").is_positive


def test_an_authenticated_user_sends_only_from_its_domains(policy):
    allowed = {"example.com"}.__contains__
    assert policy.sender("me@example.com", allowed=allowed).is_positive
    reply = policy.sender("me@Other.Example", allowed=allowed)
    assert (reply.code, reply.status) == (553, "5.7.1")
    assert "other.example" in reply.text
    assert policy.sender("", allowed=allowed).is_positive  # bounces are nobody's domain


def test_authenticated_users_may_relay_from_anywhere(policy):
    assert not policy.may_relay("203.0.113.5")
    assert policy.may_relay("203.0.113.5", authenticated=True)


def test_postmaster_and_abuse_go_to_the_postmaster_when_it_is_set():
    policy = IngressPolicy.build(
        [], ["local.example"], max_recipients=10, max_hops=10, postmaster="admin@example.com"
    )
    assert policy.deliver_to("postmaster@local.example") == "admin@example.com"
    assert policy.deliver_to("ABUSE@Local.Example") == "admin@example.com"
    assert policy.deliver_to("abuse@elsewhere.example") == "abuse@elsewhere.example"
    assert policy.deliver_to("someone@local.example") == "someone@local.example"
    unset = IngressPolicy.build([], ["local.example"], max_recipients=10, max_hops=10)
    assert unset.deliver_to("postmaster@local.example") == "postmaster@local.example"


# --- recipient syntax and limits -----------------------------------------------


@pytest.mark.parametrize("may_relay", [False, True])
@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "@bounces.test",
        "user@",
        "user@bad..test",
        "user@-bounces.test",
        "user@bounces test",
        "x" * 65 + "@bounces.test",
        "user@" + "a" * 64 + ".test",
    ],
)
def test_bad_recipient_syntax_is_501_5_1_3(policy, address, may_relay):
    reply = rcpt(policy, address, may_relay=may_relay)
    assert (reply.code, reply.status) == (501, "5.1.3")
    assert reply.text.startswith("Bad recipient address syntax")


@pytest.mark.parametrize("may_relay", [False, True])
def test_recipient_limit(policy, may_relay):
    assert rcpt(policy, "a@bounces.test", may_relay=may_relay, so_far=2) == RECIPIENT_OK
    assert rcpt(policy, "a@bounces.test", may_relay=may_relay, so_far=3) == TOO_MANY_RECIPIENTS
    assert rcpt(policy, "a@bounces.test", may_relay=may_relay, so_far=4) == TOO_MANY_RECIPIENTS
    assert (TOO_MANY_RECIPIENTS.code, TOO_MANY_RECIPIENTS.status) == (452, "4.5.3")


def test_recipient_limit_is_checked_before_syntax(policy):
    # Past the limit the client must stop sending RCPTs, whatever they hold.
    assert rcpt(policy, "garbage", may_relay=False, so_far=3) == TOO_MANY_RECIPIENTS


# --- content at end of DATA ----------------------------------------------------


def message(headers: list[bytes], body: bytes = b"Hello\r\n") -> bytes:
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def received(n: int) -> list[bytes]:
    return [f"Received: from hop{i}.example by hop{i + 1}.example; date".encode() for i in range(n)]


@pytest.mark.parametrize("may_relay", [False, True])
def test_content_with_max_hops_received_headers_is_accepted(policy, may_relay):
    content = message([*received(5), b"Subject: hi"])
    assert policy.content(content, may_relay=may_relay) is None


@pytest.mark.parametrize("may_relay", [False, True])
def test_content_over_max_hops_is_554_5_4_6(policy, may_relay):
    content = message([*received(6), b"Subject: hi"])
    reply = policy.content(content, may_relay=may_relay)
    assert reply == TOO_MANY_HOPS
    assert (reply.code, reply.status) == (554, "5.4.6")


def test_received_header_name_is_case_insensitive(policy):
    headers = [b"received: a", b"RECEIVED: b", b"ReCeIvEd: c", *received(3)]
    assert policy.content(message(headers), may_relay=False) == TOO_MANY_HOPS


def test_received_lines_in_the_body_do_not_count(policy):
    body = b"".join(h + b"\r\n" for h in received(20))
    content = message([*received(5), b"Subject: forwarded trace"], body=body)
    assert policy.content(content, may_relay=False) is None


def test_other_headers_mentioning_received_do_not_count(policy):
    headers = [*received(5), *(b"X-Received: x" for _ in range(10)), b"Subject: Received: yes"]
    assert policy.content(message(headers), may_relay=False) is None


def test_headers_only_message_counts_all_received_headers(policy):
    content = b"".join(h + b"\r\n" for h in received(6))  # no blank line, no body
    assert policy.content(content, may_relay=False) == TOO_MANY_HOPS


def test_received_lines_in_body_do_not_count_when_header_section_is_empty(policy):
    content = b"\r\n" + b"".join(h + b"\r\n" for h in received(6))
    assert policy.content(content, may_relay=False) is None


@pytest.mark.parametrize(
    "content",
    [
        b"Subject: a\nFrom: b\r\n\r\nbody\r\n",  # bare LF in the headers
        b"Subject: a\r\n\r\nline one\nline two\r\n",  # bare LF in the body
        b"Subject: a\r\n\r\nline one\rline two\r\n",  # bare CR
        b"Subject: a\r\n\r\nsmuggled\n.\r\nMAIL FROM:<x@y>\r\n",  # SMTP smuggling shape
        b"Subject: a\r\n\r\nends with CR\r",
        b"Subject: a\r\n\r\ndouble CR\r\r\n",
        b"\n",
    ],
)
def test_bare_cr_or_lf_is_rejected_for_non_relay_clients(policy, content):
    reply = policy.content(content, may_relay=False)
    assert reply == BARE_NEWLINE
    assert (reply.code, reply.status) == (550, "5.6.0")


@pytest.mark.parametrize(
    "content",
    [
        b"Subject: a\nFrom: b\r\n\r\nbody\r\n",
        b"Subject: a\r\n\r\nline one\rline two\r\n",
    ],
)
def test_bare_cr_or_lf_is_allowed_for_relay_clients(policy, content):
    assert policy.content(content, may_relay=True) is None


@pytest.mark.parametrize(
    "content",
    [
        b"Subject: a\r\nFrom: b@example.com\r\n\r\nline one\r\nline two\r\n",
        b"Subject: a\r\n\r\n",
        b"Subject: a\r\n",
        b"",
    ],
)
def test_crlf_only_content_is_accepted(policy, content):
    assert policy.content(content, may_relay=False) is None


def test_bare_postmaster_is_the_postmaster_of_a_local_domain(policy):
    # RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted.
    assert policy.mailbox("Postmaster") == f"postmaster@{min(policy.local_domains)}"
    assert (
        policy.recipient(policy.mailbox("POSTMASTER"), may_relay=False, accepted_so_far=0).code
        == 250
    )
    assert policy.mailbox("postmaster@alpha.test") == "postmaster@alpha.test"


def test_bare_postmaster_without_local_domains_is_refused():
    bare = IngressPolicy.build([], [], max_recipients=10, max_hops=5)
    assert bare.mailbox("postmaster") == "postmaster"
    assert bare.recipient("postmaster", may_relay=True, accepted_so_far=0).code == 501
