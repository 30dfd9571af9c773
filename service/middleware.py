"""The envelope of every HTTP request, as one pure ASGI middleware (it runs on every request, so it is lean).

It gives the request an id (X-Request-ID if the client sent a valid one, else a new one), echoes it,
answers 413 to bodies over the limit (from Content-Length, else once the streamed body passes it),
turns an exception that escapes the app into a logged 500 in the one error shape, and records the
request's metrics and access log line. Health and metrics requests are not counted, and are logged
at debug level only. A client that hangs up before its body is read is counted with status 499
(nginx's "client closed request"), not as a server error.

A 413 reaches clients that send their whole body before reading (Python's urllib, many SDKs): the
body is read and discarded, up to `DRAIN_FACTOR` times the limit, before the answer; closing with
unread data would reset the connection and the client would see the reset, not the 413. A client
that asks `Expect: 100-continue` (curl) gets the 413 at once and sends nothing.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from prometheus_client import Counter, Histogram
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError, ServiceError
from service.logging import AccessLog, request_id
from service.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
DRAIN_FACTOR = 4
CLIENT_CLOSED = 499
PREDICT_PATH = "/predict"
UNTRACKED_PREFIXES = ("/health", "/metrics")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_ID_PREFIX = secrets.token_hex(6)  # per process, so ids stay unique across workers and restarts
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A request id unique to this process's run: a random prefix and a counter (no syscall per request)."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def error_response(error: ServiceError) -> JSONResponse:
    """The JSON response of a service error."""
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


class RequestMiddleware:
    """Request id, body size limit, last-resort 500, metrics and access log (see the module docstring).

    Args:
        app: the ASGI app.
        metrics: where request counts and latencies go.
        max_body_bytes: the largest body accepted.
        predict: the endpoint of `POST /predict`, handed its requests directly (see `service.predict`).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int, predict: ASGIApp) -> None:
        self.app = app
        self.predict = predict
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._access_log = AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, length, expects_continue = b"", b"", False
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                given = value
            elif name == b"content-length":
                length = value
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        rid = given.decode() if _VALID_REQUEST_ID.fullmatch(given) else new_request_id()
        token = request_id.set(rid)
        id_header = (REQUEST_ID_HEADER, rid.encode())
        start = time.perf_counter()
        status, started, received = 500, False, 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, received)
                raise self._too_large()
            return message

        try:
            declared = int(length) if length.isdigit() else None
            if declared is not None and declared > self.max_body_bytes:
                if not expects_continue:
                    await self._drain(receive, 0)
                await error_response(self._too_large())(scope, receive, send_with_id)
            else:  # a body within its declared length needs no counting; the HTTP parser holds it to it
                await self._dispatch(scope, receive if declared is not None else limited_receive, send_with_id)
        except ClientDisconnect:
            status = CLIENT_CLOSED
            logger.info("client disconnected before its request was read", extra={"path": scope["path"]})
        except Exception:
            logger.exception("unhandled error")
            if not started:
                await error_response(ServiceError("internal error; the log has the details"))(
                    scope, receive, send_with_id
                )
        finally:
            self._record(scope, status, time.perf_counter() - start)
            request_id.reset(token)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != PREDICT_PATH:
            await self.app(scope, receive, send)
        elif scope["method"] == "POST":
            await self.predict(scope, receive, send)
        else:
            not_allowed = ServiceError.with_status(405, "Method Not Allowed", headers={"Allow": "POST"})
            await error_response(not_allowed)(scope, receive, send)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body exceeds max_body_bytes ({self.max_body_bytes} bytes)", headers={"connection": "close"}
        )

    async def _drain(self, receive: Receive, received: int) -> None:
        """Read and discard the rest of a body, up to DRAIN_FACTOR x the limit, so the client sees the 413."""
        bound = DRAIN_FACTOR * self.max_body_bytes
        while received <= bound:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route: str = getattr(scope.get("route"), "path", "<unmatched>")
        if scope["path"] == PREDICT_PATH:
            route = PREDICT_PATH
        method: str = scope["method"] if scope["method"] in METHODS else "other"
        duration_ms = round(seconds * 1000, 3)
        if route.startswith(UNTRACKED_PREFIXES):
            logger.debug(
                "request", extra={"method": method, "path": scope["path"], "status": status, "duration_ms": duration_ms}
            )
            return
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            labels = (method, route, str(status))
            series = self._series[key] = (self.metrics.requests.labels(*labels), self.metrics.latency.labels(*labels))
        series[0].inc()
        series[1].observe(seconds)
        self._access_log.write(method, scope["path"], status, duration_ms)
