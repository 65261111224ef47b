"""DKIM signing: keys made by `mailyard dkim keygen`, signatures checked by dkimpy itself.

dkimpy's verifier gets a dnsfunc that answers with the TXT records keygen
printed, so the whole chain is checked: key file → signature → published
record. No sockets; the queue service runs on the in-memory port.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dkim
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value
from prometheus_client import REGISTRY
from pydantic import ValidationError

from mailyard import wire
from mailyard.broker import Publish, QueueName
from mailyard.broker.memory import MemoryBroker
from mailyard.cli import main
from mailyard.config import ConfigError, DkimKey, Settings, load_settings
from mailyard.filewatch import FileProblem
from mailyard.queue import dkimkeys, dkimrsa
from mailyard.queue.service import QueueService
from mailyard.queue.signing import Signer, Unsigned, covers, from_domain
from mailyard.v1 import message_pb2 as pb
from tests.support.processes import REPO

RECEIVED = (
    b"Received: from client.test (client.test [127.0.0.1])\r\n"
    b"\tby mx.mailyard.test (Mailyard) with ESMTP id 01JTEST;\r\n"
    b"\tMon, 1 Jun 2026 10:00:00 +0000\r\n"
)


def message(sender: str = "App <app@example.com>", body: bytes = b"Hello.\r\n") -> bytes:
    """As the queue gets it: our Received: first, then what the client sent."""
    return (
        RECEIVED + f"From: {sender}\r\nTo: someone@alpha.test\r\nSubject: A test\r\n".encode()
        + b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
    )  # fmt: skip


# --- keys from `mailyard dkim keygen` ---------------------------------------


@dataclass(frozen=True)
class Key:
    domain: str
    selector: str
    path: Path
    line: str  # what keygen printed

    @property
    def name(self) -> bytes:
        return f"{self.selector}._domainkey.{self.domain}.".encode()

    @property
    def txt(self) -> bytes:
        """The record's value, its character-strings joined (RFC 6376 §3.6.2.2)."""
        owner, klass, rdtype, rest = self.line.split(" ", 3)
        assert (owner.encode(), klass, rdtype) == (self.name, "IN", "TXT")
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rest)
        assert all(len(string) <= 255 for string in rdata.strings)
        return b"".join(rdata.strings)

    def config(self, domain: str | None = None) -> dict[str, str]:
        return {
            "domain": domain or self.domain,
            "selector": self.selector,
            "key_file": str(self.path),
        }


def keygen(directory: Path, domain: str, selector: str, algorithm: str, *extra: str) -> Key:
    path = directory / f"{selector}.{domain}.pem"
    out, err = io.StringIO(), io.StringIO()
    argv = ["dkim", "keygen", "--domain", domain, "--selector", selector]
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*argv, "--algorithm", algorithm, "--out", str(path), *extra])
    assert code == 0, err.getvalue()
    [line] = out.getvalue().splitlines()
    return Key(domain, selector, path, line)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dkim")


@pytest.fixture(scope="module")
def rsa_key(keydir: Path) -> Key:
    return keygen(keydir, "example.com", "s2026r", "rsa")


@pytest.fixture(scope="module")
def ed_key(keydir: Path) -> Key:
    return keygen(keydir, "example.com", "s2026e", "ed25519")


class Zone:
    """dkimpy's dnsfunc: the TXT records of the keys it was given, nothing else."""

    def __init__(self, *keys: Key) -> None:
        self.records = {key.name: key.txt for key in keys}
        self.asked: list[bytes] = []

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        self.asked.append(name)
        return self.records.get(name)


def dkim_key(key: Key, domain: str | None = None) -> DkimKey:
    return DkimKey.model_validate(key.config(domain))


def signatures(content: bytes) -> list[dict[bytes, bytes]]:
    """The DKIM-Signature fields of ``content``, top first, as tag → value."""
    headers, _ = dkim.rfc822_parse(content)
    return [parse_tag_value(value) for name, value in headers if name.lower() == b"dkim-signature"]


def signed_headers(signature: dict[bytes, bytes]) -> list[bytes]:
    return [name.strip().lower() for name in signature[b"h"].split(b":")]


