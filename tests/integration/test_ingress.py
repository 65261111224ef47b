"""ingress over a real socket: relay control, limits, replies, start-up checks."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import uuid

import pytest

from tests.support.broker import delete_topology
from tests.support.pipeline import Pipeline, message, wait_until
from tests.support.processes import REPO, free_port


@pytest.fixture
def outside(pipeline_factory) -> Pipeline:
    """A pipeline where our loopback client is NOT in relay_networks."""
    return pipeline_factory(overrides={"ingress": {"relay_networks": ["192.0.2.0/24"]}})


@pytest.mark.parametrize(
    ("recipient", "refusal"),
    [
        ("<someone@alpha.test>", (554, b"5.7.1")),
        ("<user%alpha.test@bounces.test>", (554, b"5.7.1")),
        ("<alpha.test!user@bounces.test>", (554, b"5.7.1")),
        ('<"user@alpha.test"@bounces.test>', (554, b"5.7.1")),
        ("<@bounces.test:user@alpha.test>", (554, b"5.7.1")),
        ("<@alpha.test,@beta.test:user@gamma.test>", (554, b"5.7.1")),
        ("<user@[127.0.0.2]>", (554, b"5.7.1")),
        ("<USER@ALPHA.TEST>", (554, b"5.7.1")),
        ("user@alpha.test", (554, b"5.7.1")),
        # Not even an address: a syntax error, whoever sends it.
        ("<user@bounces.test.>", (501, b"5.1.3")),
    ],
)
def test_outside_clients_cannot_relay(
    outside: Pipeline, recipient: str, refusal: tuple[int, bytes]
) -> None:
    with outside.smtp() as client:
        assert client.mail("someone@internet.example")[0] == 250
        code, text = client.docmd(f"RCPT TO:{recipient}")
        assert (code, text[:5]) == refusal, text
        code, text = client.docmd("DATA")
        assert code == 503, "DATA must be refused when no recipient was accepted"
    assert outside.sink.received() == []


def test_outside_clients_may_send_to_local_domains(outside: Pipeline) -> None:
    code, text = outside.send("", ["Bounce+123@BOUNCES.test"], message("async bounce"))
    assert code == 250, text
    outside.process("bounce").wait_metric("mailyard_bounce_local_messages_total", 1, timeout=20)
    rejected = outside.process("ingress").metric(
        "mailyard_ingress_rejected_total", reason="relay_denied"
    )
    assert rejected == 0


def test_outside_clients_get_bare_lf_refused(outside: Pipeline) -> None:
    code, text = outside.send(
        "", ["x@bounces.test"], b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<a@b>\r\n"
    )
    assert (code, text[:5]) == (550, b"5.6.0")


def test_size_is_advertised_and_enforced(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"ingress": {"max_message_size": 10_000}})
    with pipeline.smtp() as client:
        assert client.esmtp_features["size"] == "10000"
        assert client.has_extn("enhancedstatuscodes")
        assert client.has_extn("pipelining")
        code, text = client.docmd("MAIL FROM:<a@sender.test> SIZE=20000")
        assert (code, text[:5]) == (552, b"5.3.4"), text
        assert client.mail("a@sender.test")[0] == 250
        assert client.rcpt("big@alpha.test")[0] == 250
        code, text = client.data(message("big", "x" * 76 + "\r\n") * 200)
        assert (code, text[:5]) == (552, b"5.3.4"), text
    assert pipeline.sink.received() == []


def test_pipelined_commands_get_replies_in_order(pipeline: Pipeline) -> None:
    with socket.create_connection(("127.0.0.1", pipeline.ingress_port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"EHLO client.test\r\n")
        stream.flush()
        while not stream.readline().startswith(b"250 "):
            pass
        stream.write(
            b"MAIL FROM:<app@sender.test>\r\nRCPT TO:<p1@alpha.test>\r\n"
            b"RCPT TO:<p2@nowhere.invalid>\r\nRCPT TO:<p3@alpha.test>\r\nDATA\r\n"
        )
        stream.flush()
        replies = [stream.readline()[:9] for _ in range(5)]
        assert replies == [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5", b"250 2.1.5", b"354 End d"]
        stream.write(message("pipelined") + b".\r\nQUIT\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 2.0.0 Ok: queued as ")
    pipeline.sink.wait_for(
        lambda m: {"p1@alpha.test", "p3@alpha.test"} <= {r for x in m for r in x.recipients},
        20,
        "pipelined message",
    )


def test_too_many_recipients_and_bad_addresses(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"ingress": {"max_recipients": 2}})
    with pipeline.smtp() as client:
        assert client.mail("app@sender.test")[0] == 250
        code, text = client.docmd("RCPT TO:<no-domain>")
        assert (code, text[:5]) == (501, b"5.1.3"), text
        assert client.rcpt("one@alpha.test")[0] == 250
        assert client.rcpt("two@alpha.test")[0] == 250
        code, text = client.rcpt("three@alpha.test")
        assert (code, text[:5]) == (452, b"4.5.3")
        code, text = client.docmd("MAIL FROM:<again@sender.test>")
        assert (code, text[:5]) == (503, b"5.5.1"), text


def test_session_cap_answers_421(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"ingress": {"max_connections": 2}})
    first, second = pipeline.smtp(), pipeline.smtp()
    try:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", pipeline.ingress_port, timeout=10)
        assert refused.value.smtp_code == 421
    finally:
        first.quit()
        second.quit()
    pipeline.smtp().quit()  # room again once they left


def test_received_header_and_queue_id(pipeline: Pipeline) -> None:
    code, text = pipeline.send("app@sender.test", ["trace@alpha.test"], message("trace"))
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[-1]
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    header = received.content.split(b"\r\n\r\n")[0].decode()
    assert header.startswith("Received: from client.test ([127.0.0.1])\r\n\tby mx.mailyard.test")
    assert f"with ESMTP id {queue_id}" in header
    assert "for <trace@alpha.test>;" in header


def test_health_endpoints(pipeline: Pipeline) -> None:
    process = pipeline.process("ingress")
    assert process.get("/healthz") == (200, "ok\n")
    status, body = process.get("/readyz")
    assert status == 200
    assert sorted(body.split()) == sorted(
        ["ingress", "ok", "queue", "ok", "delivery", "ok", "bounce", "ok", "monitor", "ok"]
    )
    status, metrics = process.get("/metrics")
    assert status == 200
    assert "mailyard_broker_connected" in metrics
    assert 'mailyard_build_info{services="ingress,queue,delivery,bounce,monitor"' in metrics


@pytest.mark.adapters("rabbitmq")
def test_queue_depths_and_consumers_are_exported(pipeline_factory) -> None:
    pipeline = pipeline_factory(split=True, overrides={"metrics": {"queue_poll_interval": "200ms"}})
    ingress = pipeline.process("ingress")
    ingress.wait_metric("mailyard_broker_queue_consumers", 1, 10, queue="delivery")
    assert ingress.metric("mailyard_broker_queue_consumers", queue="parking") == 0
    # With delivery gone, its queue has no consumer and the backlog shows.
    pipeline.processes["delivery"].terminate()
    wait_until(
        lambda: ingress.metric("mailyard_broker_queue_consumers", queue="delivery") == 0,
        10,
        "the delivery consumer to disappear",
    )
    for index in range(3):
        pipeline.send("app@sender.test", [f"q{index}@alpha.test"], message("backlog"))
    ingress.wait_metric("mailyard_broker_queue_messages", 3, 10, queue="delivery")


def test_jobs_waiting_on_the_retry_ladder_show_in_the_queue_depths(pipeline_factory) -> None:
    pipeline = pipeline_factory(
        overrides={
            "metrics": {"queue_poll_interval": "200ms"},
            "queue": {"retry_delays": ["1h"]},
        }
    )
    pipeline.sink.script.rcpt_always["later@alpha.test"] = "451 4.7.1 Try again later"
    code, _ = pipeline.send("app@sender.test", ["later@alpha.test"], message("waits"))
    assert code == 250
    process = pipeline.process("ingress")
    process.wait_metric("mailyard_broker_queue_messages", 1, 20, queue="retry.1h")
    assert process.metric("mailyard_broker_queue_messages", queue="delivery") == 0
    process.wait_metric("mailyard_broker_queue_consumers", 1, 10, queue="delivery")
    assert process.metric("mailyard_broker_queue_consumers", queue="parking") == 0


def test_start_up_fails_plainly_when_the_broker_cannot_hold_max_message_size(
    broker: str, tmp_path
) -> None:
    # RabbitMQ 3.x refuses messages over 128 MiB, 4.x over 16 MiB by default.
    config = tmp_path / "big.yaml"
    prefix = f"sizecheck{uuid.uuid4().hex[:8]}"
    config.write_text(
        f"broker: {{url: '{broker}', prefix: {prefix}}}\n"
        f"ingress: {{listen: [{{host: 127.0.0.1, port: {free_port()}}}], "
        "max_message_size: 140000000}\n"
        f"metrics: {{host: 127.0.0.1, port: {free_port()}}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mailyard", "ingress", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )
    delete_topology(config)
    assert result.returncode == 1, result.stdout
    assert "ingress.max_message_size is 140000000 bytes" in result.stdout
    assert "max_message_size in rabbitmq.conf" in result.stdout


@pytest.fixture
def behind_proxy(pipeline_factory) -> Pipeline:
    """ingress behind a load balancer on loopback that sends PROXY headers."""
    return pipeline_factory(
        overrides={
            "ingress": {
                "relay_networks": ["127.0.0.0/8"],
                "proxy_protocol": {"enabled": True, "trusted_networks": ["127.0.0.0/8"]},
            }
        }
    )


def _through_proxy(pipeline: Pipeline, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", pipeline.ingress_port), timeout=10)
    sock.sendall(f"PROXY TCP4 {source} 127.0.0.1 40000 25\r\n".encode())
    return sock


def test_proxy_protocol_source_address_decides_relay(behind_proxy: Pipeline) -> None:
    # Relayed from 203.0.113.7 (outside relay_networks), though the TCP peer is loopback.
    with _through_proxy(behind_proxy, "203.0.113.7") as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"EHLO lb.test\r\n")
        stream.flush()
        while not stream.readline().startswith(b"250 "):
            pass  # the EHLO reply: PIPELINING is offered from here on
        stream.write(b"MAIL FROM:<x@internet.example>\r\nRCPT TO:<a@alpha.test>\r\n")
        stream.write(b"RCPT TO:<b@bounces.test>\r\nDATA\r\n")
        stream.flush()
        replies = [stream.readline()[:9] for _ in range(4)]
        assert replies == [b"250 2.1.0", b"554 5.7.1", b"250 2.1.5", b"354 End d"]
        stream.write(b"Subject: via proxy\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 2.0.0")
    ingress = behind_proxy.process("ingress")
    ingress.wait_metric("mailyard_bounce_local_messages_total", 1, 20)
    assert "203.0.113.7" in ingress.logs()


def test_proxy_protocol_required_when_enabled(behind_proxy: Pipeline) -> None:
    with socket.create_connection(("127.0.0.1", behind_proxy.ingress_port), timeout=10) as sock:
        sock.sendall(b"EHLO direct.test\r\n")
        assert sock.recv(100) == b""  # no PROXY header: hung up, no greeting


def test_proxy_header_from_an_untrusted_peer_is_refused(pipeline_factory) -> None:
    pipeline = pipeline_factory(
        overrides={
            "ingress": {"proxy_protocol": {"enabled": True, "trusted_networks": ["192.0.2.0/24"]}}
        }
    )
    with _through_proxy(pipeline, "127.0.0.1") as sock:
        assert sock.recv(100) == b""  # a forged source: hung up
    assert (
        pipeline.process("ingress").metric(
            "mailyard_ingress_rejected_total", reason="untrusted_proxy"
        )
        == 1
    )


def test_probe_command_gets_its_250_from_a_local_domain(pipeline: Pipeline) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "mailyard", "probe", "--host", "127.0.0.1",
            "--port", str(pipeline.ingress_port), "--to", "postmaster@bounces.test",
        ],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    pipeline.process("bounce").wait_metric("mailyard_bounce_local_messages_total", 1, 20)


def test_probe_command_fails_on_a_refusal(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"ingress": {"relay_networks": ["192.0.2.0/24"]}})
    result = subprocess.run(
        [
            sys.executable, "-m", "mailyard", "probe", "--port", str(pipeline.ingress_port),
            "--to", "someone@alpha.test",
        ],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "services"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "probe refused at RCPT: 554 5.7.1" in result.stderr
