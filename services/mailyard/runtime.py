"""Running services in one process: start, report readiness, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Sequence
from typing import Protocol

from mailyard import __version__
from mailyard.config import Settings
from mailyard.httpd import HealthServer
from mailyard.version import BUILD_INFO

log = logging.getLogger(__name__)

# A young collection every YOUNG_COLLECTION allocations instead of Python's 700.
YOUNG_COLLECTION = 10_000


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and begin work; may wait (retrying) until the broker is there."""

    def ready(self) -> bool:
        """True while the service can do its job (connected to the broker)."""

    async def stop(self, grace: float) -> None:
        """Stop intake, let in-flight work finish within ``grace`` seconds, disconnect."""


async def serve(services: Sequence[Service], settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a service fails to start (exit 1)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    health = HealthServer(
        settings.metrics.host,
        settings.metrics.port,
        lambda: {service.name: service.ready() for service in services},
    )
    health.start()
    BUILD_INFO.labels(__version__, ",".join(s.name for s in services)).set(1)
    log.info(
        "starting",
        extra={
            "services": [s.name for s in services],
            "metrics_port": health.port,
            "event_loop": type(loop).__module__,
        },
    )

    exit_code = 0
    starting: dict[asyncio.Future[object], Service] = {
        asyncio.create_task(s.start(), name=f"start-{s.name}"): s for s in services
    }
    stop_wait: asyncio.Future[object] = asyncio.create_task(stopping.wait())
    pending = set(starting)
    while pending and not stopping.is_set():
        done, pending = await asyncio.wait(
            pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED
        )
        pending.discard(stop_wait)
        for task in done - {stop_wait}:
            error = task.exception()
            if error is not None:
                log.error(
                    "could not start",
                    extra={"service": starting[task].name, "error": str(error)},
                    exc_info=error,
                )
                exit_code = 1
                stopping.set()
            else:
                log.info("started", extra={"service": starting[task].name})
    if not stopping.is_set():
        settle_collector()
        await stopping.wait()

    log.info("stopping: no new work; finishing what is in flight")
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop_wait.cancel()
    grace = settings.shutdown_grace.total_seconds()
    for service in services:  # in order: ingress first, so intake stops first
        try:
            await service.stop(grace)
        except Exception:
            log.exception("error while stopping", extra={"service": service.name})
            exit_code = exit_code or 1
    health.stop()
    log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


def settle_collector() -> None:
    """Tune Python's cyclic garbage collector for a long-running service, once started.

    Its defaults suit short programs: a young collection every 700
    allocations, and every object in the full ones. A service keeps the
    tens of thousands of objects of its start-up (modules, settings,
    protobuf descriptors) for its whole life, and makes and drops many
    small ones per message: with the defaults, delivery spent 18 us a job
    collecting (``gc.callbacks``, 20,000 jobs), nearly all of it scanning
    survivors; 2 us with these settings. ``gc.freeze()`` takes
    what exists now out of every later collection (none of it is garbage),
    and a larger young generation lets most per-message objects die before
    one is due. Both are documented knobs of the ``gc`` module; nothing is
    left uncollected.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, middle, old)