def verifies(content: bytes, zone: Zone, index: int = 0) -> bool:
    """Signature ``index`` (0 is the top one) verifies, as dkim.verify checks the first."""
    try:
        return bool(dkim.DKIM(content).verify(idx=index, dnsfunc=zone))
    except (dkim.DKIMException, ValueError):  # PyNaCl's, for an RSA signature and Ed25519 key
        return False


# --- keygen -----------------------------------------------------------------


def test_keygen_rsa_prints_a_record_of_the_der_public_key(rsa_key: Key) -> None:
    tags = parse_tag_value(rsa_key.txt)
    assert (tags[b"v"], tags[b"k"]) == (b"DKIM1", b"rsa")
    private = serialization.load_pem_private_key(rsa_key.path.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert tags[b"p"] == base64.b64encode(spki)
    # 2048 bits do not fit one character-string: two, joined again by the verifier.
    assert re.fullmatch(r'\S+ IN TXT "[^"]{255}" "[^"]+"', rsa_key.line)
    assert rsa_key.line.startswith('s2026r._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MII')
    # What dkimpy makes of the record: an RSA key of 2048 bits.
    _, bits, ktag, _ = dkim.evaluate_pk(rsa_key.name, rsa_key.txt)
    assert (bits, ktag) == (2048, b"rsa")


def test_keygen_ed25519_prints_the_raw_public_key(ed_key: Key) -> None:
    tags = parse_tag_value(ed_key.txt)
    assert (tags[b"v"], tags[b"k"]) == (b"DKIM1", b"ed25519")
    assert len(base64.b64decode(tags[b"p"])) == 32
    private = serialization.load_pem_private_key(ed_key.path.read_bytes(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert tags[b"p"] == base64.b64encode(raw)
    assert ed_key.line.count('"') == 2  # short enough for one string


def test_keygen_writes_pkcs8_pem_readable_only_by_its_owner(rsa_key: Key, ed_key: Key) -> None:
    for key in (rsa_key, ed_key):
        assert key.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
        assert os.stat(key.path).st_mode & 0o777 == 0o600


def test_keygen_makes_bigger_rsa_keys_on_request(tmp_path: Path) -> None:
    key = keygen(tmp_path, "example.com", "big", "rsa", "--bits", "3072")
    _, bits, _, _ = dkim.evaluate_pk(key.name, key.txt)
    assert bits == 3072
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', key.line))


@pytest.mark.parametrize(
    ("value", "strings"),
    [("", [""]), ("a" * 255, ["a" * 255]), ("a" * 256, ["a" * 255, "a"]), ("b" * 600, 3)],
)
def test_txt_values_are_cut_into_255_octet_strings(value: str, strings: list[str] | int) -> None:
    cut = dkimkeys.txt_strings(value)
    assert "".join(cut) == value
    assert all(len(s) <= 255 for s in cut)
    assert cut == strings if isinstance(strings, list) else len(cut) == strings


# --- signing ----------------------------------------------------------------


def test_rsa_signature_verifies(rsa_key: Key) -> None:
    signed = Signer([dkim_key(rsa_key)]).sign(message())
    assert signed.domains == ("example.com",)
    assert dkim.verify(signed.content, dnsfunc=Zone(rsa_key))
    [signature] = signatures(signed.content)
    assert signature[b"a"] == b"rsa-sha256"
    assert (signature[b"d"], signature[b"s"]) == (b"example.com", b"s2026r")


def test_ed25519_signature_verifies(ed_key: Key) -> None:
    signed = Signer([dkim_key(ed_key)]).sign(message())
    assert dkim.verify(signed.content, dnsfunc=Zone(ed_key))
    [signature] = signatures(signed.content)
    assert signature[b"a"] == b"ed25519-sha256"
    assert signature[b"s"] == b"s2026e"


def test_dual_signing_gives_two_signatures_that_both_verify(rsa_key: Key, ed_key: Key) -> None:
    signed = Signer([dkim_key(rsa_key), dkim_key(ed_key)]).sign(message())
    assert signed.domains == ("example.com", "example.com")
    found = signatures(signed.content)
    assert [s[b"a"] for s in found] == [b"rsa-sha256", b"ed25519-sha256"]  # config order, top first
    zone = Zone(rsa_key, ed_key)
    assert verifies(signed.content, zone, 0)
    assert verifies(signed.content, zone, 1)
    # A verifier that knows only one of the keys still checks its own signature.
    assert verifies(signed.content, Zone(ed_key), 1)
    assert not verifies(signed.content, Zone(ed_key), 0)


def test_the_signatures_go_on_top_and_the_message_is_unchanged_below(rsa_key: Key) -> None:
    original = message()
    signed = Signer([dkim_key(rsa_key)]).sign(original)
    assert signed.content.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert signed.content.endswith(original)
    field = signed.content[: -len(original)]
    assert field.endswith(b"\r\n")
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))  # folded (RFC 5322 §2.1.1)


def test_relaxed_relaxed_no_length_and_from_oversigned(rsa_key: Key) -> None:
    [signature] = signatures(Signer([dkim_key(rsa_key)]).sign(message()).content)
    assert signature[b"c"] == b"relaxed/relaxed"
    assert b"l" not in signature
    assert signature[b"i"] == b"@example.com"
    signed = signed_headers(signature)
    assert signed.count(b"from") == 2  # once more than present: no From can be added
    # dkimpy's default set is RFC 6376 §5.4.1's list, as far as present.
    assert set(signed) == {
        b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"
    }  # fmt: skip
    assert b"received" not in signed


def test_relaxed_canonicalisation_survives_what_relays_do(rsa_key: Key) -> None:
    zone = Zone(rsa_key)
    signed = Signer([dkim_key(rsa_key)]).sign(message(body=b"Hello.\r\n\r\n")).content
    refolded = signed.replace(b"Subject: A test\r\n", b"subject:   A\r\n test  \r\n")
    trailing = refolded.replace(b"Hello.\r\n", b"Hello.   \r\n")
    assert verifies(trailing, zone)


def test_what_the_signature_protects(rsa_key: Key) -> None:
    zone = Zone(rsa_key)
    signed = Signer([dkim_key(rsa_key)]).sign(message()).content
    assert verifies(signed, zone)
    assert not verifies(signed + b"appended\r\n", zone)  # no l=: the whole body counts
    second_from = signed.replace(b"To: ", b"From: evil@attacker.test\r\nTo: ", 1)
    assert not verifies(second_from, zone)  # oversigned From
    assert not verifies(signed.replace(b"A test", b"A tesT"), zone)


def test_a_tls_report_s_own_fields_are_signed_and_cannot_be_added(ed_key: Key) -> None:
    """RFC 8460 §5.3: TLS-Report-Domain and TLS-Report-Submitter SHOULD be signed."""
    report = message().replace(
        b"Subject: A test\r\n",
        b"Subject: A test\r\n"
        b"TLS-Report-Domain: alpha.test\r\nTLS-Report-Submitter: example.com\r\n",
    )
    signed = Signer([dkim_key(ed_key)]).sign(report).content
    [signature] = signatures(signed)
    names = signed_headers(signature)
    assert names.count(b"tls-report-domain") == 2  # oversigned, as From
    assert names.count(b"tls-report-submitter") == 2
    zone = Zone(ed_key)
    assert verifies(signed, zone)
    assert not verifies(signed.replace(b"Domain: alpha.test", b"Domain: beta.test"), zone)
    added = signed.replace(b"To: ", b"TLS-Report-Domain: evil.test\r\nTo: ", 1)
    assert not verifies(added, zone)


def test_a_parent_domain_key_signs_mail_from_a_subdomain(rsa_key: Key) -> None:
    signed = Signer([dkim_key(rsa_key)]).sign(message("news@mail.news.example.com"))
    [signature] = signatures(signed.content)
    assert signature[b"d"] == b"example.com"
    assert verifies(signed.content, Zone(rsa_key))


def test_every_covering_key_signs_and_others_do_not(rsa_key: Key, ed_key: Key) -> None:
    parent = dkim_key(rsa_key)  # example.com
    child = DkimKey(domain="news.example.com", selector=ed_key.selector, key_file=ed_key.path)
    signer = Signer([parent, child])
    assert signer.sign(message("a@news.example.com")).domains == (
        "example.com",
        "news.example.com",
    )
    assert signer.sign(message("a@example.com")).domains == ("example.com",)
    assert signer.domains == ["example.com", "news.example.com"]


@pytest.mark.parametrize(
    ("key_domain", "domain", "covered"),
    [
        ("example.com", "example.com", True),
        ("example.com", "a.b.example.com", True),
        ("example.com", "notexample.com", False),
        ("example.com", "example.com.evil.test", False),
        ("news.example.com", "example.com", False),
    ],
)
def test_covers_whole_labels_only(key_domain: str, domain: str, covered: bool) -> None:
    assert covers(key_domain, domain) is covered


def test_from_without_a_key_is_unsigned(rsa_key: Key) -> None:
    with pytest.raises(Unsigned) as info:
        Signer([dkim_key(rsa_key)]).sign(message("app@other.test"))
    assert info.value.reason == "no_key"
    assert "other.test" in info.value.detail


@pytest.mark.parametrize(
    ("headers", "domain"),
    [
        (b"From: a@Example.COM\r\n", "example.com"),
        (b'from: "Someone, Inc." <a@example.com>\r\n', "example.com"),
        (b"FROM:\r\n  Folded <a@Sub.Example.com>\r\n", "sub.example.com"),
        (b"From: a@example.com, b@EXAMPLE.com\r\nSender: a@example.com\r\n", "example.com"),
        (b"From: a@example.com, b@other.test\r\n", None),  # which one? none
        (b"From: a@example.com\r\nFrom: b@example.com\r\n", None),  # RFC 5322: one From
        (b"From: undisclosed:;\r\n", None),
        (b"From: not an address\r\n", None),
        (b"To: a@example.com\r\n", None),
        (b"From: a@xn--bcher-kva.example\r\n", "xn--bcher-kva.example"),  # as given
        ("From: a@BÜCHER.example\r\n".encode(), "bücher.example"),
    ],
)
def test_the_from_domain_is_read_from_the_header_section(
    headers: bytes, domain: str | None
) -> None:
    assert from_domain(RECEIVED + headers + b"Subject: s\r\n\r\nFrom: x@body.test\r\n") == domain


def test_a_from_line_in_the_body_is_not_a_from_field() -> None:
    assert from_domain(RECEIVED + b"Subject: s\r\n\r\nFrom: a@example.com\r\n") is None
    assert from_domain(b"\r\nFrom: a@example.com\r\n") is None  # empty header section
    assert from_domain(b"From: a@example.com") == "example.com"  # no body at all


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (RECEIVED + b"Subject: no from\r\n\r\nbody\r\n", "no_from"),
        (b"", "no_from"),
        (RECEIVED + b"From: a@example.com\r\nthis is no header\r\n\r\nbody\r\n", "error"),
        (b" continued\r\nFrom: a@example.com\r\n\r\nbody\r\n", "error"),
    ],
)
def test_what_dkimpy_cannot_sign_is_unsigned_not_a_crash(
    rsa_key: Key, content: bytes, reason: str
) -> None:
    with pytest.raises(Unsigned) as info:
        Signer([dkim_key(rsa_key)]).sign(content)
    assert info.value.reason == reason


