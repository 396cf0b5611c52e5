"""``PUT /v1/messages/{username}`` served ahead of FastAPI's router when nothing about the
request is unusual: the send route's own work (`tidings.server.routes.messages.send`) without
the router's walk over every route, dependency solving and response-model serialisation,
which cost several times the send itself (`bench/http_send.py`).

The contract: every request gets the answer the FastAPI route gives it. The fast path only
*answers* a request that would reach the route's endpoint with a valid body and a device that
authenticates; everything else is handed to the app unchanged (its body replayed), so every
refusal before the send (404, 405, 400 ``malformed``, 401, 403, a body of another content
type) keeps coming from the one FastAPI path. Once the send has started (its rate limit taken)
there is no handing over: a typed error is answered as the app's handler answers it
(`tidings.server.errors.typed_error_response`), anything else propagates to the outer error
middleware, as it does from the route (a 500 ``internal``).

Which requests it takes: an HTTP ``PUT`` whose path is matched by the send route's own pattern
(the route object registered in the app, so a change of path moves both), with no
``root_path``, a first ``Content-Type`` of exactly ``application/json``, and a body that
``json.loads`` and `SendRequest` accept, as FastAPI reads and validates it. No route before the
send route in the app matches such a path (tests/server/test_fast_send.py checks that against
the router, and compares both paths' answers).

It sits inside `tidings.server.middleware.LimitsAndMetrics` (so the 413 for a declared size,
the metrics and the access log are the same: the matched route is left in the scope as the
router leaves it) and outside the app's exception middleware.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.errors import TidingsError
from tidings.server.auth import authenticate
from tidings.server.errors import typed_error_response
from tidings.server.models import SendRequest
from tidings.server.routes import messages
from tidings.server.state import ServerState


def send_route() -> APIRoute:
    """The FastAPI route of ``PUT /v1/messages/{username}`` (`messages.send`)."""
    for route in messages.router.routes:
        if isinstance(route, APIRoute) and route.endpoint is messages.send:
            return route
    raise LookupError("the send route is not registered")  # pragma: no cover - a wiring bug


class FastSend:
    """The middleware (the module docstring gives its contract). Raises what the send raises
    other than a typed error, for the outer error middleware to answer 500 ``internal``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = send_route()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path_params = self._path_params(scope)
        if path_params is None:
            await self.app(scope, receive, send)
            return
        buffered, body = await _read_body(receive)
        request = None if body is None else _send_request(scope, body)
        if request is None:
            await self.app(scope, _replay(buffered, receive), send)
            return
        # What the router leaves in the scope for a match (the metrics read the route; when
        # the request is handed on, the router sets the same again).
        scope.update(endpoint=self.route.endpoint, path_params=path_params, route=self.route)
        state: ServerState = scope["app"].state.tidings  # as `tidings.server.state.get_state`
        try:
            auth = await authenticate(Headers(scope=scope), state)
        except TidingsError:
            # The app answers it (and counts the error) exactly as it answers any refusal.
            await self.app(scope, _replay(buffered, receive), send)
            return
        response: Response
        try:
            result = await messages.relay_send(
                state, auth, path_params["username"], request.messages
            )
        except TidingsError as exc:
            response = typed_error_response(exc, state.metrics)
        else:
            # What FastAPI sends for the route's response model: pydantic's JSON bytes.
            response = Response(result.model_dump_json(), media_type="application/json")
        await response(scope, receive, send)

    def _path_params(self, scope: Scope) -> dict[str, Any] | None:
        """The route's path parameters if the request is a ``PUT`` to its path (matched
        as the router matches it), else None."""
        if scope["type"] != "http" or scope["method"] != "PUT" or scope.get("root_path"):
            return None
        match = self.route.path_regex.match(scope["path"])
        if match is None:
            return None
        convertors = self.route.param_convertors
        return {
            **scope.get("path_params", {}),
            **{k: convertors[k].convert(v) for k, v in match.groupdict().items()},
        }


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message of the request body, and the body (None if the client left first)."""
    buffered: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        buffered.append(message)
        if message["type"] != "http.request":
            return buffered, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return buffered, b"".join(chunks)


def _send_request(scope: Scope, body: bytes) -> SendRequest | None:
    """The body as the route's ``body`` parameter, if FastAPI would read it as JSON and it is
    valid; else None (the app then gives its own answer)."""
    content_type = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value  # the first one, as Starlette's Headers.get reads it
            break
    if content_type != b"application/json" or not body:
        return None
    try:
        return SendRequest.model_validate(json.loads(body))
    except Exception:  # JSON, UTF-8, nesting depth, validation: FastAPI gives the answer
        return None


def _replay(buffered: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return buffered.pop(0) if buffered else await receive()

    return replay
