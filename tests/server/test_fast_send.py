"""`tidings.server.fast_send`: ``PUT /v1/messages/{username}`` answered ahead of the router
gives every answer the FastAPI route gives. Each case runs against the app as built and
against the same app with the fast path taken out (the FastAPI route alone), with the same
accounts, and the answers (status, headers, body) and the metrics must agree; and the fast
path must actually answer a plain send itself, and hand everything else to the app with the
body unchanged."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.app import make_config
from tests.support.devices import DeviceKit, basic_auth, outgoing
from tidings.app import create_app
from tidings.server.fast_send import FastSend, send_route
from tidings.wire.base64url import b64e

SEND_RESULT = re.compile(rb'\{"server_timestamp_ms":\d{13},"message_ids":\["[A-Za-z0-9_-]{22}"\]\}')


def _without_fast_path(app: FastAPI) -> FastAPI:
    # The middleware stack is built at the first request: before it, the list decides.
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastSend]
    return app


@dataclass
class Pair:
    """The same node twice: ``fast`` as built, ``plain`` without the fast path."""

    fast: TestClient
    plain: TestClient
    alice: DeviceKit
    bob: DeviceKit

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, ...]:
        return tuple(c.request(method, path, **kwargs) for c in (self.fast, self.plain))

    def metrics(self, client: TestClient) -> list[str]:
        text = client.get("/metrics").text
        return sorted(
            line
            for line in text.splitlines()
            if line.startswith(("tidings_http_requests_total{", "tidings_errors_total{"))
            and 'route="/metrics"' not in line
        )


def _register(client: TestClient, kit: DeviceKit, username: str) -> None:
    response = client.post("/v1/accounts", json={"username": username, "device": kit.device_keys()})
    assert response.status_code == 201, response.text
    kit.username, kit.device_id = username, response.json()["device_id"]


def _pair(tmp_path: Path, **overrides: Any) -> Iterator[Pair]:
    alice, bob = DeviceKit(), DeviceKit(registration_id=4321)
    configs = [make_config(tmp_path / name, **overrides) for name in ("fast", "plain")]
    apps = [create_app(configs[0]), _without_fast_path(create_app(configs[1]))]
    with (
        TestClient(apps[0], raise_server_exceptions=False) as fast,
        TestClient(apps[1], raise_server_exceptions=False) as plain,
    ):
        for client in (fast, plain):
            _register(client, alice, "alice")
            _register(client, bob, "bob")
        yield Pair(fast, plain, alice, bob)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    yield from _pair(tmp_path)


def assert_same(fast: httpx.Response, plain: httpx.Response) -> None:
    assert fast.status_code == plain.status_code, (fast.text, plain.text)
    assert fast.headers.multi_items() == plain.headers.multi_items()
    if fast.status_code == 200:
        assert SEND_RESULT.fullmatch(fast.content) and SEND_RESULT.fullmatch(plain.content)
    else:
        assert fast.content == plain.content


def _flat_routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from _flat_routes(inner.routes)
        else:
            yield route


def test_no_other_route_takes_a_put_to_the_send_path(pair: Pair) -> None:
    """Only the send route matches ``PUT /v1/messages/<segment>`` fully (a route matching it
    with another method, the acknowledgement's DELETE, only matches partially, and the router
    takes a full match first): the router would have chosen the route the fast path serves."""
    route = send_route()
    assert route.path == "/v1/messages/{username}" and route.methods == {"PUT"}
    app: FastAPI = pair.fast.app  # type: ignore[assignment]
    others = [r for r in _flat_routes(app.router.routes) if r is not route]
    assert any(getattr(r, "path", "") == "/v1/messages/{message_id}" for r in others)
    for other in others:
        path = getattr(other, "path", "")
        regex = getattr(other, "path_regex", None)
        takes_put = "PUT" in (getattr(other, "methods", None) or {"PUT"})  # a mount: any
        for sample in ("/v1/messages/bob", "/v1/messages/{username}", "/v1/messages/a.b-c_1"):
            if regex is not None and regex.match(sample):
                assert not takes_put, path
            assert not (path and sample.startswith(path + "/") and takes_put), path


def test_answers_agree_with_the_fastapi_route(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob
    send = {"messages": [outgoing(bob)]}
    wrong_secret = basic_auth(f"alice.{alice.device_id}", b64e(bytes(32)))
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/v1/messages/bob", {"json": send, "headers": alice.auth}),
        ("PUT", "/v1/messages/alice", {"json": {"messages": []}, "headers": alice.auth}),
        ("PUT", "/v1/messages/bob", {"json": send}),  # no credentials
        ("PUT", "/v1/messages/bob", {"json": send, "headers": wrong_secret}),
        ("PUT", "/v1/messages/bob", {"json": send, "headers": {"Authorization": "Basic !!"}}),
        ("PUT", "/v1/messages/nobody", {"json": send, "headers": alice.auth}),
        (  # mismatched devices: 409 with the missing and extra ids
            "PUT",
            "/v1/messages/bob",
            {"json": {"messages": [outgoing(7, 1)]}, "headers": alice.auth},
        ),
        (  # stale registration id: 410
            "PUT",
            "/v1/messages/bob",
            {"json": {"messages": [outgoing(bob, 99)]}, "headers": alice.auth},
        ),
        (  # a device named twice
            "PUT",
            "/v1/messages/bob",
            {"json": {"messages": [outgoing(bob), outgoing(bob)]}, "headers": alice.auth},
        ),
        (  # a body that is no RatchetMessage
            "PUT",
            "/v1/messages/bob",
            {
                "json": {"messages": [{**outgoing(bob), "body": b64e(b"\xff" * 40)}]},
                "headers": alice.auth,
            },
        ),
        (  # the model refuses: type out of range
            "PUT",
            "/v1/messages/bob",
            {"json": {"messages": [{**outgoing(bob), "type": 99}]}, "headers": alice.auth},
        ),
        ("PUT", "/v1/messages/bob", {"content": b"{not json", "headers": alice.auth}),
        ("PUT", "/v1/messages/bob", {"content": b"[]", "headers": alice.auth}),
        ("PUT", "/v1/messages/bob", {"content": b"\xff\xfe", "headers": alice.auth}),
        ("PUT", "/v1/messages/bob", {"content": b"[" * 100_000, "headers": alice.auth}),
        ("PUT", "/v1/messages/bob", {"content": b"", "headers": alice.auth}),
        (  # invalid body and bad credentials: the credentials are refused first
            "PUT",
            "/v1/messages/bob",
            {"json": {"messages": "x"}, "headers": wrong_secret},
        ),
        (  # JSON that is not declared as JSON
            "PUT",
            "/v1/messages/bob",
            {
                "content": json.dumps(send).encode(),
                "headers": {**alice.auth, "Content-Type": "text/plain"},
            },
        ),
        (  # declared with a parameter: still JSON to FastAPI (and handed to it)
            "PUT",
            "/v1/messages/bob",
            {
                "content": json.dumps({"messages": [outgoing(bob)]}).encode(),
                "headers": {**alice.auth, "Content-Type": "application/json; charset=utf-8"},
            },
        ),
        ("PUT", "/v1/messages/bob/extra", {"json": send, "headers": alice.auth}),
        ("PUT", "/v1/messages/", {"json": send, "headers": alice.auth}),
        ("PUT", "/v1/messages", {"json": send, "headers": alice.auth}),
        ("GET", "/v1/messages/bob", {"headers": alice.auth}),
        ("POST", "/v1/messages/bob", {"json": send, "headers": alice.auth}),
        ("PATCH", "/v1/messages/bob", {"json": send, "headers": alice.auth}),
        ("PUT", "/v1/messages/bob", {"content": b"x" * (2 * 1024 * 1024 + 1)}),
    ]
    for method, path, kwargs in cases:
        fast, plain = pair.both(method, path, **kwargs)
        assert_same(fast, plain)
    assert pair.metrics(pair.fast) == pair.metrics(pair.plain)


def test_limits_agree_with_the_fastapi_route(tmp_path: Path) -> None:
    """The send rate limit (429 with Retry-After) and a full queue (507)."""
    for overrides, status in (({"rate_sends_per_minute": 2}, 429), ({"queue_limit": 1}, 507)):
        for pair in _pair(tmp_path / str(status), **overrides):
            answers = []
            for _ in range(3):
                fast, plain = pair.both(
                    "PUT",
                    "/v1/messages/bob",
                    json={"messages": [outgoing(pair.bob)]},
                    headers=pair.alice.auth,
                )
                assert_same(fast, plain)
                answers.append(fast.status_code)
            assert answers[-1] == status
            assert pair.metrics(pair.fast) == pair.metrics(pair.plain)


@pytest.mark.parametrize("where", ["send", "authentication"])
def test_an_unexpected_failure_is_the_same_500(pair: Pair, where: str) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the disk is on fire")

    for client in (pair.fast, pair.plain):
        state = client.app.state.tidings  # type: ignore[attr-defined]
        if where == "send":
            state.store.enqueue = broken
        else:  # the credentials read from the database, past the cache
            state.cache.device = lambda *args: None
            state.store.device = broken
    fast, plain = pair.both(
        "PUT", "/v1/messages/bob", json={"messages": [outgoing(pair.bob)]}, headers=pair.alice.auth
    )
    assert fast.status_code == 500
    assert_same(fast, plain)
    assert pair.metrics(pair.fast) == pair.metrics(pair.plain)


def _asgi_request(
    client: TestClient, inner: Any, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, list[bytes], list[bytes]]:
    """``FastSend(inner)`` on one request, on the client's event loop (scope["app"] its app,
    for the state): (status, the body chunks ``inner`` received, the response body)."""
    received: list[bytes] = []
    answer: list[bytes] = []
    status = 0

    async def run() -> None:
        nonlocal status
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
            for i, c in enumerate(body_chunks)
        ]

        async def receive() -> Any:
            return messages.pop(0)

        async def send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                answer.append(message.get("body", b""))

        async def inner_app(scope: Any, receive: Any, send: Any) -> None:
            while True:
                message = await receive()
                received.append(message["body"])
                if not message.get("more_body"):
                    break
            await inner(scope, send)

        scope = {
            "type": "http",
            "method": "PUT",
            "path": "/v1/messages/bob",
            "root_path": "",
            "headers": headers,
            "query_string": b"",
            "app": client.app,
        }
        await FastSend(inner_app)(scope, receive, send)

    assert client.portal is not None
    client.portal.call(run)
    return status, received, answer


async def _teapot(scope: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_a_plain_send_is_answered_by_the_fast_path_and_the_rest_handed_on(pair: Pair) -> None:
    token = pair.alice.auth["Authorization"].encode()
    json_headers = [(b"content-type", b"application/json"), (b"authorization", token)]
    body = json.dumps({"messages": [outgoing(pair.bob)]}).encode()
    chunks = [body[:100], body[100:]]

    status, received, answer = _asgi_request(pair.fast, _teapot, chunks, json_headers)
    assert status == 200 and received == [] and SEND_RESULT.fullmatch(b"".join(answer))

    wrong = base64.b64encode(f"alice.1:{b64e(bytes(32))}".encode())
    for headers, sent in (
        ([(b"content-type", b"application/json"), (b"authorization", b"Basic " + wrong)], chunks),
        (json_headers, [b'{"messages": ', b'"x"}']),  # JSON, but not a send
        ([(b"content-type", b"text/plain"), (b"authorization", token)], chunks),
        (json_headers, [b"{", b"}"]),
    ):
        status, received, _ = _asgi_request(pair.fast, _teapot, sent, headers)
        assert status == 418 and received == sent  # handed on, the body replayed unchanged