def test_eight_bit_headers_and_a_long_body_still_verify(rsa_key: Key, ed_key: Key) -> None:
    body = ("Grüße ☃\r\n.a line with a dot\r\n" + "x" * 900 + "\r\n").encode() * 50
    content = message('"Jörg" <j@example.com>', body=body)
    signed = Signer([dkim_key(rsa_key), dkim_key(ed_key)]).sign(content).content
    assert verifies(signed, Zone(rsa_key, ed_key), 0)
    assert verifies(signed, Zone(rsa_key, ed_key), 1)


def test_an_eight_bit_body_is_signed_as_quoted_printable(rsa_key: Key) -> None:
    """RFC 6376 §5.3: converted before signing, so a relay without 8BITMIME breaks nothing."""
    content = message(body="Gr\u00fc\u00dfe \u2603\r\n".encode())
    signed = Signer([dkim_key(rsa_key)]).sign(content).content
    below = signed.split(b"\r\n\r\n", 1)
    assert below[1] == b"Gr=C3=BC=C3=9Fe =E2=98=83\r\n"
    assert below[0].endswith(b"\r\nContent-Transfer-Encoding: quoted-printable")
    assert signed.isascii()
    assert verifies(signed, Zone(rsa_key))


# --- key files that cannot sign ---------------------------------------------


