"""DKIM end to end: keys from `mailyard dkim keygen`, records in the test DNS server,
mail through SMTP, signatures checked by dkimpy on the bytes the remote server got.

Each test publishes its own selectors (the DNS server lives for the session),
so the two adapters' runs never see each other's keys.
"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dkim
import dns.exception
import dns.resolver
import yaml
from dkim.util import parse_tag_value

from mailyard.cli import main
from tests.support.pipeline import Pipeline, message
from tests.support.processes import REPO, free_port

if TYPE_CHECKING:  # imported under its own name, pytest would try to collect it
    from tests.support.dns_server import TestDnsServer

DnsFunc = Callable[..., bytes | None]


@dataclass(frozen=True)
class Key:
    domain: str
    selector: str
    path: Path

    def config(self) -> dict[str, str]:
        return {"domain": self.domain, "selector": self.selector, "key_file": str(self.path)}


def keygen(directory: Path, domain: str, algorithm: str, dns_server: TestDnsServer) -> Key:
    """A new key, its TXT record (as keygen printed it) served by the test DNS server."""
    selector = f"{algorithm[:1]}{uuid.uuid4().hex[:10]}"
    path = directory / f"{selector}.pem"
    out, err = io.StringIO(), io.StringIO()
    argv = ["dkim", "keygen", "--domain", domain, "--selector", selector]
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*argv, "--algorithm", algorithm, "--out", str(path)])
    assert code == 0, err.getvalue()
    owner, klass, rdtype, text = out.getvalue().strip().split(" ", 3)
    assert (owner, klass, rdtype) == (f"{selector}._domainkey.{domain}.", "IN", "TXT")
    dns_server.add(owner, rdtype, text)
    return Key(domain, selector, path)


def txt_from(dns_server: TestDnsServer) -> DnsFunc:
    """dkimpy's dnsfunc, asking the test DNS server (dnspython; TCP if truncated)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.Timeout as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        return b"".join(next(iter(answer)).strings)

    return dnsfunc


def signatures(content: bytes) -> list[dict[bytes, bytes]]:
    headers, _ = dkim.rfc822_parse(content)
    return [parse_tag_value(value) for name, value in headers if name.lower() == b"dkim-signature"]


def every_signature_verifies(content: bytes, dnsfunc: DnsFunc) -> None:
    found = signatures(content)
    assert found, content[:500]
    for index in range(len(found)):
        assert dkim.DKIM(content).verify(idx=index, dnsfunc=dnsfunc), (index, content[:1500])


TRICKY = (
    ".a line that starts with a dot\r\n..two dots\r\n"
    + "x" * 900
    + "\r\ntrailing space   \r\ncaf\u00e9 \u2603 8-bit text\r\n\r\nlast line\r\n"
)


def test_mail_arrives_signed_with_both_keys_and_every_signature_verifies(
    pipeline_factory: Callable[..., Pipeline], dns_server: TestDnsServer, tmp_path: Path
) -> None:
    rsa_key = keygen(tmp_path, "sender.test", "rsa", dns_server)
    ed_key = keygen(tmp_path, "sender.test", "ed25519", dns_server)
    pipeline = pipeline_factory(overrides={"dkim": {"keys": [rsa_key.config(), ed_key.config()]}})
    sent = {
        "someone@alpha.test": message("plain"),
        "other@beta.test": message("tricky", TRICKY),
        # A key of the parent domain signs mail from below it.
        "third@gamma.test": message("subdomain", sender="news@mail.sender.test"),
    }
    for recipient, content in sent.items():
        code, text = pipeline.send("app@sender.test", [recipient], content)
        assert code == 250, text
    received = pipeline.sink.wait_for(lambda m: len(m) == 3, 30, "three signed messages")

    dnsfunc = txt_from(dns_server)
    for delivery in received:
        [recipient] = delivery.recipients
        content = delivery.content
        found = signatures(content)
        assert [(s[b"a"], s[b"s"]) for s in found] == [
            (b"rsa-sha256", rsa_key.selector.encode()),
            (b"ed25519-sha256", ed_key.selector.encode()),
        ]
        assert {s[b"d"] for s in found} == {b"sender.test"}
        assert all(s[b"c"] == b"relaxed/relaxed" and b"l" not in s for s in found)
        # On top; below them, what was sent, under our Received: header.
        assert content.startswith(b"DKIM-Signature: ")
        if sent[recipient].isascii():
            assert content.endswith(sent[recipient])
        else:
            # Converted before signing (RFC 6376 §5.3): no 7-bit relay can break it.
            assert content.isascii()
            assert b"\r\nContent-Transfer-Encoding: quoted-printable\r\n" in content
            assert b"caf=C3=A9 =E2=98=83 8-bit text" in content
        every_signature_verifies(content, dnsfunc)
        assert dkim.verify(content, dnsfunc=dnsfunc)

    queue = pipeline.process("queue")
    queue.wait_metric("mailyard_queue_dkim_signed_total", 3, 10, domain="sender.test")
    assert queue.metric("mailyard_queue_dkim_unsigned_total") == 0


def test_mail_from_a_domain_without_a_key_arrives_unsigned_and_is_counted(
    pipeline_factory: Callable[..., Pipeline], dns_server: TestDnsServer, tmp_path: Path
) -> None:
    rsa_key = keygen(tmp_path, "sender.test", "rsa", dns_server)
    pipeline = pipeline_factory(overrides={"dkim": {"keys": [rsa_key.config()]}})
    queue = pipeline.process("queue")
    # The series are there before the first message.
    assert queue.metric("mailyard_queue_dkim_signed_total", domain="sender.test") == 0
    assert queue.metric("mailyard_queue_dkim_unsigned_total", reason="no_key") == 0

    unsigned = message("no key for this From", sender="app@unsigned.test")
    code, text = pipeline.send("app@sender.test", ["someone@alpha.test"], unsigned)
    assert code == 250, text
    signed = message("a key for this one")
    code, text = pipeline.send("app@sender.test", ["someone@beta.test"], signed)
    assert code == 250, text
    received = pipeline.sink.wait_for(lambda m: len(m) == 2, 30, "both messages")

    by_recipient = {m.recipients[0]: m.content for m in received}
    assert signatures(by_recipient["someone@alpha.test"]) == []
    assert by_recipient["someone@alpha.test"].endswith(unsigned)
    every_signature_verifies(by_recipient["someone@beta.test"], txt_from(dns_server))
    queue.wait_metric("mailyard_queue_dkim_unsigned_total", 1, 10, reason="no_key")
    assert queue.metric("mailyard_queue_dkim_unsigned_total", reason="no_from") == 0
    assert queue.metric("mailyard_queue_dkim_unsigned_total", reason="error") == 0
    queue.wait_metric("mailyard_queue_dkim_signed_total", 1, 10, domain="sender.test")


def test_a_missing_key_file_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    config = tmp_path / "mailyard.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "broker": {"url": "embedded", "spool_dir": str(tmp_path / "spool")},
                "ingress": {"listen": [{"host": "127.0.0.1", "port": free_port()}]},
                "metrics": {"host": "127.0.0.1", "port": free_port()},
                "dkim": {
                    "keys": [{"domain": "sender.test", "selector": "s1", "key_file": str(missing)}]
                },
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mailyard", "all", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"mailyard: dkim.keys[0].key_file: cannot read {missing}" in result.stderr
