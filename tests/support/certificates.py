"""A test CA (trustme), the files ingress reads its certificate from, and TLSA data for DANE."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


@dataclass
class TlsFiles:
    ca: trustme.CA
    cert_file: Path
    key_file: Path
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts the test CA and checks the name, as a careful sender does."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context

    def renew(self, name: str = "mx.mailyard.test") -> int:
        """A new certificate in place of the old (a renewed Secret); its serial."""
        leaf = self.ca.issue_cert(name)
        write(leaf, self.cert_file, self.key_file)
        return serial_of(leaf.cert_chain_pems[0].bytes())


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server's TLS context with a certificate from ``ca`` for ``names``."""
    return leaf_context(ca.issue_cert(*names))


def leaf_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """A server's TLS context presenting ``leaf``, and the intermediate CAs it came from."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


def der_chain(leaf: trustme.LeafCert) -> list[bytes]:
    """What a server presenting ``leaf`` sends: the leaf, then its intermediates (DER)."""
    return [ssl.PEM_cert_to_DER_cert(pem.bytes().decode()) for pem in leaf.cert_chain_pems]


def tlsa_data(selector: int, matching: int, certificate: bytes) -> bytes:
    """A TLSA record's data for a DER certificate (RFC 6698 §2.1), computed independently
    of the code under test: the certificate or its SubjectPublicKeyInfo, whole or hashed."""
    data = certificate
    if selector == 1:
        key = x509.load_der_x509_certificate(certificate).public_key()
        data = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if matching == 1:
        return hashlib.sha256(data).digest()
    if matching == 2:
        return hashlib.sha512(data).digest()
    return data


def tlsa_text(usage: int, selector: int, matching: int, certificate: bytes) -> str:
    """The record in presentation form, for the test DNS server: ``3 1 1 ab12...``."""
    return f"{usage} {selector} {matching} {tlsa_data(selector, matching, certificate).hex()}"


def write(leaf: trustme.LeafCert, cert_file: Path, key_file: Path) -> None:
    # Written next to the target and renamed, as Kubernetes swaps a Secret's files.
    for path, data in (
        (key_file, leaf.private_key_pem.bytes()),
        (cert_file, b"".join(blob.bytes() for blob in leaf.cert_chain_pems)),
    ):
        temporary = path.with_suffix(".new")
        temporary.write_bytes(data)
        temporary.replace(path)


def serial_of(pem_or_der: bytes) -> int:
    from cryptography import x509

    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).serial_number
    return x509.load_der_x509_certificate(pem_or_der).serial_number


def make_tls_files(directory: Path, name: str = "mx.mailyard.test") -> TlsFiles:
    ca = trustme.CA()
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca, directory / "tls.crt", directory / "tls.key", directory / "ca.pem")
    write(ca.issue_cert(name), files.cert_file, files.key_file)
    ca.cert_pem.write_to_path(str(files.ca_file))
    return files