def weak_rsa_pem(bits: int = 512) -> bytes:
    """cryptography makes no RSA key under 1024 bits; build one from two primes."""

    def prime(size: int) -> int:
        while True:
            n = secrets.randbits(size) | (1 << (size - 1)) | 1
            if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
                return n

    e = 65537
    while True:
        p, q = prime(bits // 2), prime(bits // 2)
        if p != q and (p - 1) % e and (q - 1) % e:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )  # fmt: skip
    return numbers.private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def encrypted_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def public_pem() -> bytes:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "No such file or directory"),
        (b"", "holds no PEM private key"),
        (b"garbage, not a key\n", "holds no PEM private key (no '-----BEGIN PRIVATE KEY-----'"),
        (weak_rsa_pem(), "bits, which is too weak: DKIM needs at least 1024 (RFC 8301)"),
        (ec_pem(), "holds an EC (secp256r1) key; DKIM signs with RSA (RFC 8301) or Ed25519"),
        (encrypted_pem(), "is encrypted with a passphrase"),
        (public_pem(), "(it holds a public key: the private key goes here"),
    ],
    ids=["missing", "empty", "garbage", "weak", "ec", "encrypted", "public"],
)
def test_a_key_that_cannot_sign_stops_start_up_naming_it(
    tmp_path: Path, rsa_key: Key, content: bytes | None, words: str
) -> None:
    bad = tmp_path / "bad.pem"
    if content is not None:
        bad.write_bytes(content)
    keys = [dkim_key(rsa_key), DkimKey(domain="example.org", selector="s1", key_file=bad)]
    with pytest.raises(FileProblem) as info:
        Signer(keys)
    assert str(info.value).startswith("dkim.keys[1].key_file: ")
    assert words in str(info.value)
    if content is not None:
        assert str(bad) in str(info.value)


