"""The connection protocol (service.connection) in a real uvicorn server on loopback: each response in one
write, and the HTTP limits uvicorn's httptools protocol lacks."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from service.connection import Connection, ConnectionLimits

LIMITS = ConnectionLimits(max_header_bytes=4096, header_timeout_s=0.5, max_connections=4)
BODY = b'{"predictions": [0.5]}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers like a Starlette response: the start message, then the body (streamed in two parts for /stream)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": BODY[:5], "more_body": True})
        await asyncio.sleep(0.01)  # the next part comes in a later event-loop step
        await send({"type": "http.response.body", "body": BODY[5:]})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def socket_writes(paths: list[str], close: bool = False) -> tuple[list[bytes], bytes]:
    """Serve `app` with `Connection` on loopback, request `paths` on one connection; returns what the server
    wrote to the socket, one item per write, and what the client read."""
    writes: list[bytes] = []

    class Recording(Connection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(limits=LIMITS, **kwargs)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            real_write = transport.write

            def write(data: bytes | bytearray | memoryview) -> None:
                writes.append(bytes(data))
                real_write(data)

            transport.write = write  # type: ignore[method-assign]
            super().connection_made(transport)

    async def main() -> bytes:
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(app, http=Recording, loop="asyncio", lifespan="off", log_level="warning")
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # as uvicorn.Server.serve sets it up
        await server.startup(sockets=[sock])
        try:
            reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            received = b""
            for i, path in enumerate(paths):
                connection = "close" if close and i == len(paths) - 1 else "keep-alive"
                writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: {connection}\r\n\r\n".encode())
                await writer.drain()
                end = b"0\r\n\r\n" if path == "/stream" else BODY
                while received.count(end) <= i:
                    chunk = await asyncio.wait_for(reader.read(65536), 5)
                    if not chunk:
                        break
                    received += chunk
            writer.close()
            return received
        finally:
            await server.shutdown(sockets=[sock])
            sock.close()

    received = asyncio.run(main())
    return writes, received


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_each_response_is_one_write(close: bool) -> None:
    writes, received = socket_writes(["/", "/"], close=close)
    assert len(writes) == 2
    for write in writes:
        assert write.startswith(b"HTTP/1.1 200") and write.endswith(b"\r\n\r\n" + BODY)
    assert received == b"".join(writes)


def test_a_streamed_response_is_written_step_by_step() -> None:
    """Parts sent in later event-loop steps are written then; only what one step sends is joined."""
    writes, received = socket_writes(["/stream"])
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in writes[0]
    assert writes[0].endswith(b"5\r\n" + BODY[:5] + b"\r\n")
    assert received == b"".join(writes)
    assert received.endswith(b"0\r\n\r\n")


@asynccontextmanager
async def serving(limits: ConnectionLimits = LIMITS) -> AsyncIterator[tuple[str, int]]:
    """`app` served by uvicorn with `Connection` and `limits` on a loopback port."""
    sock = socket.create_server(("127.0.0.1", 0))
    protocol = partial(Connection, limits=limits)  # uvicorn calls it as it calls a protocol class
    config = uvicorn.Config(app, http=protocol, loop="asyncio", lifespan="off", log_level="warning")  # type: ignore[arg-type]
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        yield sock.getsockname()[:2]
    finally:
        await server.shutdown(sockets=[sock])
        sock.close()


async def exchange(address: tuple[str, int], request: bytes, wait_s: float = 5) -> bytes:
    """Send `request` on a new connection; what the server sends until it closes (or `wait_s` passes)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), wait_s)
    finally:
        writer.close()


def status_and_body(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_request_head_over_the_limit_gets_431_and_a_close() -> None:
    async def main() -> tuple[bytes, bytes]:
        async with serving() as address:
            big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8192 + b"\r\n\r\n"
            small = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-fine: " + b"a" * 3000 + b"\r\n\r\n"
            return await exchange(address, big), await exchange(address, small)

    refused, fine = asyncio.run(main())
    status, body = status_and_body(refused)
    assert (status, body["error"]["code"]) == (431, "header_too_large")
    assert b"connection: close" in refused
    assert fine.startswith(b"HTTP/1.1 200") and fine.endswith(BODY)


def test_a_head_that_never_completes_gets_408_and_an_idle_connection_is_closed() -> None:
    async def main() -> tuple[bytes, bytes, float]:
        async with serving() as address:
            started = time.monotonic()
            idle = await exchange(address, b"")  # connects and sends nothing
            waited = time.monotonic() - started
            partial_head = await exchange(address, b"GET / HTTP/1.1\r\nhost: x\r\n")
            return idle, partial_head, waited

    idle, partial_head, waited = asyncio.run(main())
    assert idle == b"" and waited < 3  # closed after header_timeout_s, not left open
    status, body = status_and_body(partial_head)
    assert (status, body["error"]["code"]) == (408, "header_timeout")


def test_a_keep_alive_connection_waits_for_its_next_head_within_the_timeout() -> None:
    async def main() -> bytes:
        async with serving() as address:
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(BODY), 5)
            await asyncio.sleep(0.3)  # within header_timeout_s
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            second = await asyncio.wait_for(reader.readuntil(BODY), 5)
            rest = await asyncio.wait_for(reader.read(), 5)  # then idle: closed
            writer.close()
            return first + second + rest

    received = asyncio.run(main())
    assert received.count(b"HTTP/1.1 200") == 2


def test_connections_past_the_limit_get_503_and_a_close() -> None:
    async def main() -> list[bytes]:
        async with serving() as address:
            held = [await asyncio.open_connection(*address) for _ in range(LIMITS.max_connections)]
            await asyncio.sleep(0.05)
            refused = await exchange(address, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.05)
            served = await exchange(address, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            return [refused, served]

    refused, served = asyncio.run(main())
    status, body = status_and_body(refused)
    assert (status, body["error"]["code"]) == (503, "too_many_connections")
    assert served.startswith(b"HTTP/1.1 200")
