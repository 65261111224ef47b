"""ServerTls: a strict server context from watched files, handshakes done in memory.

Certificates come from a test CA (trustme); every handshake is a real one
between two SSLObjects joined by MemoryBIO pairs, so no socket is opened.
"""

from __future__ import annotations

import datetime
import os
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from mailyard.config import TlsFiles
from mailyard.filewatch import FileProblem
from mailyard.ingress.tls import ServerTls, TlsInfo, describe, from_extra

CERT_KEY = "ingress.tls.cert_file: "
KEY_KEY = "ingress.tls.key_file: "
NOT_AFTER = datetime.datetime(2031, 5, 17, 12, 30, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    return TlsFiles(cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key")


def chain_pem(leaf: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in leaf.cert_chain_pems)


def install(files: TlsFiles, cert: bytes, key: bytes) -> None:
    """Write as a Secret update does: a new file takes the old one's name at once."""
    for path, data in ((files.cert_file, cert), (files.key_file, key)):
        new = path.with_name(path.name + ".new")
        new.write_bytes(data)
        os.replace(new, path)


def install_leaf(files: TlsFiles, leaf: trustme.LeafCert) -> None:
    install(files, chain_pem(leaf), leaf.private_key_pem.bytes())


def serial_of(leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client that verifies the chain and the name mx.test against the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


def handshake(
    server_context: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A full handshake between two in-memory ends: (client, server)."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(client_in, client_out, server_hostname="mx.test")
    server_end = server_context.wrap_bio(server_in, server_out, server_side=True)
    ends = [(client_end, client_out, server_in), (server_end, server_out, client_in)]
    done = [False, False]
    for _ in range(10):
        for index, (end, outgoing, peer_incoming) in enumerate(ends):
            if not done[index]:
                try:
                    end.do_handshake()
                    done[index] = True
                except ssl.SSLWantReadError:
                    pass
            peer_incoming.write(outgoing.read())
        if all(done):
            return client_end, server_end
    raise AssertionError("the handshake did not finish")


def presented_serial(server_context: ssl.SSLContext, ca: trustme.CA) -> int:
    client_end, _ = handshake(server_context, client_context(ca))
    der = client_end.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def tls_1_1_client(ca: trustme.CA) -> ssl.SSLContext:
    """A client that speaks TLS 1.1 only (OpenSSL 3 needs security level 0 for it)."""
    context = client_context(ca)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def expiry_gauge() -> float | None:
    return REGISTRY.get_sample_value("mailyard_ingress_certificate_expiry_timestamp_seconds")


# --- the context -----------------------------------------------------------------


def test_handshake_completes_with_tls_1_2_or_better_and_presents_the_leaf(ca, files):
    leaf = ca.issue_cert("mx.test")
    install_leaf(files, leaf)
    client_end, server_end = handshake(ServerTls(files).context, client_context(ca))
    assert client_end.version() in {"TLSv1.2", "TLSv1.3"}
    assert server_end.version() == client_end.version()
    der = client_end.getpeercert(binary_form=True)
    assert der is not None
    assert x509.load_der_x509_certificate(der).serial_number == serial_of(leaf)


def test_a_tls_1_2_client_is_served(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client_end, _ = handshake(ServerTls(files).context, client)
    assert client_end.version() == "TLSv1.2"


def test_a_tls_1_1_client_is_refused(ca, files):
    leaf = ca.issue_cert("mx.test")
    install_leaf(files, leaf)
    # The same client gets through to a server that allows TLS 1.1: the
    # refusal below is our server's minimum, not the client's inability.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    leaf.configure_cert(permissive)
    client_end, _ = handshake(permissive, tls_1_1_client(ca))
    assert client_end.version() == "TLSv1.1"

    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        handshake(ServerTls(files).context, tls_1_1_client(ca))


def test_the_chain_in_cert_file_is_sent_after_the_leaf(ca, files):
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("mx.test")
    assert len(leaf.cert_chain_pems) == 2  # leaf, then the intermediate
    install_leaf(files, leaf)
    # The client trusts only the root: it needs the intermediate from us.
    assert presented_serial(ServerTls(files).context, ca) == serial_of(leaf)


def test_the_server_chooses_the_cipher(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    _, server_end = handshake(ServerTls(files).context, client)
    assert server_end.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"  # ours first, not theirs


def test_the_context_is_strict_and_asks_no_client_certificate(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))
    context = ServerTls(files).context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


# --- files that cannot be used at start-up -------------------------------------------


def rsa_1024_self_signed() -> tuple[bytes, bytes]:
    """A certificate that parses and matches its key, but that OpenSSL refuses."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def encrypted(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


Breakage = Callable[[TlsFiles, trustme.CA], None]


def missing_cert(files: TlsFiles, ca: trustme.CA) -> None:
    files.key_file.write_bytes(ca.issue_cert("mx.test").private_key_pem.bytes())


def missing_key(files: TlsFiles, ca: trustme.CA) -> None:
    files.cert_file.write_bytes(chain_pem(ca.issue_cert("mx.test")))


def unreadable_cert(files: TlsFiles, ca: trustme.CA) -> None:
    missing_cert(files, ca)
    files.cert_file.mkdir()  # exists, but read() fails (a chmod 000 file does not, as root)


def garbage_cert(files: TlsFiles, ca: trustme.CA) -> None:
    install(files, b"not a certificate\n", ca.issue_cert("mx.test").private_key_pem.bytes())


def der_cert(files: TlsFiles, ca: trustme.CA) -> None:
    leaf = ca.issue_cert("mx.test")
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER
    )
    install(files, der, leaf.private_key_pem.bytes())


def swapped(files: TlsFiles, ca: trustme.CA) -> None:
    leaf = ca.issue_cert("mx.test")
    install(files, leaf.private_key_pem.bytes(), chain_pem(leaf))


def garbage_key(files: TlsFiles, ca: trustme.CA) -> None:
    install(files, chain_pem(ca.issue_cert("mx.test")), b"-----BEGIN PRIVATE KEY-----\nxx\n")


def encrypted_key(files: TlsFiles, ca: trustme.CA) -> None:
    leaf = ca.issue_cert("mx.test")
    install(files, chain_pem(leaf), encrypted(leaf.private_key_pem.bytes()))


def mismatched_key(files: TlsFiles, ca: trustme.CA) -> None:
    install(
        files,
        chain_pem(ca.issue_cert("mx.test")),
        ca.issue_cert("mx.test").private_key_pem.bytes(),
    )


def weak_rsa(files: TlsFiles, ca: trustme.CA) -> None:
    install(files, *rsa_1024_self_signed())


@pytest.mark.parametrize(
    ("breakage", "prefix", "words"),
    [
        (missing_cert, CERT_KEY, "No such file"),
        (missing_key, KEY_KEY, "No such file"),
        (unreadable_cert, CERT_KEY, "cannot read"),
        (garbage_cert, CERT_KEY, "no PEM certificate"),
        (der_cert, CERT_KEY, "no PEM certificate"),
        (swapped, CERT_KEY, "swapped"),
        (garbage_key, KEY_KEY, "no PEM private key"),
        (encrypted_key, KEY_KEY, "encrypted"),
        (mismatched_key, KEY_KEY, "does not match the certificate in ingress.tls.cert_file"),
        (weak_rsa, CERT_KEY, "too small"),
    ],
)
def test_a_file_that_cannot_be_used_stops_start_up_naming_its_key(
    ca, files, breakage: Breakage, prefix: str, words: str
):
    breakage(files, ca)
    with pytest.raises(FileProblem) as problem:
        ServerTls(files)
    message = str(problem.value)
    assert message.startswith(prefix), message
    assert words in message, message
    at_fault = files.key_file if prefix == KEY_KEY else files.cert_file
    assert str(at_fault) in message, message


def test_a_mismatch_names_both_files(ca, files):
    mismatched_key(files, ca)
    with pytest.raises(FileProblem) as problem:
        ServerTls(files)
    message = str(problem.value)
    for name in ("ingress.tls.key_file", "ingress.tls.cert_file"):
        assert name in message
    for path in (files.key_file, files.cert_file):
        assert str(path) in message


def test_a_key_file_that_also_holds_the_certificate_is_fine(ca, files):
    leaf = ca.issue_cert("mx.test")
    install(files, chain_pem(leaf), chain_pem(leaf) + leaf.private_key_pem.bytes())
    assert presented_serial(ServerTls(files).context, ca) == serial_of(leaf)


# --- reloading ---------------------------------------------------------------------


def test_renewed_files_give_new_sessions_a_new_context_after_the_interval(ca, files):
    old, new = ca.issue_cert("mx.test"), ca.issue_cert("mx.test")
    assert serial_of(old) != serial_of(new)
    install_leaf(files, old)
    clock = Clock()
    tls = ServerTls(files, interval=5.0, clock=clock)
    before = tls.context

    install_leaf(files, new)
    clock.now = 4.0
    assert tls.context is before  # not looked at again within the interval
    clock.now = 5.0
    after = tls.context
    assert after is not before
    assert presented_serial(after, ca) == serial_of(new)
    # A session that holds the old context keeps the old certificate.
    assert presented_serial(before, ca) == serial_of(old)


@pytest.mark.parametrize("breakage", [garbage_cert, mismatched_key, garbage_key, weak_rsa])
def test_a_broken_renewal_keeps_the_last_good_context(ca, files, breakage: Breakage):
    good = ca.issue_cert("mx.test")
    install_leaf(files, good)
    clock = Clock()
    tls = ServerTls(files, interval=1.0, clock=clock)
    before = tls.context

    breakage(files, ca)
    clock.now = 1.0
    assert tls.context is before
    assert presented_serial(tls.context, ca) == serial_of(good)

    fixed = ca.issue_cert("mx.test")
    install_leaf(files, fixed)
    clock.now = 2.0
    assert presented_serial(tls.context, ca) == serial_of(fixed)


def test_files_that_vanish_keep_the_last_good_context(ca, files):
    good = ca.issue_cert("mx.test")
    install_leaf(files, good)
    clock = Clock()
    tls = ServerTls(files, clock=clock)
    before = tls.context
    files.cert_file.unlink()
    clock.now = 1.0
    assert tls.context is before


# --- the expiry gauge ----------------------------------------------------------------


def test_the_expiry_gauge_follows_the_presented_certificate(ca, files):
    # Issued by an intermediate, which expires at another time: the leaf counts.
    intermediate = ca.create_child_ca()
    install_leaf(files, intermediate.issue_cert("mx.test", not_after=NOT_AFTER))
    clock = Clock()
    tls = ServerTls(files, clock=clock)
    assert expiry_gauge() == NOT_AFTER.timestamp()

    later = NOT_AFTER + datetime.timedelta(days=90)
    install_leaf(files, ca.issue_cert("mx.test", not_after=later))
    clock.now = 1.0
    tls.context  # noqa: B018 (a look at the files)
    assert expiry_gauge() == later.timestamp()

    garbage_cert(files, ca)
    clock.now = 2.0
    tls.context  # noqa: B018
    assert expiry_gauge() == later.timestamp()


# --- describe and from_extra ----------------------------------------------------------


def test_describe_gives_version_cipher_and_bits_of_tls_1_2(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))  # an ECDSA key
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    client_end, server_end = handshake(ServerTls(files).context, client)
    expected = TlsInfo(version="TLSv1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", bits=128)
    assert describe(server_end) == expected
    assert describe(client_end) == expected


def test_describe_gives_tls_1_3(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))
    _, server_end = handshake(ServerTls(files).context, client_context(ca))
    info = describe(server_end)
    assert info is not None
    assert info.version == "TLSv1.3"
    assert info.cipher.startswith("TLS_")
    assert info.bits in {128, 256}


def test_from_extra_reads_the_ssl_object_of_a_transport(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))
    context = ServerTls(files).context
    _, server_end = handshake(context, client_context(ca))
    info = from_extra({"sslcontext": context, "peercert": None, "ssl_object": server_end})
    assert info is not None
    assert info == describe(server_end)
    assert info.version in {"TLSv1.2", "TLSv1.3"}


def test_clear_text_and_unfinished_handshakes_give_none(ca, files):
    install_leaf(files, ca.issue_cert("mx.test"))
    context = ServerTls(files).context
    assert describe(None) is None
    assert from_extra(None) is None
    assert from_extra({}) is None
    assert from_extra({"sslcontext": context}) is None
    assert from_extra({"ssl_object": "not an SSL object"}) is None
    unfinished = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert describe(unfinished) is None
