"""Listener roles, TLS and AUTH over real sockets: Python's ssl client and swaks.

Ingress behaves the same on either broker; these run on the embedded spool.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from mailyard.ingress.auth import hash_password
from tests.support.certificates import TlsFiles, make_tls_files, serial_of
from tests.support.pipeline import Pipeline
from tests.support.processes import REPO, free_port
from tests.support.smtp_client import Raw

pytestmark = pytest.mark.adapters("embedded")

PASSWORD = "correct horse battery staple"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.fixture(scope="module")
def users_yaml() -> str:
    hashed = hash_password(PASSWORD)
    return yaml.safe_dump(
        {
            "app": {"password": hashed, "sender_domains": ["sender.test"]},
            "anyone": {"password": hashed},
            "news": {"password": hashed, "class": "bulk"},
        }
    )


class Secure:
    def __init__(self, pipeline: Pipeline, tls: TlsFiles, ports: dict[str, int]) -> None:
        self.pipeline = pipeline
        self.tls = tls
        self.ports = ports

    def connect(self, role: str, **options: object) -> Raw:
        if role == "submissions":
            return Raw(self.ports[role], tls=self.tls.client_context(), **options)  # type: ignore[arg-type]
        return Raw(self.ports[role], **options)  # type: ignore[arg-type]

    def submission(self) -> Raw:
        raw = self.connect("submission")
        raw.ehlo()
        raw.starttls(self.tls.client_context())
        raw.ehlo()
        return raw


@pytest.fixture
def secure(pipeline_factory, tmp_path: Path, users_yaml: str) -> Secure:
    tls = make_tls_files(tmp_path / "tls")
    users = tmp_path / "users.yaml"
    users.write_text(users_yaml)
    ports = {role: free_port() for role in ("mx", "submission", "submissions")}
    pipeline = pipeline_factory(
        overrides={
            "ingress": {
                "listen": [
                    {"host": "127.0.0.1", "port": port, "role": role}
                    for role, port in ports.items()
                ],
                "tls": {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)},
                "auth": {"users_file": str(users)},
                "limits": {"auth_failures": 3},
            }
        }
    )
    return Secure(pipeline, tls, ports)


def keywords(reply) -> set[str]:
    return {line.split(" ")[0] for line in reply.lines[1:]}


def test_mx_offers_starttls_and_auth_only_after_it(secure: Secure) -> None:
    with secure.connect("mx") as raw:
        before = keywords(raw.ehlo())
        assert "STARTTLS" in before
        assert "AUTH" not in before
        raw.starttls(secure.tls.client_context())
        # RFC 3207: the session starts anew; EHLO again before anything else.
        reply = raw.cmd("MAIL FROM:<a@sender.test>")
        assert (reply.code, reply.status) == (503, "5.5.1")
        after = keywords(raw.ehlo())
        assert "AUTH" in after
        assert "STARTTLS" not in after
        version = raw.sock.version()  # type: ignore[attr-defined]
    assert version in ("TLSv1.2", "TLSv1.3")
    ingress = secure.pipeline.process("ingress")
    assert ingress.metric("mailyard_ingress_tls_sessions_total", role="mx", version=version) == 1


def test_tls_older_than_1_2_is_refused(secure: Secure) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    secure.tls.ca.configure_trust(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # which is the point
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with secure.connect("mx") as raw:
        raw.ehlo()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            raw.starttls(old)


def test_submission_requires_tls_then_auth_whatever_the_network(secure: Secure) -> None:
    # 127.0.0.1 is in relay_networks, and still must authenticate here.
    with secure.connect("submission") as raw:
        assert "AUTH" not in keywords(raw.ehlo())
        reply = raw.cmd(f"AUTH PLAIN {plain('app', PASSWORD)}")
        assert (reply.code, reply.status) == (538, "5.7.11")
        raw.starttls(secure.tls.client_context())
        assert {"AUTH"} <= keywords(raw.ehlo())
        reply = raw.cmd("MAIL FROM:<a@sender.test>")
        assert (reply.code, reply.status) == (530, "5.7.0")
        reply = raw.cmd(f"AUTH PLAIN {plain('app', 'wrong')}")
        assert (reply.code, reply.status) == (535, "5.7.8")
        reply = raw.cmd(f"AUTH PLAIN {plain('app', PASSWORD)}")
        assert reply.code == 235, reply
        reply = raw.cmd("MAIL FROM:<someone@elsewhere.test>")
        assert (reply.code, reply.status) == (553, "5.7.1")
        assert raw.cmd("MAIL FROM:<app@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<to@alpha.test>").code == 250
        assert raw.cmd("DATA").code == 354
        reply = raw.cmd(b"Subject: submitted\r\n\r\nhello\r\n.")
        assert reply.code == 250, reply
    [received] = secure.pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    header = received.content.split(b"\r\n\r\n")[0].decode()
    assert "with ESMTPSA id" in header
    assert "(using TLSv1." in header
    assert "app" not in header.split("Received:")[1].split(";")[0]  # the user is not named
    # RFC 6409 §8: what the client left out, the submission server adds.
    assert "\r\nMessage-ID: <" in header
    assert "\r\nDate: " in header
    ingress = secure.pipeline.process("ingress")
    assert ingress.logged(login="app"), ingress.logs()


def test_auth_login_and_any_sender_domain_when_none_are_listed(secure: Secure) -> None:
    with secure.submission() as raw:
        assert raw.cmd("AUTH LOGIN").code == 334
        assert raw.cmd(base64.b64encode(b"anyone").decode()).code == 334
        assert raw.cmd(base64.b64encode(PASSWORD.encode()).decode()).code == 235
        assert raw.cmd("MAIL FROM:<whoever@elsewhere.test>").code == 250


def test_the_users_file_s_class_wins_and_the_class_header_is_never_delivered(
    secure: Secure,
) -> None:
    with secure.submission() as raw:
        assert raw.cmd(f"AUTH PLAIN {plain('news', PASSWORD)}").code == 235
        assert raw.cmd("MAIL FROM:<news@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<reader@alpha.test>").code == 250
        assert raw.cmd("DATA").code == 354
        content = b"X-Mailyard-Class: transactional\r\nSubject: weekly\r\n\r\nhello\r\n."
        assert raw.cmd(content).code == 250
    [received] = secure.pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the newsletter")
    assert b"x-mailyard-class" not in received.content.lower()
    queue = secure.pipeline.process("queue")
    assert queue.logged(**{"class": "bulk", "class_by": "user"}), queue.logs()


def test_a_users_file_class_queue_classes_lacks_stops_start_up_naming_it(
    tmp_path: Path, users_yaml: str
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(users_yaml)
    config = tmp_path / "mailyard.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "broker": {"url": "embedded", "spool_dir": str(tmp_path / "spool")},
                "ingress": {
                    "listen": [{"host": "127.0.0.1", "port": free_port()}],
                    "auth": {"users_file": str(users)},
                },
                "queue": {"classes": {"transactional": 1, "news": 1}},
                "metrics": {"host": "127.0.0.1", "port": free_port()},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mailyard", "all", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        "ingress.auth.users_file: user 'news', class: unknown class 'bulk' "
        "(queue.classes has news, transactional)"
    ) in result.stderr + result.stdout


def test_implicit_tls_offers_auth_at_once(secure: Secure) -> None:
    with secure.connect("submissions") as raw:
        assert raw.greeting is not None
        assert raw.greeting.code == 220
        offered = keywords(raw.ehlo())
        assert "AUTH" in offered
        assert "STARTTLS" not in offered
        assert raw.cmd(f"AUTH PLAIN {plain('anyone', PASSWORD)}").code == 235
        assert raw.cmd("MAIL FROM:<a@b.test>").code == 250
        assert raw.cmd("RCPT TO:<via465@alpha.test>").code == 250
        assert raw.cmd("DATA").code == 354
        assert raw.cmd(b"Subject: 465\r\n\r\nhi\r\n.").code == 250
    secure.pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message over port 465")


def test_an_address_that_keeps_guessing_is_locked_out(secure: Secure) -> None:
    with secure.submission() as raw:
        for _ in range(2):
            assert raw.cmd(f"AUTH PLAIN {plain('app', 'guess')}").code == 535
        reply = raw.cmd(f"AUTH PLAIN {plain('app', 'guess')}")
        assert (reply.code, reply.status) == (421, "4.7.0")
        assert raw.closed()
    with secure.submission() as again:  # even the right password, until the window passes
        reply = again.cmd(f"AUTH PLAIN {plain('app', PASSWORD)}")
        assert (reply.code, reply.status) == (421, "4.7.0")
    ingress = secure.pipeline.process("ingress")
    assert ingress.metric("mailyard_ingress_auth_total", result="failure") == 3
    assert ingress.metric("mailyard_ingress_auth_total", result="locked_out") == 1
    logs = ingress.logs()
    assert "guess" not in logs
    assert PASSWORD not in logs
    assert plain("app", "guess") not in logs


def test_commands_injected_behind_starttls_have_no_effect(secure: Secure) -> None:
    """CVE-2024-34083-style: what was pipelined in clear after STARTTLS is dropped."""
    with secure.connect("mx") as raw:
        raw.ehlo()
        raw.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<x@alpha.test>\r\n")
        assert raw.reply().code == 220
        raw.sock = secure.tls.client_context().wrap_socket(
            raw.sock, server_hostname="mx.mailyard.test"
        )
        raw.ehlo()
        reply = raw.cmd("RCPT TO:<x@alpha.test>")
        assert (reply.code, reply.status) == (503, "5.5.1")  # no MAIL survived the handshake


def test_a_renewed_certificate_reaches_new_sessions_without_a_restart(secure: Secure) -> None:
    def presented() -> int:
        with secure.connect("submissions") as raw:
            der = raw.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        return serial_of(der)

    first = presented()
    held = secure.submission()  # a session that stays open across the renewal
    renewed = secure.tls.renew()
    assert renewed != first
    time.sleep(1.5)  # the files are checked at most once a second
    assert presented() == renewed
    assert held.cmd("NOOP").code == 250  # the old session was not dropped
    held.close()
    ingress = secure.pipeline.process("ingress")
    assert ingress.metric("mailyard_file_reloads_total", key="ingress.tls", result="ok") >= 1


SWAKS = shutil.which("swaks")


def test_swaks_starttls_and_auth_on_submission(secure: Secure) -> None:
    if SWAKS is None:
        if os.environ.get("CI"):
            pytest.fail("swaks is not installed; .ci/run installs it")
        pytest.skip("swaks is not installed")
    result = subprocess.run(
        [
            SWAKS, "--server", f"127.0.0.1:{secure.ports['submission']}", "--tls",
            "--tls-verify", "--tls-ca-path", str(secure.tls.ca_file),
            "--auth", "PLAIN", "--auth-user", "app", "--auth-password", PASSWORD,
            "--from", "app@sender.test", "--to", "swaks@alpha.test",
            "--header", "Subject: from swaks",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout
    secure.pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message swaks sent")


def test_a_missing_certificate_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "mailyard.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "broker": {"url": "embedded", "spool_dir": str(tmp_path / "spool")},
                "ingress": {
                    "listen": [{"host": "127.0.0.1", "port": free_port()}],
                    "tls": {"cert_file": str(tmp_path / "nope.crt"), "key_file": "nope.key"},
                },
                "metrics": {"host": "127.0.0.1", "port": free_port()},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mailyard", "all", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "ingress.tls.cert_file" in result.stdout + result.stderr


def test_on_mx_an_outsider_relays_only_after_auth(
    pipeline_factory, tmp_path: Path, users_yaml: str
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    users = tmp_path / "users.yaml"
    users.write_text(users_yaml)
    pipeline = pipeline_factory(
        overrides={
            "ingress": {
                "relay_networks": ["192.0.2.0/24"],  # loopback is an outsider
                "tls": {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)},
                "auth": {"users_file": str(users)},
                "limits": {"greeting_delay": "0s"},
            }
        }
    )
    with Raw(pipeline.ingress_port) as raw:
        raw.ehlo()
        raw.starttls(tls.client_context())
        raw.ehlo()
        assert raw.cmd("MAIL FROM:<app@sender.test>").code == 250
        reply = raw.cmd("RCPT TO:<x@alpha.test>")
        assert (reply.code, reply.status) == (554, "5.7.1")
        assert raw.cmd("RSET").code == 250
        assert raw.cmd(f"AUTH PLAIN {plain('app', PASSWORD)}").code == 235
        assert raw.cmd("MAIL FROM:<app@sender.test>").code == 250
        assert raw.cmd("RCPT TO:<x@alpha.test>").code == 250


def test_a_client_that_never_finishes_the_handshake_is_dropped(
    pipeline_factory, tmp_path: Path, users_yaml: str
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    users = tmp_path / "users.yaml"
    users.write_text(users_yaml)
    port = free_port()
    pipeline = pipeline_factory(
        overrides={
            "ingress": {
                "listen": [{"host": "127.0.0.1", "port": port, "role": "submissions"}],
                "tls": {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)},
                "auth": {"users_file": str(users)},
                "limits": {"tls_handshake_timeout": "1s"},
            }
        }
    )
    with Raw(port, greet=False) as raw:  # a TCP connection that says nothing at all
        started = time.monotonic()
        assert raw.closed(wait=5)
        assert time.monotonic() - started < 4
    ingress = pipeline.process("ingress")
    assert ingress.metric("mailyard_ingress_limit_hits_total", reason="tls_handshake_timeout") == 1
