"""uvicorn's HTTP protocol (httptools), with each response reaching the socket in one write.

uvicorn writes a response's status line and headers in one `transport.write` and its body in
another. A replica killed between the two (SIGKILL, the OOM killer) leaves a load balancer holding a
status line with no body: nginx has passed it on, so it cannot retry the request on another replica,
and the client gets a response cut short. Here the writes of one event-loop step are joined and
sent at the end of the step: a response's header and body go out together (a scorer's response is
written in one step), so a killed replica has either sent a whole response or none, and a request
with no response is one nginx resends elsewhere.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class WholeResponseProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `StepWriteTransport` (`uvicorn --http` takes it)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(StepWriteTransport(transport, asyncio.get_running_loop()))