UNREADABLE_PROBE = """
import sys
from pathlib import Path
from mailyard.config import DkimKey
from mailyard.filewatch import FileProblem
from tests.support.processes import REPO
from mailyard.queue import dkimrsa
from mailyard.queue.signing import Signer
try:
    Signer([DkimKey(domain="example.com", selector="s1", key_file=Path(sys.argv[1]))])
except FileProblem as problem:
    print(problem)
"""


def test_an_unreadable_key_is_named(tmp_path: Path, rsa_key: Key) -> None:
    # Root reads every file, so as root the check runs in a child that is
    # 'nobody' (setpriv, util-linux), in a directory nobody may enter.
    directory = Path(tempfile.mkdtemp(prefix="mailyard-key-"))
    directory.chmod(0o755)
    try:
        locked = directory / "locked.pem"
        locked.write_bytes(rsa_key.path.read_bytes())
        locked.chmod(0)
        command = [sys.executable, "-c", UNREADABLE_PROBE, str(locked)]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = {**os.environ, "PYTHONPATH": str(REPO / "services")}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    finally:
        shutil.rmtree(directory)
    assert done.returncode == 0, done.stderr
    assert re.match(r"^dkim\.keys\[0\]\.key_file: .*Permission denied", done.stdout), done.stdout


def test_a_directory_for_a_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileProblem, match=r"^dkim\.keys\[0\]\.key_file: .*Is a directory"):
        Signer([DkimKey(domain="example.com", selector="s1", key_file=tmp_path)])


