"""The queue's VERP return paths and the original sender it records."""

from __future__ import annotations

from mailyard import verp
from mailyard.delivery.attempt import envelope_of
from mailyard.queue.returnpath import ReturnPaths, with_envelope_from
from mailyard.v1 import message_pb2 as pb


def test_return_paths_sign_with_the_secret_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32 + b"\n")
    paths = ReturnPaths("bounces.example.com", secret)
    address = paths("01JAXW3M6B7Q8R9S0T1V2W3X4Y", "jane@example.org")
    local, _, domain = address.rpartition("@")
    assert domain == "bounces.example.com"
    assert verp.parse(verp.Keyring((b"s" * 32,)), local) == verp.Verp(
        "jane@example.org", None, None, 0
    )


def test_an_id_that_is_none_of_ours_keeps_the_sender_as_given(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32 + b"\n")
    paths = ReturnPaths("bounces.example.com", secret)
    # The hashed form carries the message id: it must be one ingress made.
    assert paths("not-an-id", "Upper.Case@example.org") == ""
    assert paths("not-an-id", "plain@example.org").startswith("b-")


def test_the_original_sender_goes_on_top():
    content = b"Received: x\r\nX-Mailyard-Envelope-From: <forged@evil.example>\r\n\r\nbody\r\n"
    assert with_envelope_from(content, "app@sender.example") == (
        b"X-Mailyard-Envelope-From: <app@sender.example>\r\n" + content
    )
    assert with_envelope_from(content, "") == content


def test_delivery_sends_the_return_path_at_mail_from():
    job = pb.DeliveryJob(mail_from="app@sender.example", recipients=["jane@example.org"])
    assert envelope_of(job).mail_from == "app@sender.example"
    job.return_path = "b-xxxxxxxx-jane=example.org@bounces.example.com"
    assert envelope_of(job).mail_from == job.return_path
