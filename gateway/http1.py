"""A small pooled HTTP/1.1 client on asyncio's protocols, for the one call the hot path makes: POST /score.

Why not a library: per call, this does one ``transport.write`` and parses the answer in ``data_received``
without streams, tasks or hooks; measured against httpx and aiohttp on the same stand-in it has the lowest
overhead (benchmarks/upstream_client.py, docs/benchmarks.md). It speaks exactly what vLLM's uvicorn speaks:
keep-alive, ``Content-Length`` or chunked bodies, ``Connection: close``. No TLS, redirects, proxies or
compression: vLLM is on loopback (or a pod-local address) behind us.

Pooling: idle connections are reused last-in first-out and dropped after ``idle_s`` (below the server's own
keep-alive timeout, so we never write into a connection the server is closing). A request that fails on a
reused connection before any byte of the answer arrives is retried once on a new connection: the server
closed it between our check and our write, and scoring has no side effects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


class ConnectFailed(Exception):
    """No connection could be made (refused, unreachable, or timed out)."""


class ConnectTimeout(ConnectFailed):
    pass


class Disconnected(Exception):
    """The server closed the connection before the whole answer arrived."""


class ProtocolError(Exception):
    """The answer is not HTTP/1.x as we know it."""


class PoolTimeout(Exception):
    """All ``max_connections`` stayed busy for the whole wait."""


_MAX_HEAD = 64 * 1024


class _Connection(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before create_connection returns us

    def __init__(self) -> None:
        self.closed = False
        self.idle_since = 0.0
        self.used = False  # has answered a request before (a reused connection may have gone stale)
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._received = False
        self._head: tuple[int, int | None, bool, bool] | None = None  # status, length, chunked, keep-alive
        self.keep_alive = True

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # TCP; uvloop's transport is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._head is not None and self._head[1] is None and not self._head[2]:
                self._finish(self._waiter, self._head[0], bytes(self._buffer))  # delimited by the close
            else:
                self._waiter.set_exception(Disconnected("connection closed before the answer was complete"))

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            self._parse(waiter)
        except ProtocolError as exc:
            self.keep_alive = False
            waiter.set_exception(exc)

    # request / response
    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = False
        self._head = None
        self._buffer.clear()
        self.transport.write(request)
        return self._waiter

    @property
    def received_any(self) -> bool:
        return self._received

    def close(self) -> None:
        self.closed = True
        self.transport.close()

    def _parse(self, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise ProtocolError("response head too large")
                return
            self._head = _parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
        status, length, chunked, keep_alive = self._head
        self.keep_alive = keep_alive
        if status in (204, 304) or 100 <= status < 200:
            self._finish(waiter, status, b"")
        elif chunked:
            body = _dechunk(self._buffer)
            if body is not None:
                self._finish(waiter, status, body)
        elif length is not None and len(self._buffer) >= length:
            self._finish(waiter, status, bytes(self._buffer[:length]))
        # no length: the body ends when the server closes the connection (connection_lost finishes it)

    def _finish(self, waiter: asyncio.Future[tuple[int, bytes]], status: int, body: bytes) -> None:
        self._buffer.clear()
        waiter.set_result((status, body))


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError("not an HTTP/1.x status line")
    status = int(parts[1])
    keep_alive = parts[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError("malformed header line")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit():
                raise ProtocolError("bad content-length")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif name == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            keep_alive = b"keep-alive" in tokens or (keep_alive and b"close" not in tokens)
    return status, length, chunked, keep_alive


def _dechunk(buffer: bytearray) -> bytes | None:
    """The body of a complete chunked message in ``buffer``, or None while more is to come."""
    body = bytearray()
    position = 0
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        position = line_end + 2
        if size == 0:
            trailers_end = buffer.find(b"\r\n", position)
            while trailers_end > position:  # skip trailer fields up to the empty line
                position = trailers_end + 2
                trailers_end = buffer.find(b"\r\n", position)
            return bytes(body) if trailers_end == position else None
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


class Http1Pool:
    """Connections to one ``http://host:port``; at most ``max_connections`` open at once."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        connect_timeout_s: float,
        idle_s: float,
        pool_timeout_s: float,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"only http://host:port upstreams are supported, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._prefix = url.path.rstrip("/")
        self._host_header = url.netloc.encode()
        self._connect_timeout = connect_timeout_s
        self._idle_s = idle_s
        self._pool_timeout = pool_timeout_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:
        """One exchange: (status, body). Waits at most ``pool_timeout_s`` for a free connection slot.

        ``headers`` are sent as given: the caller has checked that they hold no line breaks.
        """
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\nhost: {self._host_header.decode()}\r\n"
        if content_type:
            head += f"content-type: {content_type}\r\n"
        for name, value in headers:
            head += f"{name}: {value}\r\n"
        message = (head + f"content-length: {len(body)}\r\n\r\n").encode() + body
        if self._slots.locked():  # only a full pool needs a bounded wait (a timer costs on every call)
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout("every upstream connection stayed busy") from None
        else:
            await self._slots.acquire()
        try:
            return await self._send(message)
        finally:
            self._slots.release()

    async def _send(self, message: bytes) -> tuple[int, bytes]:
        connection = self._reusable()
        if connection is not None:
            try:
                return await self._exchange(connection, message)
            except (Disconnected, ConnectionError):
                if connection.received_any:
                    raise
            # stale keep-alive connection: the server closed it as we wrote; once more on a fresh one
        return await self._exchange(await self._connect(), message)

    def _reusable(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._idle_s:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, self._host, self._port)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {self._host}:{self._port} in time") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self._host}:{self._port}: {exc.strerror}") from None
        return connection

    async def _exchange(self, connection: _Connection, message: bytes) -> tuple[int, bytes]:
        done = False
        try:
            status, body = await connection.send(message)
            done = True
            return status, body
        finally:
            # Reuse only a connection whose exchange completed cleanly; anything else (a timeout or
            # cancellation mid-answer, an error) leaves it in an unknown state.
            if done and connection.keep_alive and not connection.closed and not self._closed:
                connection.used = True
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
