"""Message classes and lanes end to end: a bulk flood never holds transactional mail back.

Real RabbitMQ (or the embedded spool), real aiosmtpd sinks on loopback: alpha.test
answers DATA after half a second (a slow destination, 20 sessions at most), gamma.test
at once.
"""

from __future__ import annotations

import asyncio
import time

import aiosmtplib

from tests.support.pipeline import ALPHA, Pipeline, message, wait_until

FLOOD_MESSAGES, FLOOD_RECIPIENTS = 100, 50  # 5,000 bulk deliveries to alpha.test
SLOW = 0.5  # seconds alpha.test takes to answer DATA
# Generous for a shared CI machine; without lanes these would wait out the flood,
# 5,000 jobs at 40 a second: two minutes.
WITHIN = 3.0


def flood_overrides() -> dict[str, object]:
    return {
        "queue": {
            # One recipient a job: each flood message is 50 deliveries (50 transactions).
            "max_recipients_per_job": 1,
            "sender_classes": {"campaigns.test": "bulk"},
        },
        # Stop quickly at the end: the flood is left on the broker, not waited for.
        "shutdown_grace": "3s",
    }


def send_flood(pipeline: Pipeline) -> None:
    async def client(first: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=pipeline.ingress_port, timeout=60)
        await smtp.connect()
        try:
            for index in range(first, FLOOD_MESSAGES, 4):
                recipients = [
                    f"r{index * FLOOD_RECIPIENTS + n}@alpha.test" for n in range(FLOOD_RECIPIENTS)
                ]
                errors, _ = await smtp.sendmail(
                    "news@campaigns.test", recipients, message(f"campaign {index}")
                )
                assert not errors, errors
        finally:
            await smtp.quit()

    async def clients() -> None:
        await asyncio.gather(*(client(n) for n in range(4)))

    asyncio.run(clients())


def test_transactional_mail_passes_a_bulk_flood_to_a_slow_destination(pipeline_factory) -> None:
    pipeline: Pipeline = pipeline_factory(overrides=flood_overrides())
    sink = pipeline.sink
    sink.script.data_delay_by_host[ALPHA] = SLOW

    def bulk() -> int:
        return len(sink.received(lambda m: m.mail_from == "news@campaigns.test"))

    send_flood(pipeline)
    # The flood is split and in its lane, every slot of delivery busy with it.
    wait_until(lambda: bulk() >= 40, 30, "the flood flowing")
    backlog = FLOOD_MESSAGES * FLOOD_RECIPIENTS - bulk()

    waits: dict[str, float] = {}
    for n in range(5):
        for domain in ("alpha.test", "gamma.test"):
            recipient = f"t{n}@{domain}"
            assert pipeline.send("app@sender.test", [recipient], message("reset"))[0] == 250
            accepted = time.monotonic()
            sink.wait_for(
                lambda got, r=recipient: any(r in m.recipients for m in got),
                30,
                f"the transactional message to {recipient}",
            )
            arrived = next(m for m in sink.received() if recipient in m.recipients)
            waits[recipient] = arrived.at - accepted

    slow = {r: round(w, 2) for r, w in waits.items() if w > WITHIN}
    assert not slow, f"held back behind the flood: {slow} (all: {waits})"
    # They passed a real backlog, and bulk was still being sent meanwhile.
    assert backlog > 4000
    assert bulk() < FLOOD_MESSAGES * FLOOD_RECIPIENTS
    flowing = bulk()
    wait_until(lambda: bulk() > flowing, 10, "bulk still flowing")


def test_the_class_header_picks_the_lane_and_never_reaches_the_recipient(
    pipeline: Pipeline,
) -> None:
    content = b"X-Mailyard-Class: bulk\r\n" + message("newsletter")
    assert pipeline.send("app@sender.test", ["reader@gamma.test"], content)[0] == 250
    [received] = pipeline.sink.wait_for(lambda got: len(got) == 1, 20, "the newsletter")
    assert b"x-mailyard-class" not in received.content.lower()
    assert b"Subject: newsletter" in received.content
    queue = pipeline.process("queue")
    assert queue.logged(**{"class": "bulk"}), queue.logs()
