"""A response reaches the socket in one write (service.protocol), through a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.protocol import WholeResponseProtocol

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


def socket_writes(
    protocol: type[HttpToolsProtocol], paths: list[str], close: bool = False
) -> tuple[list[bytes], bytes]:
    """Serve `app` with `protocol` on loopback, request `paths` on one connection; returns what the server
    wrote to the socket, one item per write, and what the client read."""
    writes: list[bytes] = []

    class Recording(protocol):  # type: ignore[valid-type,misc]
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


def test_uvicorn_alone_writes_header_and_body_apart() -> None:
    """Why the protocol exists: a process killed between these two writes sends a status line with no body."""
    writes, _ = socket_writes(HttpToolsProtocol, ["/"])
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 200") and writes[1] == BODY


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_each_response_is_one_write(close: bool) -> None:
    writes, received = socket_writes(WholeResponseProtocol, ["/", "/"], close=close)
    assert len(writes) == 2
    for write in writes:
        assert write.startswith(b"HTTP/1.1 200") and write.endswith(b"\r\n\r\n" + BODY)
    assert received == b"".join(writes)


def test_a_streamed_response_is_written_step_by_step() -> None:
    """Parts sent in later event-loop steps are written then; only what one step sends is joined."""
    writes, received = socket_writes(WholeResponseProtocol, ["/stream"])
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in writes[0]
    assert writes[0].endswith(b"5\r\n" + BODY[:5] + b"\r\n")
    assert received == b"".join(writes)
    assert received.endswith(b"0\r\n\r\n")
