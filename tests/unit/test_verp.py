"""VERP return paths: round trips, the 64-octet limit, forgeries, rotation."""

from __future__ import annotations

import pytest

from mailyard import ids, verp
from mailyard.filewatch import FileProblem
from mailyard.verp import Forged, Keyring, SecretError, Verp, parse, parse_keyring, return_path

KEYS = Keyring((b"k" * 32,))
DOMAIN = "bounces.example.com"
MESSAGE_ID = "01JAXW3M6B7Q8R9S0T1V2W3X4Y"


def local_of(address: str) -> str:
    local, _, domain = address.rpartition("@")
    assert domain == DOMAIN
    return local


def sign(recipient: str, keys: Keyring = KEYS, message_id: str = MESSAGE_ID) -> str:
    return return_path(keys, domain=DOMAIN, message_id=message_id, recipient=recipient)


@pytest.mark.parametrize(
    "recipient",
    ["jane@example.org", "jane.doe+news@mail.example.co.uk", "a_b-c=d@x-y.example", "x@a.io"],
)
def test_a_plain_recipient_is_in_the_address_and_comes_back(recipient):
    address = sign(recipient)
    local = local_of(address)
    assert local.startswith("b-")
    assert local.endswith(recipient.replace("@", "="))  # readable in logs
    assert len(local) <= verp.LOCAL_PART_LIMIT
    assert parse(KEYS, local) == Verp(recipient, None, None, 0)


def test_a_remote_mta_that_changes_the_case_changes_nothing():
    local = local_of(sign("jane@example.org"))
    assert parse(KEYS, local.upper()) == Verp("jane@example.org", None, None, 0)


@pytest.mark.parametrize(
    "recipient",
    [
        # Too long for 64 octets with the tag and the HMAC (50 + 12 > 64)...
        "a.very.long.local.part.that.goes.on@and-a-domain-name-too.example.com",
        # ...upper case (which a remote MTA might fold), a quoted local part.
        "Jane.Doe@example.org",
        '"john smith"@example.org',
    ],
)
def test_other_recipients_get_the_message_id_and_a_hash(recipient):
    local = local_of(sign(recipient))
    assert local.startswith("bh-")
    assert len(local) <= verp.LOCAL_PART_LIMIT
    parsed = parse(KEYS, local)
    assert isinstance(parsed, Verp)
    assert parsed.recipient is None
    assert parsed.message_id == MESSAGE_ID
    # The bounce names the recipient; the hash says which name is ours.
    assert parsed.names(recipient)
    assert parsed.names(recipient.upper())
    assert not parsed.names("someone.else@example.org")


def test_the_longest_readable_recipient_fits_exactly():
    # b- (2) + mac (8) + - (1) + local=domain: 53 octets of recipient at most.
    recipient = "x" * (53 - len("=ex.io")) + "@ex.io"
    local = local_of(sign(recipient))
    assert local.startswith("b-")
    assert len(local) == 64
    one_more = "x" + recipient
    assert local_of(sign(one_more)).startswith("bh-")


def test_real_message_ids_fit():
    for _ in range(20):
        local = local_of(sign("Upper@example.org", message_id=ids.new_message_id()))
        assert len(local) == 47
        assert isinstance(parse(KEYS, local), Verp)


def test_a_changed_recipient_is_refused():
    local = local_of(sign("jane@example.org"))
    assert parse(KEYS, local.replace("jane", "june")) == Forged("mac")


def test_a_changed_hash_or_message_id_is_refused():
    local = local_of(sign("Jane@example.org"))
    tag, mac, short_id, digest = local.split("-")
    other = "a" if digest[0] != "a" else "b"
    assert parse(KEYS, f"{tag}-{mac}-{short_id}-{other}{digest[1:]}") == Forged("mac")
    other_id = ids.new_message_id().lower()
    assert parse(KEYS, f"{tag}-{mac}-{other_id}-{digest}") == Forged("mac")


def test_a_flipped_mac_character_is_refused():
    local = local_of(sign("jane@example.org"))
    flipped = local[:2] + ("a" if local[2] != "a" else "b") + local[3:]
    assert parse(KEYS, flipped) == Forged("mac")


def test_another_secret_is_refused():
    local = local_of(sign("jane@example.org", Keyring((b"z" * 32,))))
    assert parse(KEYS, local) == Forged("mac")


@pytest.mark.parametrize(
    "local", ["b-", "b-abcdefgh", "b-abcdefgh-noequals", "b-abcdefghxjane=example.org", "bh-a-b"]
)
def test_malformed_addresses_are_forged_not_errors(local):
    assert parse(KEYS, local) == Forged("malformed")


@pytest.mark.parametrize("local", ["postmaster", "fbl", "bounce", "jane"])
def test_other_local_parts_are_no_verp(local):
    assert parse(KEYS, local) is None


def test_rotation_signs_with_the_first_and_verifies_with_all():
    old = Keyring((b"o" * 32,))
    rotated = Keyring((b"n" * 32, b"o" * 32))
    from_before = local_of(sign("jane@example.org", old))
    assert parse(rotated, from_before) == Verp("jane@example.org", None, None, 1)
    after = local_of(sign("jane@example.org", rotated))
    assert after != from_before
    assert parse(rotated, after) == Verp("jane@example.org", None, None, 0)
    # Once the old secret is dropped, its addresses are no longer ours.
    assert parse(Keyring((b"n" * 32,)), from_before) == Forged("mac")


def test_keyring_file_lines():
    keys = parse_keyring(b"# rotated 2026-01\n  " + b"n" * 20 + b"  \n\n" + b"o" * 16 + b"\n")
    assert keys.secrets == (b"n" * 20, b"o" * 16)


@pytest.mark.parametrize("text", [b"", b"\n# only a comment\n", b"short\n", b"x" * 32 + b"\nshort"])
def test_a_missing_or_short_secret_is_refused(text):
    with pytest.raises(SecretError):
        parse_keyring(text)


def test_a_short_secret_file_stops_start_up_naming_the_key(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"tooshort\n")
    with pytest.raises(FileProblem, match=r"^bounce\.verp_secret_file: the secret has 8 bytes"):
        verp.watch_keyring(path)
    with pytest.raises(FileProblem, match=r"^bounce\.verp_secret_file: cannot read"):
        verp.watch_keyring(tmp_path / "missing")


def test_a_rotated_secret_file_is_read_again(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"o" * 32 + b"\n")
    watched = verp.watch_keyring(path)
    watched.interval = 0
    first = watched.value
    path.write_bytes(b"n" * 32 + b"\n" + b"o" * 32 + b"\n")
    assert watched.value.secrets == (b"n" * 32, b"o" * 32)
    assert first.secrets == (b"o" * 32,)
