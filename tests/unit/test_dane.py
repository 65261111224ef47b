"""TLSA matching (RFC 6698, 7671, 7672 §3) against real certificates, without a socket.

The certificates come from trustme: a root, an intermediate below it, and
leaves from the intermediate, as a server would send them (leaf first, then
the intermediate; the root not sent).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailyard.delivery.dane import Mismatch, Tlsa, TlsaRecord, authenticate
from tests.support.certificates import tlsa_data

MX = "mx.example.net"
NOW = datetime.now(UTC)


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def record(usage: int, selector: int, matching: int, certificate: bytes) -> TlsaRecord:
    """The record of that kind for ``certificate`` (DER)."""
    return TlsaRecord(usage, selector, matching, tlsa_data(selector, matching, certificate))


def tlsa(*records: TlsaRecord, base: str = MX) -> Tlsa:
    return Tlsa(MX, base, records)


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def intermediate(root: trustme.CA) -> trustme.CA:
    return root.create_child_ca()


@pytest.fixture(scope="module")
def chain(intermediate: trustme.CA) -> list[bytes]:
    """What a server for MX sends: its leaf, then the intermediate."""
    leaf = intermediate.issue_cert(MX)
    return [der(pem.bytes()) for pem in leaf.cert_chain_pems]


def chain_for(ca: trustme.CA, *names: str, **dates: datetime) -> list[bytes]:
    return [der(pem.bytes()) for pem in ca.issue_cert(*names, **dates).cert_chain_pems]


COMBINATIONS = [(s, m) for s in (0, 1) for m in (0, 1, 2)]


@pytest.mark.parametrize(("selector", "matching"), COMBINATIONS)
def test_dane_ee_matches_the_leaf_by_every_selector_and_matching_type(chain, selector, matching):
    wanted = record(3, selector, matching, chain[0])
    assert authenticate(chain, tlsa(wanted), now=NOW) == wanted


@pytest.mark.parametrize(("selector", "matching"), COMBINATIONS)
def test_dane_ta_matches_an_intermediate_the_server_sent(chain, selector, matching):
    wanted = record(2, selector, matching, chain[1])
    assert authenticate(chain, tlsa(wanted), now=NOW) == wanted


def test_dane_ee_checks_neither_the_name_nor_the_dates(intermediate):
    """RFC 7672 §3.1.1: a DANE-EE record is the whole authentication."""
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    stale = chain_for(intermediate, "someone-else.example", not_before=long_ago,
                      not_after=long_ago + timedelta(days=1))  # fmt: skip
    wanted = record(3, 1, 1, stale[0])
    assert authenticate(stale, tlsa(wanted), now=NOW) == wanted


def test_dane_ta_checks_the_name_of_the_leaf(intermediate):
    wrong_name = chain_for(intermediate, "someone-else.example")
    with pytest.raises(Mismatch, match="does not verify"):
        authenticate(wrong_name, tlsa(record(2, 1, 1, wrong_name[1])), now=NOW)


def test_dane_ta_accepts_the_tlsa_base_domain_as_the_name(intermediate):
    """The MX host is a CNAME to the provider's name; the certificate carries that name."""
    provider = chain_for(intermediate, "smtp.provider.example")
    found = tlsa(record(2, 1, 1, provider[1]), base="smtp.provider.example")
    assert authenticate(provider, found, now=NOW).usage == 2


def test_dane_ta_checks_the_dates_of_the_leaf(intermediate):
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    expired = chain_for(intermediate, MX, not_before=long_ago,
                        not_after=long_ago + timedelta(days=1))  # fmt: skip
    with pytest.raises(Mismatch, match="does not verify"):
        authenticate(expired, tlsa(record(2, 0, 1, expired[1])), now=NOW)


def test_dane_ta_with_a_leaf_from_another_ca_does_not_verify(chain):
    """The anchor is sent, but the leaf was not issued by it."""
    stranger = chain_for(trustme.CA().create_child_ca(), MX)
    forged = [stranger[0], chain[1]]
    with pytest.raises(Mismatch, match="does not verify"):
        authenticate(forged, tlsa(record(2, 0, 1, chain[1])), now=NOW)


