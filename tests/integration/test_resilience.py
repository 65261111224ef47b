"""Nothing lost: broker outages, crashes, poison messages, shutdowns."""

from __future__ import annotations

import signal
import time

import pytest

from mailyard.v1 import message_pb2 as pb
from tests.support.broker import rabbitmqctl, wait_reachable
from tests.support.pipeline import Pipeline, message, wait_until


@pytest.mark.adapters("rabbitmq")
def test_broker_outage_gives_4xx_never_250_and_mail_flows_again(pipeline: Pipeline) -> None:
    ingress = pipeline.process("ingress")
    code, _ = pipeline.send("app@sender.test", ["before@alpha.test"], message("before"))
    assert code == 250

    client = pipeline.unfinished("app@sender.test", "during@alpha.test", message("during"))
    try:
        rabbitmqctl("stop_app")
        # The broker went away mid-DATA: the end of data must not get a 250.
        client.send(b"\r\n.\r\n")
        code, text = client.getreply()
        assert 400 <= code < 500, (code, text)
        assert text.startswith(b"4.3.0"), text
        client.quit()

        # New mail is refused at MAIL FROM while the broker is away.
        with pipeline.smtp() as second:
            code, text = second.mail("app@sender.test")
            assert (code, text[:5]) == (451, b"4.3.0")
        assert ingress.get("/readyz")[0] == 503
        assert ingress.metric("mailyard_ingress_rejected_total", reason="broker_unavailable") >= 2
    finally:
        rabbitmqctl("start_app")
        wait_reachable()

    wait_until(ingress.is_ready, 60, "ingress ready again after the broker came back")
    code, text = pipeline.send("app@sender.test", ["after@alpha.test"], message("after"))
    assert code == 250, text
    pipeline.sink.wait_for(
        lambda m: {"before@alpha.test", "after@alpha.test"} <= {r for x in m for r in x.recipients},
        60,
        "mail accepted before and after the outage",
    )
    assert "during@alpha.test" not in pipeline.sink.deliveries()


def test_sigkill_of_delivery_mid_run_loses_nothing(pipeline_factory) -> None:
    """Split services on RabbitMQ; the one process of the embedded spool."""
    pipeline = pipeline_factory(split=True)
    pipeline.sink.script.data_delay = 0.1  # slow enough to kill it mid-run
    count = 300
    with pipeline.smtp() as client:
        for index in range(count):
            client.sendmail("app@sender.test", [f"k{index}@alpha.test"], message(f"kill {index}"))

    pipeline.sink.wait_for(lambda m: len(m) >= 40, 60, "delivery under way")
    delivery = pipeline.process("delivery")
    delivery.kill()
    delivered_before_restart = len(pipeline.sink.received())
    assert delivered_before_restart < count, "delivery finished before it was killed"

    delivery.start().wait_ready()
    pipeline.sink.wait_for(
        lambda m: len({r for x in m for r in x.recipients}) == count, 120, "every recipient"
    )
    copies = pipeline.sink.deliveries()
    assert set(copies) == {f"k{i}@alpha.test" for i in range(count)}
    duplicates = sum(n - 1 for n in copies.values())
    # Only jobs in flight at the kill can be delivered twice, and each of
    # those was counted as a possible duplicate when it came back.
    assert duplicates <= delivery.metric("mailyard_delivery_possible_duplicates_total")


def test_garbage_on_work_queues_is_parked_and_work_goes_on(pipeline: Pipeline) -> None:
    prefix = pipeline.prefix
    pipeline.inject_many(
        [
            ("delivery", b"\x00\xffnot protobuf at all", {}),
            ("inbound", b"\x08\x96\x01garbage", {"type": "mailyard.v1.AcceptedMessage"}),
            (
                "bounce",
                pb.DeliveryEvent().SerializeToString(),
                {"type": "mailyard.v1.DeliveryEvent"},
            ),
        ]
    )

    process = pipeline.process("queue")
    process.wait_metric("mailyard_parked_total", 3, timeout=20)
    parked = pipeline.parked()
    reasons = sorted(m.headers["x-mailyard-park-reason"] for m in parked)
    assert len(reasons) == 3
    assert all(reason.startswith("undecodable: ") for reason in reasons), reasons
    assert any("type property is None" in r for r in reasons)
    assert any("no kind" in r for r in reasons)
    assert {m.headers["x-mailyard-parked-from"] for m in parked} == {
        f"{prefix}.delivery",
        f"{prefix}.inbound",
        f"{prefix}.bounce",
    }

    code, _ = pipeline.send("app@sender.test", ["still@alpha.test"], message("still working"))
    assert code == 250
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "normal mail after the garbage")


