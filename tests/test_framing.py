"""Hostile and unusual HTTP framing against the real gateway (granian, vLLM behind): head and target
sizes, Host, Content-Encoding, and keep-alive after an answer given before the body was read. Raw sockets
and Python's http.client, which (unlike httpx) reuse a connection without checking it first."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.framing import HEAD_BUFFER_BYTES, MAX_HEAD_BYTES, MAX_TARGET_BYTES
from tests.support.stack import Gateway, Keys

QUERY = {"model": "qwen3-reranker-4b", "query": "usb cable", "documents": ["USB-C cable 2 m", "chef's knife"]}


def address(gateway: Gateway) -> tuple[str, int]:
    parts = urlsplit(gateway.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def exchange(gateway: Gateway, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers (lower-case names), body."""
    with socket.create_connection(address(gateway), timeout=30) as sock:
        sock.sendall(request)
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()


def head(lines: list[str], body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def cohere_error(body: bytes) -> str:
    error = json.loads(body)
    assert set(error) == {"id", "message"}, error
    message: str = error["message"]
    return message


def post(gateway: Gateway, key: str, body: bytes, *extra: str) -> tuple[int, dict[str, str], bytes]:
    return exchange(
        gateway,
        head(
            [
                "POST /v2/rerank HTTP/1.1", "Host: gateway", f"Authorization: Bearer {key}",
                "Content-Type: application/json", f"Content-Length: {len(body)}", *extra,
            ],
            body,
        ),
    )  # fmt: skip


# Sizes


def test_a_head_the_size_real_clients_send_is_served(gateway: Gateway, api_keys: Keys) -> None:
    """A browser-sized head (cookies and all, 8 KiB) with a 2 KiB query string reaches the routes."""
    cookie = "Cookie: " + "; ".join(f"c{i}={'v' * 90}" for i in range(80))
    assert len(cookie) < MAX_HEAD_BYTES // 2
    status, _, body = exchange(gateway, head([f"GET /health?{'q' * 2048} HTTP/1.1", "Host: g", cookie]))
    assert (status, json.loads(body)) == (200, {"status": "ok"})


@pytest.mark.parametrize("size", [MAX_HEAD_BYTES + 1024, 64 * 1024, 256 * 1024])
def test_a_head_over_the_budget_is_431(gateway: Gateway, size: int) -> None:
    status, _, body = exchange(gateway, head(["GET /health HTTP/1.1", "Host: g", "X-Big: " + "a" * size]))
    assert status == 431
    if size < HEAD_BUFFER_BYTES:  # beyond granian's buffer, granian answers itself, with no body
        assert "headers are over" in cohere_error(body)


def test_a_long_request_target_is_414(gateway: Gateway) -> None:
    status, _, body = exchange(gateway, head([f"GET /{'a' * 16 * 1024} HTTP/1.1", "Host: g"]))
    assert status == 414
    assert "request target" in cohere_error(body)
    status, _, body = exchange(gateway, head([f"GET /health?{'q' * MAX_TARGET_BYTES} HTTP/1.1", "Host: g"]))
    assert status == 414


# Host (RFC 9112, 3.2)


@pytest.mark.parametrize(
    "hosts", [[], ["Host:"], ["Host: a", "Host: b"]], ids=["missing", "empty", "two"]
)  # fmt: skip
def test_http11_without_exactly_one_host_is_400(gateway: Gateway, hosts: list[str]) -> None:
    status, _, body = exchange(gateway, head(["GET /health HTTP/1.1", *hosts]))
    assert status == 400
    assert "Host" in cohere_error(body)


def test_http10_may_omit_host(gateway: Gateway) -> None:
    status, _, body = exchange(gateway, head(["GET /health HTTP/1.0"]))
    assert (status, json.loads(body)) == (200, {"status": "ok"})


# Content-Encoding


def test_a_gzip_body_is_decoded_and_ranks_as_the_plain_one(gateway: Gateway, api_keys: Keys) -> None:
    plain = json.dumps(QUERY).encode()
    status, _, as_is = post(gateway, api_keys["shop-a"], plain)
    assert status == 200
    status, _, zipped = post(gateway, api_keys["shop-a"], gzip.compress(plain), "Content-Encoding: gzip")
    assert status == 200
    assert json.loads(zipped)["results"] == json.loads(as_is)["results"]
    status, _, _ = post(gateway, api_keys["shop-a"], plain, "Content-Encoding: identity")
    assert status == 200


def test_a_gzip_bomb_is_413_after_at_most_the_body_limit(gateway: Gateway, api_keys: Keys) -> None:
    bomb = gzip.compress(b'{"query": "' + b"a" * (64 * 2**20) + b'"}')  # 64 MiB in about 64 KiB
    assert len(bomb) < 100_000
    status, _, body = post(gateway, api_keys["shop-a"], bomb, "Content-Encoding: gzip")
    assert status == 413
    assert "decompressed" in cohere_error(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(json.dumps(QUERY).encode())[:-12], "ends before"),
        (gzip.compress(b"{}") + b"trailing", "goes on after"),
    ],
    ids=["garbage", "truncated", "trailing"],
)
def test_a_broken_gzip_body_is_400(gateway: Gateway, api_keys: Keys, body: bytes, message: str) -> None:
    status, _, answer = post(gateway, api_keys["shop-a"], body, "Content-Encoding: gzip")
    assert status == 400
    assert message in cohere_error(answer)


