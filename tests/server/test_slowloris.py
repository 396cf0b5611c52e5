"""Slowloris: request headers must be complete within ``header_timeout_s`` of the connection
opening (or of the request's first byte on a kept-alive connection), else 408 and close; and
within `MAX_HEADER_BYTES`, else 431 and close. A raw socket against a real uvicorn server
started with the node's settings."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.app import make_config
from tests.support.live import LiveServer
from tests.support.websocket import alice_and_bob, envelopes_until_empty, frame, send
from tidings.server.config import ServerConfig
from tidings.server.serving import MAX_HEADER_BYTES

HEADER_TIMEOUT_S = 0.5
GIVE_UP_S = 15.0
"""How long the test waits for the server to act before failing (not a timing assertion: the
server is expected to act after HEADER_TIMEOUT_S; this only stops a hung test)."""


@pytest.fixture
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(tmp_path_factory.mktemp("data"), header_timeout_s=HEADER_TIMEOUT_S)
    server = LiveServer(config).start()
    yield server
    server.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(GIVE_UP_S)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body)."""
    sock.settimeout(GIVE_UP_S)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_half_sent_request_is_answered_408_and_closed(slow_server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\nX-Slow: ")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code": "request_timeout"' in answer


def test_a_connection_that_sends_nothing_is_closed(slow_server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_trickled_request_is_cut_although_bytes_keep_arriving(slow_server: LiveServer) -> None:
    closed = False
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\n")
        deadline = time.monotonic() + GIVE_UP_S
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"X-A: b\r\n")  # a header line at a time, never the blank line
                readable, _, _ = select.select([sock], [], [], HEADER_TIMEOUT_S / 5)
                if readable:
                    read_until_closed(sock)
                    closed = True
            except OSError:  # reset: we wrote after the server closed
                closed = True
    assert closed, "the server kept a trickling request open"


def test_the_second_request_on_a_kept_alive_connection_has_its_own_deadline(
    slow_server: LiveServer,
) -> None:
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        sock.settimeout(GIVE_UP_S)
        # The first request's deadline runs from the connection's start: sent at once.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\n\r\n")
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 "), first
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_complete_requests_and_websockets_are_not_cut(slow_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=slow_server.url) as http:
            alice, bob = await alice_and_bob(http)
            async with connect(slow_server.ws_url, additional_headers=bob.auth) as ws:
                await envelopes_until_empty(ws)
                await asyncio.sleep(HEADER_TIMEOUT_S * 3)  # well past the header deadline
                await send(http, alice, bob)
                pushed = await frame(ws)
                assert pushed["type"] == "envelope"
            assert (await http.get("/healthz")).status_code == 200

    asyncio.run(main())


def test_headers_past_the_size_limit_get_431_and_never_reach_the_app(
    slow_server: LiveServer,
) -> None:
    def lines(count: int) -> bytes:
        return b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(count))

    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        over = lines(MAX_HEADER_BYTES // 1000 + 5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\n" + over + b"\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b'"code": "headers_too_large"' in answer
    # Just under the limit is served.
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        under = lines(MAX_HEADER_BYTES // 1000 - 5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\n" + under + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


@pytest.fixture
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A header timeout far longer than the test: whatever cuts the connection is the size."""
    config = make_config(tmp_path_factory.mktemp("data"), header_timeout_s=GIVE_UP_S * 4)
    server = LiveServer(config).start()
    yield server
    server.stop()


def test_an_endless_header_line_is_cut_by_size_not_only_by_time(
    patient_server: LiveServer,
) -> None:
    answer = b""
    with socket.create_connection(("127.0.0.1", patient_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tidings\r\nX-Long: ")
        try:
            for _ in range(64):  # 4 MiB, never a line end
                sock.sendall(b"b" * 65536)
            answer = read_until_closed(sock)
        except TimeoutError:
            pytest.fail("the server kept reading an endless header line")
        except ConnectionError:
            # Closed while our bytes were unread: the kernel answers them with a reset, which
            # can discard the 431 before we read it. Either way the size cut it (the header
            # timeout is far longer than this test).
            return
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


def test_header_timeout_is_a_setting() -> None:
    assert ServerConfig().header_timeout_s == 10.0
    loaded = ServerConfig.load(env={"TIDINGS_HEADER_TIMEOUT_S": "2.5"})
    assert loaded.header_timeout_s == 2.5
