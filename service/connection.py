"""uvicorn's HTTP protocol (httptools) with the limits a scorer facing clients needs, and whole-response writes.

uvicorn's httptools protocol bounds neither the size of a request's head nor the time it takes to
arrive, and accepts connections without limit (uvicorn #157: its limits exist for h11 only). A
scorer that clients reach directly (a Kubernetes Service balances per connection, not per request)
needs all three, so `Connection` adds them:

- a request head (request line and headers) over `max_header_bytes` gets 431 and the connection closes;
- a connection whose next request head is not complete within `header_timeout_s` of the server
  waiting for it (from the accept, or from the previous response) is closed (408 if it sent a part);
- past `max_connections` open connections, a new one gets 503 and is closed at once.

A refused request's answer is followed by a lingering close, as nginx does: the sending side ends
and what the client still sends is read and discarded (up to `LINGER_BYTES`, for `LINGER_S`), since
closing with unread data would reset the connection and the client would see the reset, not the
answer.

And each response reaches the socket in one write: uvicorn writes a response's status line and
headers in one `transport.write` and its body in another. A replica killed between the two
(SIGKILL, the OOM killer) leaves a load balancer holding a status line with no body, which it has
passed on and cannot retry. Here the writes of one event-loop step are joined and sent at the end of
the step, so a killed replica has either sent a whole response or none.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import ServiceError


class StepWriteTransport(asyncio.Transport):
    """Wraps a transport: what is written during one event-loop step is sent as one write after it.

    Args:
        transport: the connection's transport.
        loop: the event loop that runs the connection.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data`; the step's writes are sent together once the step ends."""
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data if isinstance(data, bytes) else bytes(data))  # a copy only of mutable data

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._transport.write(data)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        """Send what is queued, then end the sending side."""
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Send what is queued, then close."""
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


LINGER_BYTES = 4 << 20
LINGER_S = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of `Connection` (`service.settings.Settings` documents each)."""

    max_header_bytes: int
    header_timeout_s: float
    max_connections: int


def _error(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response in the service's JSON error shape, closing the connection."""
    error = ServiceError.with_status(status, message)
    error.code = code
    body = json.dumps(error.body()).encode()
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body


class Connection(HttpToolsProtocol):
    """One client connection: uvicorn's httptools protocol with `ConnectionLimits`, writing through a
    `StepWriteTransport`. uvicorn's `http` setting takes it as `functools.partial(Connection, limits=...)`.
    It subclasses uvicorn's internal protocol because uvicorn has no public hook for either: without it
    the limit and one-write tests in tests/service/test_service_connection.py fail, and the half-written
    response a SIGKILL could leave is what test_killing_a_replica_under_load_loses_no_request guards.

    Args:
        limits: the connection limits.
        **kwargs: what uvicorn passes to its protocol (config, server_state, app_state).
    """

    def __init__(self, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._limits = limits
        self._head_bytes: int | None = 0  # bytes of the request head read so far; None once it is complete
        self._head_tail = b""  # the last bytes read of the head, where its end may begin
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering: int | None = None  # bytes discarded since a refusal; None: not refused

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            message = f"the server holds {self._limits.max_connections} connections, its limit; retry later"
            transport.write(_error(503, "too_many_connections", message))
            transport.close()
            return
        super().connection_made(StepWriteTransport(transport, asyncio.get_running_loop()))
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()  # the linger timer too
        if self.transport is not None:  # None: refused at the connection limit
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        if self._head_bytes is not None:  # reading a request head: measure it before the parser holds it
            end = (self._head_tail + data).find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._head_tail))
            if size > self._limits.max_header_bytes:
                limit = self._limits.max_header_bytes
                self._refuse(431, "header_too_large", f"the request head exceeds max_header_bytes ({limit} bytes)")
                return
            self._head_bytes, self._head_tail = (size, data[-3:]) if end < 0 else (None, b"")
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request's head is already in: nothing to wait for
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._head_bytes, self._head_tail = 0, b""
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes is None or self.transport.is_closing():
            return
        if self._head_bytes == 0:  # nothing sent: an idle connection, closed quietly
            self.transport.close()
            return
        limit = self._limits.header_timeout_s
        self._refuse(408, "header_timeout", f"the request head did not arrive within header_timeout_s ({limit:g} s)")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with an error, then close lingering (see the module docstring)."""
        self._cancel_head_timer()
        self._head_bytes, self._lingering = None, 0
        self.transport.write(_error(status, code, message))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._head_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
