"""How a node is served: the one place for the uvicorn settings, so every way of starting the
server (`tidings server`, tests, benchmarks) gets the same limits.

- WebSocket frames from clients are limited to `MAX_WS_MESSAGE_BYTES` (uvicorn's default is
  16 MiB per message, buffered whole in memory per connection: 30 sockets sending 15 MiB took a
  node from 168 MB to over 1 GB). A longer message closes the connection with 1009 as soon
  as its header arrives, before its payload is buffered.
- No per-message deflate: payloads are ciphertext (compression would only win back base64's
  overhead), and it costs zlib state per connection. (Were it on, inflation is still cut at
  the same limit.)
- Request headers must be complete within ``header_timeout_s`` and `MAX_HEADER_BYTES`
  (`HeaderTimeoutProtocol`): uvicorn's own ``timeout_keep_alive`` covers only idle keep-alive
  connections, so a client sending its request a byte at a time (slowloris) held a connection
  forever, and its httptools protocol reads headers of any size.
- uvicorn's ``proxy_headers`` is off: it trusts ``X-Forwarded-For`` from 127.0.0.1 by default,
  so any local process could pick its client address. The app applies the header itself,
  from ``trusted_proxies`` only (`tidings.app`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tidings.server.config import ServerConfig

MAX_WS_MESSAGE_BYTES = 256 * 1024
"""Largest WebSocket message a client may send: a ``send`` frame to one device with the
largest envelope body (96 KiB, 128 KiB in base64) and room for a few more devices' small
ones; larger multi-device sends go over HTTP (2 MiB). Acks stay limited to
`tidings.server.frames.MAX_CLIENT_FRAME`. What a socket can pin is this much per
connection (16 per account): `bench/ws_abuse.py` measures it."""

WS_PING_INTERVAL_S = 20.0
"""uvicorn's default keep-alive ping: dead peers are dropped and their memory returned."""

MAX_HEADER_BYTES = 64 * 1024
"""Request line plus headers, per request (uvicorn's httptools protocol has no limit: 20 MB of
headers were read and answered). Past it: 431 ``headers_too_large`` and close."""
_READ_CHUNK = 256 * 1024  # asyncio reads at most this much per data_received


def _close_response(status: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


_TIMEOUT_RESPONSE = _close_response(
    b"408 Request Timeout", "request_timeout", "request headers not received in time"
)
_TOO_LARGE_RESPONSE = _close_response(
    b"431 Request Header Fields Too Large", "headers_too_large", "request headers too large"
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for the request headers: a timer starts
    when the connection opens and when each new request begins, and is cancelled once the
    headers are complete. When it fires, the client gets 408 ``request_timeout`` (unless a
    response is under way on the connection) and the connection is closed.

    And a size limit: request line and headers past `MAX_HEADER_BYTES` get 431
    ``headers_too_large`` and close, before the request reaches the app. The parser buffers a
    header line until it ends, so bytes of a still-incomplete head are counted as they arrive
    too (with one read's slack: a read may also hold the end of the previous request).

    The deadline is a class attribute: uvicorn builds protocols from the class it is given,
    so `protocol_class` makes a subclass per configured timeout."""

    header_timeout_s: ClassVar[float] = 10.0

    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0  # request line and complete header lines of the current request
    _pending_bytes = 0  # bytes received while the current request's head is incomplete
    _too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and not self.transport.is_closing():
            self._pending_bytes += len(data)
            if self._too_large or self._pending_bytes > MAX_HEADER_BYTES + _READ_CHUNK:
                self._refuse_too_large()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF

    def on_message_begin(self) -> None:
        self._header_bytes = self._pending_bytes = 0
        super().on_message_begin()
        # The first request's deadline runs from the connection's start; later requests on a
        # kept-alive connection get theirs when their first byte arrives.
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._header_bytes = self._pending_bytes = 0
        if self._too_large:
            self._refuse_too_large()
            return  # never reaches the app
        super().on_headers_complete()

    def _count_header_bytes(self, count: int) -> None:
        # Called from inside the parser: raising here would turn into a plain 400, so the
        # answer waits for the end of the head (or for data_received's check).
        self._header_bytes += count
        if self._header_bytes > MAX_HEADER_BYTES:
            self._too_large = True

    def _refuse_too_large(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_TOO_LARGE_RESPONSE)
            self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def protocol_class(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """`HeaderTimeoutProtocol` with the given deadline (seconds)."""
    return type(
        "HeaderTimeoutProtocol",
        (HeaderTimeoutProtocol,),
        {"header_timeout_s": header_timeout_s},
    )


def uvicorn_config(app: Any, config: ServerConfig, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of a node serving ``app`` per ``config``. ``overrides`` are
    for what does not touch the limits (log settings, a test's port); a limit cannot be
    overridden here.

    Raises:
        ValueError: ``overrides`` names one of the settings this module owns.
    """
    owned: dict[str, Any] = {
        "http": protocol_class(config.header_timeout_s),
        "ws": "websockets-sansio",
        "ws_max_size": MAX_WS_MESSAGE_BYTES,
        "ws_per_message_deflate": False,
        "ws_ping_interval": WS_PING_INTERVAL_S,
        "proxy_headers": False,
    }
    clash = owned.keys() & overrides.keys()
    if clash:
        raise ValueError(f"uvicorn settings owned by tidings.server.serving: {sorted(clash)}")
    settings: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "access_log": False,
        "lifespan": "on",
    }
    settings.update(overrides)
    return uvicorn.Config(app, **owned, **settings)