@pytest.mark.parametrize("coding", ["br", "deflate", "zstd", "gzip, br", "compress"])
def test_a_content_coding_the_gateway_does_not_decode_is_415(
    gateway: Gateway, api_keys: Keys, coding: str
) -> None:
    status, _, body = post(
        gateway, api_keys["shop-a"], json.dumps(QUERY).encode(), f"Content-Encoding: {coding}"
    )
    assert status == 415
    assert "Content-Encoding" in cohere_error(body)


# Keep-alive after an answer given before the body was read


def test_http_client_reuses_the_connection_after_an_early_401(gateway: Gateway, api_keys: Keys) -> None:
    """A 110 KB body with a wrong key, three times, then a valid request: one connection throughout."""
    host, port = address(gateway)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        headers = {"Authorization": "Bearer rk_wrong", "Content-Type": "application/json"}
        connection.request("POST", "/v2/rerank", body=b"x" * 110_000, headers=headers)
        first = connection.sock
        for _ in range(3):
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 401
            assert answer.getheader("Connection") is None  # kept open: the body was read and dropped
            connection.request("POST", "/v2/rerank", body=b"x" * 110_000, headers=headers)
        connection.getresponse().read()
        headers["Authorization"] = f"Bearer {api_keys['shop-a']}"
        connection.request("POST", "/v2/rerank", body=json.dumps(QUERY), headers=headers)
        answer = connection.getresponse()
        assert answer.status == 200
        assert len(json.loads(answer.read())["results"]) == 2
        assert connection.sock is first
    finally:
        connection.close()


def early_answers(key: str) -> list[tuple[bytes, int]]:
    """Requests answered before their body is read, each with a body, and the status each gets."""
    body = json.dumps(QUERY).encode()
    framing = ["Host: g", f"Content-Length: {len(body)}"]
    return [
        (head(["POST /v2/rerank HTTP/1.1", *framing, "Authorization: Bearer rk_wrong"], body), 401),
        (head(["POST /nowhere HTTP/1.1", *framing], body), 404),
        (
            head(
                [
                    "POST /v2/rerank HTTP/1.1",
                    *framing,
                    f"Authorization: Bearer {key}",
                    "Content-Type: text/csv",
                ],
                body,
            ),
            415,
        ),
        (head(["GET /health HTTP/1.1", *framing], body), 200),
        (
            head(
                [
                    "POST /v2/rerank HTTP/1.1",
                    "Host: g",
                    "Transfer-Encoding: chunked",
                    "Authorization: Bearer x",
                ],
                f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
            ),
            401,
        ),
    ]


def test_a_raw_socket_gets_every_answer_on_one_connection(gateway: Gateway, api_keys: Keys) -> None:
    """60 early answers of every kind, interleaved with valid reranks, on one socket: each answered in
    order, none with Connection: close, the connection never dropped."""
    valid_body = json.dumps(QUERY).encode()
    valid = head(
        ["POST /v2/rerank HTTP/1.1", "Host: g", f"Authorization: Bearer {api_keys['shop-a']}",
         "Content-Type: application/json", f"Content-Length: {len(valid_body)}"],
        valid_body,
    )  # fmt: skip
    script = [*early_answers(api_keys["shop-a"]), (valid, 200)] * 10
    with socket.create_connection(address(gateway), timeout=30) as sock:
        for request, expected in script:
            sock.sendall(request)
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            reply.read()
            assert reply.status == expected, request[:60]
            assert reply.getheader("Connection") is None, request[:60]


def test_a_body_over_the_limit_is_not_waited_for_and_the_answer_says_close(
    gateway: Gateway, api_keys: Keys
) -> None:
    """Declared larger than the body limit: 413 at once, with Connection: close, and the server closes."""
    headers = [
        "POST /v2/rerank HTTP/1.1", "Host: g", f"Authorization: Bearer {api_keys['shop-a']}",
        "Content-Type: application/json", f"Content-Length: {64 * 2**20}",
    ]  # fmt: skip
    with socket.create_connection(address(gateway), timeout=30) as sock:
        sock.sendall(head(headers, b"[" * 1000))
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        assert reply.status == 413
        assert reply.getheader("Connection") == "close"
        reply.read()
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the server, not left hanging


def test_the_cohere_sdks_connection_pool_sees_no_error_after_early_answers(
    gateway: Gateway, api_keys: Keys
) -> None:
    """httpx (the SDK's client) on one pooled connection: wrong keys and valid calls, all answered."""
    with httpx.Client(base_url=gateway.url, limits=httpx.Limits(max_connections=1), timeout=30) as client:
        for _ in range(20):
            wrong = client.post("/v2/rerank", json=QUERY, headers={"Authorization": "Bearer rk_wrong"})
            assert wrong.status_code == 401
            right = client.post(
                "/v2/rerank", json=QUERY, headers={"Authorization": f"Bearer {api_keys['shop-a']}"}
            )
            assert right.status_code == 200
