"""``/metrics``, ``/healthz`` and ``/readyz`` on the metrics port.

prometheus-client's WSGI app serves ``/metrics``; the two probes are a few
lines of WSGI around it, served by the stdlib's threading WSGI server in a
daemon thread (as ``prometheus_client.start_http_server`` does), so a busy
event loop never makes Kubernetes think the pod is dead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

ReadinessCheck = Callable[[], dict[str, bool]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes hit this every few seconds; access logs would drown the mail logs."""


class HealthServer:
    def __init__(self, host: str, port: int, readiness: ReadinessCheck) -> None:
        self._readiness = readiness
        self._metrics_app = make_wsgi_app()
        self._server = make_server(
            host, port, self._app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mailyard-httpd", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            checks = self._readiness()
            body = "".join(f"{name} {'ok' if ok else 'not ready'}\n" for name, ok in checks.items())
            status = "200 OK" if checks and all(checks.values()) else "503 Service Unavailable"
            return _text(start_response, status, body)
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        return _text(start_response, "404 Not Found", "try /metrics, /healthz or /readyz\n")


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]