def test_traditional_and_crlf_pem_files_are_read_too(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "traditional.pem"
    path.write_bytes(pem.replace(b"\n", b"\r\n"))
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = dkimkeys.load_key("dkim.keys[0].key_file", path)
    assert (loaded.algorithm, loaded.bits) == ("rsa", 2048)
    assert loaded.public == dkimkeys.public_value(private)
    assert "BEGIN" not in repr(loaded)  # the secret stays out of logs


# --- reload -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reloads(result: str) -> float:
    sample = REGISTRY.get_sample_value(
        "mailyard_file_reloads_total", {"key": "dkim.keys[0].key_file", "result": result}
    )
    return sample or 0.0


def test_a_replaced_key_file_is_used_after_the_next_look(tmp_path: Path) -> None:
    first = keygen(tmp_path, "example.com", "one", "ed25519")
    second = keygen(tmp_path, "example.com", "two", "rsa")
    path = tmp_path / "current.pem"
    path.write_bytes(first.path.read_bytes())
    clock = Clock()
    signer = Signer([DkimKey(domain="example.com", selector="live", key_file=path)], clock=clock)
    old = Key("example.com", "live", path, first.line.replace("one.", "live.", 1))
    new = Key("example.com", "live", path, second.line.replace("two.", "live.", 1))
    assert verifies(signer.sign(message()).content, Zone(old))
    ok_before = reloads("ok")

    os.replace(second.path, path)  # as a Secret update does: a new file under the old name
    assert verifies(signer.sign(message()).content, Zone(old))  # not looked at yet
    clock.now += 1.0
    content = signer.sign(message()).content
    assert verifies(content, Zone(new))
    assert not verifies(content, Zone(old))
    assert reloads("ok") == ok_before + 1


def test_a_broken_replacement_keeps_the_last_good_key(tmp_path: Path, ed_key: Key) -> None:
    path = tmp_path / "current.pem"
    path.write_bytes(ed_key.path.read_bytes())
    clock = Clock()
    signer = Signer([DkimKey(domain="example.com", selector=ed_key.selector, key_file=path)],
                    clock=clock)  # fmt: skip
    failed_before = reloads("failed")
    replacement = tmp_path / "new.pem"
    replacement.write_bytes(weak_rsa_pem())
    os.replace(replacement, path)
    clock.now += 1.0
    assert verifies(signer.sign(message()).content, Zone(ed_key))
    assert reloads("failed") == failed_before + 1
    path.unlink()  # gone: still the last good key
    clock.now += 1.0
    assert verifies(signer.sign(message()).content, Zone(ed_key))


# --- configuration ----------------------------------------------------------


def test_config_reads_the_dkim_section(tmp_path: Path, rsa_key: Key, ed_key: Key) -> None:
    config = tmp_path / "mailyard.yaml"
    config.write_text(
        "dkim:\n  keys:\n"
        f"    - {{domain: Example.COM, selector: S2026R, key_file: {rsa_key.path}}}\n"
        f"    - {{domain: example.com, selector: s2026e, key_file: {ed_key.path}}}\n"
    )
    keys = load_settings(config).dkim.keys
    assert [(k.domain, k.selector, k.key_file) for k in keys] == [
        ("example.com", "s2026r", rsa_key.path),
        ("example.com", "s2026e", ed_key.path),
    ]
    assert Settings().dkim.keys == []


def test_config_keys_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MAILYARD_DKIM__KEYS", '[{"domain": "example.com", "selector": "s1", "key_file": "k.pem"}]'
    )
    [key] = load_settings().dkim.keys
    assert (key.domain, key.selector, key.key_file) == ("example.com", "s1", Path("k.pem"))


@pytest.mark.parametrize(
    ("key", "where", "words"),
    [
        ({"selector": "s_1"}, "dkim.keys.0.selector", "is not a valid selector"),
        ({"selector": "-s"}, "dkim.keys.0.selector", "is not a valid selector"),
        ({"selector": ""}, "dkim.keys.0.selector", "is not a valid selector"),
        ({"selector": "a" * 64}, "dkim.keys.0.selector", "is not a valid selector"),
        ({"domain": "exa mple.com"}, "dkim.keys.0.domain", "is not a valid domain name"),
        ({"bits": 2048}, "dkim.keys.0.bits", "unknown key"),
    ],
)
def test_config_refuses_bad_keys_naming_them(
    tmp_path: Path, key: dict[str, object], where: str, words: str
) -> None:
    entry = {"domain": "example.com", "selector": "s1", "key_file": "k.pem"} | key
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, {"dkim": {"keys": [entry]}})
    assert f"  {where}: " in str(info.value)
    assert words in str(info.value)


