"""The gateway's own HTTP/1.1 client against scripted servers: every framing vLLM's uvicorn (or a proxy in
between) may use, connection reuse, stale keep-alive connections, and each failure it must name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.http1 import ConnectFailed, Disconnected, Http1Pool, PoolTimeout, ProtocolError
from tests.support.procs import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.unit]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Scripted:
    """A loopback server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()


Serve = Callable[[Handler], Awaitable[Scripted]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Scripted:
        scripted = Scripted(handler)
        server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0)
        servers.append(server)
        scripted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return scripted

    yield start
    for server in servers:
        server.close()


def pool(
    url: str, *, max_connections: int = 4, idle_s: float = 4.0, pool_timeout_s: float = 2.0
) -> Http1Pool:
    return Http1Pool(
        url,
        max_connections=max_connections,
        connect_timeout_s=1,
        idle_s=idle_s,
        pool_timeout_s=pool_timeout_s,
    )


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


def keep_alive_echo(reply: Callable[[bytes], bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(reply(body))
            await writer.drain()

    return handler


def sized(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_content_length_bodies_over_one_reused_connection(serve: Serve) -> None:
    server = await serve(keep_alive_echo(lambda body: sized(b"echo:" + body)))
    client = pool(server.url)
    for i in range(3):
        assert await client.request("POST", "/score", f"{i}".encode(), "application/json") == (
            200,
            f"echo:{i}".encode(),
        )
    assert server.connections == 1
    await client.aclose()


async def test_chunked_bodies_split_across_packets_with_trailers(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for piece in (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"lo\r\n6;ext=1\r\n wor",
            b"ld\r\n0\r\nx-trailer: 1\r\n\r\n",
        ):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        await read_request(reader)  # the connection is reusable afterwards
        writer.write(sized(b"again"))
        await writer.drain()

    server = await serve(handler)
    client = pool(server.url)
    assert await client.request("GET", "/x") == (200, b"hello world")
    assert await client.request("GET", "/x") == (200, b"again")
    assert server.connections == 1


async def test_a_body_delimited_by_the_close_and_connection_close_is_honoured(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    server = await serve(handler)
    client = pool(server.url)
    assert await client.request("GET", "/x") == (200, b"until the end")
    assert await client.request("GET", "/x") == (200, b"until the end")
    assert server.connections == 2, "a connection the server closes is never reused"


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(sized(b"ok"))  # says keep-alive, then closes when the next request comes in
        await writer.drain()
        await reader.read(1)

    server = await serve(handler)
    client = pool(server.url)
    assert await client.request("POST", "/score", b"1") == (200, b"ok")
    assert await client.request("POST", "/score", b"2") == (200, b"ok")
    assert server.connections == 2


async def test_a_connection_closed_mid_answer_is_an_error_not_a_retry(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    server = await serve(handler)
    with pytest.raises(Disconnected):
        await pool(server.url).request("POST", "/score", b"x")
    assert server.connections == 1


async def test_garbage_is_a_protocol_error(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    server = await serve(handler)
    with pytest.raises(ProtocolError):
        await pool(server.url).request("GET", "/x")


async def test_nobody_listening_is_connect_failed() -> None:
    with pytest.raises(ConnectFailed):
        await pool(f"http://127.0.0.1:{free_port()}").request("GET", "/health")


async def test_waiting_for_a_busy_pool_is_bounded(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1)
        writer.write(sized(b"slow"))
        await writer.drain()

    server = await serve(handler)
    client = pool(server.url, max_connections=1, pool_timeout_s=0.2)
    first = asyncio.ensure_future(client.request("GET", "/x"))
    await asyncio.sleep(0.05)
    with pytest.raises(PoolTimeout):
        await client.request("GET", "/x")
    assert await first == (200, b"slow")


async def test_a_cancelled_exchange_never_returns_its_connection(serve: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await read_request(reader)
            if body == b"slow":
                await asyncio.sleep(0.5)
            writer.write(sized(body))
            await writer.drain()

    server = await serve(handler)
    client = pool(server.url)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.request("POST", "/x", b"slow")
    # A late answer to the cancelled request must not be read as the answer to this one.
    assert await client.request("POST", "/x", b"fast") == (200, b"fast")
    assert server.connections == 2


async def test_idle_connections_expire_before_the_servers_keep_alive(serve: Serve) -> None:
    server = await serve(keep_alive_echo(sized))
    client = pool(server.url, idle_s=0.1)
    await client.request("POST", "/x", b"1")
    await asyncio.sleep(0.2)
    await client.request("POST", "/x", b"2")
    assert server.connections == 2


def test_only_plain_http_upstreams() -> None:
    with pytest.raises(ValueError, match="only http://"):
        pool("https://vllm.internal:8001")
