"""Server CPU per HTTP send, in this process (issue 9: the HTTP request path):

    PYTHONPATH=src .venv/bin/python bench/http_send.py [--n 1000] [--rounds 7] [--concurrency 16]
        [--profile FILE]

The app is `tidings.app.create_app` on a temporary SQLite data directory, started with its
lifespan (migrations, hub, sweep, key-transparency publisher), as `tidings server` builds it,
minus uvicorn: requests go straight into the ASGI app with a prebuilt scope and a ``receive``
that hands over the whole body, so no socket, HTTP parser or client library is in the figure.
Two accounts are registered through ``POST /v1/accounts``; then each round sends ``--n``
``PUT /v1/messages/{username}`` requests from the first to the second (one device, the
1,119-byte RatchetMessage body of `bench/relay.py`, a fresh commitment each), ``--concurrency``
in flight at a time so the writer batches them as under load.

Printed per round, in µs of CPU per send: ``time.process_time`` (every thread of the process,
so the writer thread's commits count) / ``time.thread_time`` of the event loop's thread (the
one core an HTTP request's own work runs on):

- ``http``: the whole request through the app.
- ``direct``: `relay_send` called with the same inputs, already authenticated and parsed (the
  send itself: limiter, device check, franking, the durable store, the hint).
- ``http - direct``: what the HTTP request path adds (routing, auth, body parsing and
  validation, response building, middleware, metrics, access log).
- ``driver``: this script's own cost per request against an app that answers at once
  (included in ``http``; subtract it for the server's share).

The summary is the median of the rounds. ``--profile FILE`` runs one more HTTP round under
cProfile (timed by ``time.process_time``, so waits do not count), writes the stats to FILE and
prints the top functions by internal time."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay import device_keys, ratchet_body

from tidings.app import create_app
from tidings.server.auth import authenticate
from tidings.server.config import ServerConfig
from tidings.server.models import SendRequest
from tidings.server.routes.messages import relay_send
from tidings.server.state import ServerState
from tidings.wire.base64url import b64e

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "scheme": "http",
    "root_path": "",
    "query_string": b"",
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8000),
}


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    """The scope uvicorn would build for this request (no state: the app has no lifespan
    state)."""
    return {
        **_SCOPE,
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "headers": headers,
    }


async def call(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, bytes]:
    """One request through ``app``: (status, response body)."""
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # as a server does: nothing more until disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def json_request(
    method: str, path: str, payload: Any, authorization: str | None = None
) -> tuple[Scope, bytes]:
    body = json.dumps(payload).encode()
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if authorization is not None:
        headers.insert(1, (b"authorization", authorization.encode()))
    return http_scope(method, path, headers), body


async def in_flight(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, float]:
    """CPU seconds for ``count`` calls of ``one(i)``, ``concurrency`` at a time: (the whole
    process, the event loop's thread alone)."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await one(i)

    started, started_loop = time.process_time(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - started, time.thread_time() - started_loop


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def run(args: argparse.Namespace) -> None:
    logging.getLogger("tidings").setLevel(logging.WARNING)  # the access log is not printed
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(
            data_dir=Path(tmp),
            rate_sends_per_minute=100_000_000,
            rate_registrations_per_hour=100_000,
            queue_limit=10**9,
        )
        app = create_app(config)
        state: ServerState = app.state.tidings
        async with app.router.lifespan_context(app):
            sender_keys, sender = device_keys("snd0001")
            recipient_keys, recipient = device_keys("rcv0001")
            for keys, device in ((sender_keys, sender), (recipient_keys, recipient)):
                status, answer = await call(
                    app, *json_request(
                        "POST", "/v1/accounts", {"username": device.username, "device": keys}
                    )
                )
                assert status == 201, answer
            body_b64 = b64e(ratchet_body())
            path = f"/v1/messages/{recipient.username}"
            authorization = sender.authorization()

            def send_body() -> dict[str, Any]:
                return {
                    "messages": [
                        {
                            "device_id": 1,
                            "registration_id": recipient.registration_id,
                            "type": 2,
                            "body": body_b64,
                            "commitment": b64e(os.urandom(32)),
                        }
                    ]
                }

            auth_scope, _ = json_request("PUT", path, {}, authorization)
            auth = await authenticate(_headers(auth_scope), state)

            async def http_round() -> tuple[float, float]:
                requests = [
                    json_request("PUT", path, send_body(), authorization) for _ in range(args.n)
                ]

                async def one(i: int) -> None:
                    status, answer = await call(app, *requests[i])
                    if status != 200:
                        raise AssertionError(f"{status}: {answer!r}")

                return await in_flight(args.n, args.concurrency, one)

            async def direct_round() -> tuple[float, float]:
                sends = [SendRequest.model_validate(send_body()).messages for _ in range(args.n)]

                async def one(i: int) -> None:
                    await relay_send(state, auth, recipient.username, sends[i])

                return await in_flight(args.n, args.concurrency, one)

            async def driver_round() -> tuple[float, float]:
                requests = [
                    json_request("PUT", path, send_body(), authorization) for _ in range(args.n)
                ]

                async def one(i: int) -> None:
                    await call(answer_at_once, *requests[i])

                return await in_flight(args.n, args.concurrency, one)

            await http_round()  # warm-up: caches filled, code paths compiled
            await direct_round()
            columns = ("http", "direct", "http-direct", "driver")
            rows: dict[str, list[tuple[float, float]]] = {c: [] for c in columns}
            print(f"{'round':>5}" + "".join(f"{c:>20}" for c in columns))
            print(" " * 5 + f"{'process / loop µs':>20}" * len(columns))
            for r in range(args.rounds):
                http, direct = await http_round(), await direct_round()
                driver = await driver_round()
                values = {
                    "http": http,
                    "direct": direct,
                    "http-direct": (http[0] - direct[0], http[1] - direct[1]),
                    "driver": driver,
                }
                line = f"{r:5d}"
                for c in columns:
                    cpu, loop = (v / args.n * 1e6 for v in values[c])
                    rows[c].append((cpu, loop))
                    line += f"{cpu:13.1f} /{loop:5.0f}"
                print(line)
            summary = ", ".join(
                f"{c} {statistics.median(p for p, _ in rows[c]):.1f} / "
                f"{statistics.median(lo for _, lo in rows[c]):.1f}"
                for c in columns
            )
            print(
                f"median µs/send (process / event loop thread): {summary} "
                f"(n={args.n}, concurrency={args.concurrency}, rounds={args.rounds})"
            )
            if args.profile:
                profiler = cProfile.Profile(time.process_time)  # CPU, not waits
                profiler.enable()
                await http_round()
                profiler.disable()
                profiler.dump_stats(args.profile)
                stats = pstats.Stats(profiler)
                stats.sort_stats("tottime").print_stats(args.top)


def _headers(scope: Scope) -> Any:
    from starlette.datastructures import Headers

    return Headers(scope=scope)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="sends per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--profile", help="write cProfile stats of one more HTTP round here")
    parser.add_argument("--top", type=int, default=40, help="profile lines to print")
    args = parser.parse_args(argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
