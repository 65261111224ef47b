"""A real HTTPS server on loopback (aiohttp, in a thread): MTA-STS policies, TLS reports.

Policies are served by the request's Host (``mta-sts.<domain>``), with the
status and Content-Type the test sets; every request is counted. A POST to
any path (a TLSRPT ``rua=https:`` endpoint) is recorded, body and all, and
answered with ``post_status``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Served:
    body: str
    status: int = 200
    content_type: str = "text/plain"


@dataclass(frozen=True)
class Posted:
    host: str  # the request's Host, without the port
    path: str
    content_type: str
    body: bytes


class PolicyServer:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.policies: dict[str, Served] = {}  # by Host, without the port
        self.requests: Counter[str] = Counter()
        self.post_status = 200
        self._posts: list[Posted] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def serve(self, domain: str, policy: str, **options: object) -> None:
        self.policies[f"mta-sts.{domain}"] = Served(policy, **options)  # type: ignore[arg-type]

    async def _handle(self, request: web.Request) -> web.Response:
        host = request.host.rsplit(":", 1)[0]
        self.requests[host] += 1
        served = self.policies.get(host)
        if served is None or request.path != "/.well-known/mta-sts.txt":
            return web.Response(status=404, text="no policy here")
        return web.Response(
            status=served.status, body=served.body.encode(), content_type=served.content_type
        )

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        posted = Posted(
            request.host.rsplit(":", 1)[0], request.path, request.headers["Content-Type"], body
        )
        with self._lock:
            self._posts.append(posted)
        return web.Response(status=self.post_status)

    def posts(self) -> list[Posted]:
        with self._lock:
            return list(self._posts)

    def wait_for_posts(self, count: int, timeout: float) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(posted := self.posts()) >= count:
                return posted
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {count} POSTs")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        app.router.add_route("POST", "/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls).start()

    def start(self) -> PolicyServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