def test_selectors_may_be_divided_by_periods_as_rfc_6376_allows() -> None:
    key = DkimKey(domain="example.com", selector="July2005.Reykjavik", key_file=Path("k"))
    assert key.selector == "july2005.reykjavik"


def test_config_refuses_one_selector_twice() -> None:
    entry = {"domain": "example.com", "selector": "s1", "key_file": "a.pem"}
    with pytest.raises(ValidationError, match=r"selector 's1' of example\.com is given twice"):
        Settings(dkim={"keys": [entry, entry | {"key_file": "b.pem"}]})  # type: ignore[arg-type]


def settings_from(tmp_path: Path, data: dict[str, object]) -> Settings:
    import yaml

    path = tmp_path / "mailyard.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path)


# --- the queue service signs before it splits -------------------------------


def accepted(message_id: str, content: bytes, recipients: list[str]) -> pb.AcceptedMessage:
    return pb.AcceptedMessage(
        message_id=message_id,
        mail_from="app@example.com",
        recipients=recipients,
        content=content,
        origin=pb.ORIGIN_SMTP,
        received_at=wire.timestamp(datetime.now(UTC)),
    )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def queue_settings(*keys: DkimKey) -> Settings:
    return Settings(
        hostname="mx.test",
        ingress={"local_domains": ["local.test"]},  # type: ignore[arg-type]
        dkim={"keys": [k.model_dump() for k in keys]},  # type: ignore[arg-type]
    )


async def test_the_queue_signs_once_and_every_job_carries_the_signature(
    rsa_key: Key, ed_key: Key
) -> None:
    queue = QueueService(queue_settings(dkim_key(rsa_key), dkim_key(ed_key)), MemoryBroker())
    await queue.start()
    broker = queue.broker
    assert isinstance(broker, MemoryBroker)
    signed_before = counter("mailyard_queue_dkim_signed_total", domain="example.com")
    content = message()
    settled = await broker.deliver(
        QueueName.INBOUND,
        [accepted("01S", content, ["a@alpha.test", "b@beta.test", "p@local.test"])],
    )
    assert settled.outcome == "acked"
    jobs = [job for o in settled.outputs if isinstance(o, Publish) for job in o.items]
    assert len(jobs) == 3
    assert len({job.content for job in jobs}) == 1  # signed once, before the split
    zone = Zone(rsa_key, ed_key)
    for job in jobs:
        assert job.content.endswith(content)
        assert verifies(job.content, zone, 0)
        assert verifies(job.content, zone, 1)
    # Counted once per message and domain, though two keys signed.
    assert counter("mailyard_queue_dkim_signed_total", domain="example.com") == signed_before + 1
    await queue.stop(1)