def test_addresses_with_line_breaks_are_parked_not_used(pipeline: Pipeline) -> None:
    """A queue is not trusted: a CR/LF in an address would inject SMTP or headers."""
    event = pb.DeliveryEvent(
        kind=pb.EVENT_KIND_FAILED,
        message_id="X",
        queue_id="X.1",
        mail_from="evil\r\nBcc: victim@alpha.test",
        results=[pb.RecipientResult(recipient="a@alpha.test", reply=pb.SmtpReply(code=550))],
    )
    pipeline.inject("bounce", event.SerializeToString(), type="mailyard.v1.DeliveryEvent")
    pipeline.process("bounce").wait_metric(
        "mailyard_parked_total", 1, timeout=20, reason="undecodable"
    )
    [parked] = pipeline.parked()
    assert "unsafe address" in parked.headers["x-mailyard-park-reason"]
    time.sleep(1)
    assert pipeline.sink.received() == []


def test_a_message_that_keeps_crashing_its_consumer_is_parked(pipeline_factory) -> None:
    pipeline = pipeline_factory(overrides={"broker": {"delivery_limit": 3}})
    # Well-formed protobuf, but its arrival date (year 10000) is beyond what the
    # DSN writer can format: the handler fails on it every time. After the
    # deliveries the broker allows, it must be parked, not loop forever.
    event = pb.DeliveryEvent(
        kind=pb.EVENT_KIND_FAILED,
        message_id="X",
        queue_id="X.1",
        mail_from="app@sender.test",
        results=[pb.RecipientResult(recipient="a@alpha.test", reply=pb.SmtpReply(code=550))],
    )
    event.received_at.seconds = 253402300800
    pipeline.inject("bounce", event.SerializeToString(), type="mailyard.v1.DeliveryEvent")
    bounce = pipeline.process("bounce")
    bounce.wait_metric("mailyard_parked_total", 1, timeout=30, reason="handler_error")
    [parked] = pipeline.parked()
    assert parked.headers["x-mailyard-park-reason"].startswith("handler kept failing")
    assert bounce.metric("mailyard_broker_consumed_total", outcome="requeued") == 2
    # The service is still consuming.
    code, _ = pipeline.send("app@sender.test", ["after@alpha.test"], message("after poison"))
    assert code == 250
    pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "mail after the poison message")


def test_sigterm_finishes_in_flight_delivery_and_exits_0(pipeline: Pipeline) -> None:
    pipeline.sink.script.data_delay = 2.0
    code, _ = pipeline.send("app@sender.test", ["slow@alpha.test"], message("slow"))
    assert code == 250
    wait_until(lambda: pipeline.sink.rcpt_attempts["slow@alpha.test"] >= 1, 10, "delivery start")
    started = time.monotonic()
    process = pipeline.process("delivery")
    assert process.terminate(timeout=30) == 0
    assert pipeline.sink.deliveries() == {"slow@alpha.test": 1}
    assert time.monotonic() - started >= 1.0  # it waited for the transaction
    assert process.logged(msg="stopped"), process.logs()


def test_sigterm_lets_a_transaction_finish_and_sends_idle_clients_away(
    pipeline: Pipeline,
) -> None:
    idle = pipeline.smtp()
    busy = pipeline.unfinished("app@sender.test", "shutdown@alpha.test", message("stopping"))

    process = pipeline.process("ingress")
    assert process.process is not None
    process.process.send_signal(signal.SIGTERM)
    code, text = idle.getreply()  # unsolicited: the server is going away
    assert (code, text[:5]) == (421, b"4.3.2")

    busy.send(b"\r\n.\r\n")
    code, text = busy.getreply()
    idle.close()
    busy.close()
    assert code == 250, text
    assert process.terminate(timeout=30) == 0

    # It was stored before the 250: a restarted pipeline delivers it.
    process.start().wait_ready()
    pipeline.sink.wait_for(lambda m: len(m) == 1, 30, "the message accepted during shutdown")