def test_a_root_the_server_does_not_send_is_usable_only_when_the_record_holds_it_whole(root, chain):
    root_der = der(root.cert_pem.bytes())
    whole = record(2, 0, 0, root_der)
    assert authenticate(chain, tlsa(whole), now=NOW) == whole
    for digest in (record(2, 0, 1, root_der), record(2, 1, 1, root_der)):
        with pytest.raises(Mismatch, match="no TLSA record matches"):
            authenticate(chain, tlsa(digest), now=NOW)


def test_sha512_is_matched_and_a_wrong_digest_is_not(chain):
    assert authenticate(chain, tlsa(record(3, 1, 2, chain[0])), now=NOW).matching == 2
    wrong = TlsaRecord(3, 1, 1, hashlib.sha256(b"another key").digest())
    with pytest.raises(Mismatch, match="no TLSA record matches"):
        authenticate(chain, tlsa(wrong), now=NOW)
    other_server = record(3, 1, 1, chain[1])  # the intermediate's key is not the leaf's
    with pytest.raises(Mismatch):
        authenticate(chain, tlsa(other_server), now=NOW)


def test_one_matching_record_among_others_is_enough(chain):
    wrong = TlsaRecord(3, 1, 1, bytes(32))
    wanted = record(3, 1, 1, chain[0])
    assert authenticate(chain, tlsa(wrong, wanted), now=NOW) == wanted


@pytest.mark.parametrize(
    "unusable",
    [
        (0, 0, 1),  # PKIX-TA: unusable for SMTP (RFC 7672 §3.1.3)
        (1, 1, 1),  # PKIX-EE: likewise
        (4, 1, 1),  # an unknown usage
        (3, 2, 1),  # an unknown selector
        (3, 1, 3),  # an unknown matching type
    ],
)
def test_unusable_records_are_ignored_even_when_they_match(chain, unusable):
    usage, selector, matching = unusable
    known = selector in (0, 1) and matching in (0, 1, 2)
    # The data the leaf would match with, had the record been usable.
    data = record(3, selector, matching, chain[0]).data if known else record(3, 1, 1, chain[0]).data
    found = tlsa(TlsaRecord(usage, selector, matching, data))
    assert found.usable == ()
    with pytest.raises(Mismatch, match="unusable"):
        authenticate(chain, found, now=NOW)


def test_a_digest_of_the_wrong_length_is_unusable(chain):
    truncated = TlsaRecord(3, 1, 1, record(3, 1, 1, chain[0]).data[:20])
    assert not truncated.usable
    assert not TlsaRecord(3, 1, 2, record(3, 1, 1, chain[0]).data).usable  # 32 bytes, not 64
    assert not TlsaRecord(3, 0, 0, b"").usable


def test_the_stronger_digest_wins_among_records_of_the_same_usage_and_selector(chain):
    """RFC 7671 §9: with SHA-512 published, a SHA-256 record of the same kind is not used."""
    weak = record(3, 1, 1, chain[0])
    strong_but_stale = TlsaRecord(3, 1, 2, bytes(64))
    found = tlsa(weak, strong_but_stale)
    assert found.usable == (strong_but_stale,)
    with pytest.raises(Mismatch):
        authenticate(chain, found, now=NOW)
    # Another selector is another group: its SHA-256 record still counts.
    other = record(3, 0, 1, chain[0])
    assert authenticate(chain, tlsa(weak, strong_but_stale, other), now=NOW) == other


def test_garbage_from_the_server_is_a_mismatch_not_a_crash(chain):
    with pytest.raises(Mismatch, match="cannot be parsed"):
        authenticate([b"not a certificate"], tlsa(record(3, 1, 1, chain[0])), now=NOW)
    with pytest.raises(Mismatch, match="no certificate"):
        authenticate([], tlsa(record(3, 1, 1, chain[0])), now=NOW)


def test_presentation_form_and_names():
    found = Tlsa("mx.example.net", "smtp.provider.example", (TlsaRecord(3, 1, 1, b"\xab\x01"),))
    assert found.strings() == ("3 1 1 AB01",)
    assert found.names == ("smtp.provider.example", "mx.example.net")
    assert Tlsa(MX, MX, ()).names == (MX,)