async def test_the_class_header_is_gone_before_the_signature_is_made(
    rsa_key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """X-Mailyard-Class: is for us: the signature covers the message without it."""
    queue = QueueService(queue_settings(dkim_key(rsa_key)), MemoryBroker())
    assert queue.signer is not None
    signer, seen = queue.signer, []

    def sign(content: bytes):  # type: ignore[no-untyped-def]
        seen.append(content)
        return type(signer).sign(signer, content)

    monkeypatch.setattr(signer, "sign", sign)
    await queue.start()
    broker = queue.broker
    assert isinstance(broker, MemoryBroker)
    submitted = message()
    content = submitted.replace(
        b"Subject: A test\r\n", b"Subject: A test\r\nX-Mailyard-Class: bulk\r\n"
    )
    settled = await broker.deliver(QueueName.INBOUND, [accepted("01X", content, ["a@alpha.test"])])
    [job] = [job for o in settled.outputs if isinstance(o, Publish) for job in o.items]
    assert job.mail_class == "bulk"
    assert seen == [submitted]  # what was signed
    assert b"x-mailyard-class" not in job.content.lower()
    # The signature on top, then exactly the message as submitted less the field.
    [signature] = signatures(job.content)
    assert job.content.endswith(submitted)
    assert job.content.startswith(b"DKIM-Signature:")
    assert verifies(job.content, Zone(rsa_key))
    body_hash = base64.b64encode(hashlib.sha256(b"Hello.\r\n").digest())
    assert signature[b"bh"] == body_hash
    await queue.stop(1)


async def test_the_queue_sends_what_it_cannot_sign_unsigned_and_counts_why(rsa_key: Key) -> None:
    queue = QueueService(queue_settings(dkim_key(rsa_key)), MemoryBroker())
    await queue.start()
    broker = queue.broker
    assert isinstance(broker, MemoryBroker)
    contents = {
        "no_key": message("app@other.test"),
        "no_from": RECEIVED + b"Subject: none\r\n\r\nbody\r\n",
        "error": RECEIVED + b"From: a@example.com\r\nnot a header\r\n\r\nbody\r\n",
    }
    before = {r: counter("mailyard_queue_dkim_unsigned_total", reason=r) for r in contents}
    items = [accepted(f"01U{i}", c, ["a@alpha.test"]) for i, c in enumerate(contents.values())]
    settled = await broker.deliver(QueueName.INBOUND, items)
    assert settled.outcome == "acked"
    jobs = [job for o in settled.outputs if isinstance(o, Publish) for job in o.items]
    assert sorted(job.content for job in jobs) == sorted(contents.values())  # as they came
    for reason in contents:
        assert counter("mailyard_queue_dkim_unsigned_total", reason=reason) == before[reason] + 1
    await queue.stop(1)


def test_the_series_exist_from_the_start(rsa_key: Key) -> None:
    other = DkimKey(domain="zero.example", selector="s1", key_file=rsa_key.path)
    QueueService(queue_settings(other), MemoryBroker())
    assert (
        REGISTRY.get_sample_value("mailyard_queue_dkim_signed_total", {"domain": "zero.example"})
        == 0.0
    )
    for reason in ("no_key", "no_from", "error"):
        assert (
            REGISTRY.get_sample_value("mailyard_queue_dkim_unsigned_total", {"reason": reason})
            is not None
        )


def test_without_keys_the_queue_signs_nothing() -> None:
    queue = QueueService(Settings(hostname="mx.test"), MemoryBroker())
    assert queue.signer is None


def test_a_key_that_cannot_sign_stops_the_queue_service(tmp_path: Path) -> None:
    key = DkimKey(domain="example.com", selector="s1", key_file=tmp_path / "missing.pem")
    with pytest.raises(FileProblem, match=r"^dkim\.keys\[0\]\.key_file: cannot read"):
        QueueService(queue_settings(key), MemoryBroker())


def test_one_click_unsubscribe_and_feedback_id_are_signed(rsa_key: Key) -> None:
    """RFC 8058 §4: List-Unsubscribe-Post must be covered; Gmail wants Feedback-ID signed."""
    extra = (
        b"List-Unsubscribe: <https://example.com/u/1>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"Feedback-ID: c1:shop:news:esp\r\n"
    )
    content = extra + message()
    signed = Signer([dkim_key(rsa_key)]).sign(content).content
    [signature] = signatures(signed)
    headers = [h.lower() for h in signed_headers(signature)]
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id"} <= set(headers)
    assert verifies(signed, Zone(rsa_key))
    tampered = signed.replace(b"Feedback-ID: c1:", b"Feedback-ID: c2:")
    assert not verifies(tampered, Zone(rsa_key))


# --- the RSA step in OpenSSL ------------------------------------------------


def test_openssl_signs_the_very_bytes_dkimpy_would(rsa_key: Key) -> None:
    """RSASSA-PKCS1-v1_5 is deterministic: both give one signature, byte for byte."""
    Signer([dkim_key(rsa_key)])  # installs it
    assert dkimrsa.installed()
    pem = rsa_key.path.read_bytes()
    parsed = dkim.crypto.parse_pem_private_key(
        serialization.load_pem_private_key(pem, None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    for data in (b"", b"one message", secrets.token_bytes(4096)):
        digest = hashlib.sha256(data)
        assert dkimrsa.sign(digest, parsed) == dkimrsa._DKIMPY_SIGN(digest, parsed)


def test_a_signature_made_by_openssl_verifies_with_dkimpys_own_rsa(rsa_key: Key) -> None:
    signed = Signer([dkim_key(rsa_key)]).sign(message()).content
    assert dkimrsa.installed()
    assert dkim.verify(signed, dnsfunc=Zone(rsa_key))  # dkimpy's verification is untouched
