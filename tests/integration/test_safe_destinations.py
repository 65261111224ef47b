"""Delivery never connects where a mail server must not be: the default list, and itself."""

from __future__ import annotations

import time

from tests.support.pipeline import SENDER, Pipeline, message


def dsn_for(pipeline: Pipeline, recipient: str) -> bytes:
    pipeline.sink.wait_for(lambda m: any(x.host == SENDER for x in m), 30, "the DSN")
    [dsn] = pipeline.sink.received(lambda m: m.host == SENDER)
    assert f"Final-Recipient: rfc822; {recipient}".encode() in dsn.content
    return dsn.content


def test_with_the_default_list_nothing_on_loopback_is_connected_to(pipeline_factory) -> None:
    # The sinks listen on 127.0.0.x: with the default prohibited_networks
    # (loopback included) delivery must refuse them all, permanently.
    pipeline = pipeline_factory(overrides={"delivery": {"prohibited_networks": None}})
    code, _ = pipeline.send("", ["someone@alpha.test"], message("to loopback"))
    assert code == 250
    delivery = pipeline.process("delivery")
    delivery.wait_metric("mailyard_delivery_recipients_total", 1, 20, outcome="failed")
    time.sleep(0.5)
    assert pipeline.sink.rcpt_attempts == {}  # not even a connection got as far as RCPT
    assert delivery.metric("mailyard_delivery_sessions_opened_total") == 0
    assert delivery.metric("mailyard_delivery_route_failures_total", kind="prohibited") == 1


def test_cloud_metadata_and_private_networks_are_never_tried(pipeline: Pipeline) -> None:
    code, _ = pipeline.send("app@sender.test", ["x@metadata.test"], message("metadata"))
    assert code == 250
    dsn = dsn_for(pipeline, "x@metadata.test")
    assert b"Status: 5.4.4" in dsn
    assert b"169.254.169.254" in dsn


def test_a_private_mx_is_skipped_for_the_next_public_one(pipeline: Pipeline) -> None:
    # mx.private (10.1.2.3) is preferred, mx.alpha (loopback, allowed here) is next.
    code, _ = pipeline.send("app@sender.test", ["y@private.test"], message("private first"))
    assert code == 250
    [received] = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "delivery via mx.alpha")
    assert received.recipients == ("y@private.test",)


def test_an_mx_that_is_our_own_hostname_is_a_loop(pipeline: Pipeline) -> None:
    code, _ = pipeline.send("app@sender.test", ["z@loop.test"], message("loop"))
    assert code == 250
    assert b"Status: 5.4.6" in dsn_for(pipeline, "z@loop.test")
