"""A real HTTPS server on loopback that serves MTA-STS policies (aiohttp, in a thread).

Policies are served by the request's Host (``mta-sts.<domain>``), with the
status and Content-Type the test sets; every request is counted.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import Counter
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Served:
    body: str
    status: int = 200
    content_type: str = "text/plain"


class PolicyServer:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.policies: dict[str, Served] = {}  # by Host, without the port
        self.requests: Counter[str] = Counter()
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

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
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
