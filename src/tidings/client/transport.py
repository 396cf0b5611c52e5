"""HTTP and WebSocket transport to a Tidings server (docs/api.md, version 1).

`Transport` maps each endpoint of the contract to one async method and nothing more: no state
beyond the base URL and the device credentials, no retries of non-idempotent requests (the SDK
decides what to retry). Every failure is typed:

- the server's JSON error ``{"error": {"code", "message"}}`` becomes `ServerError` with that
  code (409 ``mismatched_devices`` → `MismatchedDevicesError`, 410 ``stale_devices`` →
  `StaleDevicesError`, carrying the device ids; a 404 to a request naming an account, its
  devices, its keys or its queue → `UnknownAccountError`);
- a connection failure, a timeout or a reply that is not the API becomes `TransportError`.

Binary values are base64url without padding, as the contract says. The device secret is sent
only in the Authorization header and never appears in an error message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from tidings.client.errors import (
    ServerError,
    TransportError,
)
from tidings.errors import (
    DecodeError,
    MismatchedDevicesError,
    StaleDevicesError,
    TidingsError,
    UnknownAccountError,
)
from tidings.wire.base64url import b64d as _b64d
from tidings.wire.base64url import b64e as b64e

DEFAULT_TIMEOUT = 20.0
UPLOAD_CHUNK = 256 * 1024

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a transfer advances (total 0 when unknown)."""


def b64d(text: object) -> bytes:
    """`tidings.wire.base64url.b64d` for values the server sent: anything malformed is the
    server's fault, so it is a `TransportError` here."""
    if not isinstance(text, str):
        raise TransportError("the server sent a malformed binary value")
    try:
        return _b64d(text)
    except DecodeError:
        raise TransportError("the server sent a malformed binary value") from None


@dataclass(frozen=True, slots=True)
class Credentials:
    """A device's login: account name, device id and the 32-byte device secret."""

    username: str
    device_id: int
    secret: bytes

    def authorization(self) -> str:
        user = f"{self.username}.{self.device_id}"
        token = base64.b64encode(f"{user}:{b64e(self.secret)}".encode()).decode("ascii")
        return f"Basic {token}"

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, device_id={self.device_id})"


@dataclass(frozen=True, slots=True)
class OutgoingEnvelope:
    """One entry of ``PUT /v1/messages/{username}``."""

    device_id: int
    registration_id: int
    type: int
    body: bytes
    commitment: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "registration_id": self.registration_id,
            "type": self.type,
            "body": b64e(self.body),
            "commitment": b64e(self.commitment),
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    server_timestamp_ms: int
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    """An entry of ``GET /v1/accounts/{username}/devices``."""

    device_id: int
    registration_id: int
    identity_key: bytes


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TransportError(f"the server sent a malformed {what}")
    return value


def _ids(value: object) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TransportError("the server sent a malformed device list")
    return [_int(v, "device id") for v in value]


def _error_from_response(response: httpx.Response, account: str | None = None) -> TidingsError:
    """Turn a 4xx/5xx response into the typed error (the body is the contract's error).
    ``account``: the account the request names (its 404 says there is no such account)."""
    code, message = f"http_{response.status_code}", f"server answered {response.status_code}"
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    error = body.get("error")
    details: dict[str, Any] = dict(body)
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        # The contract does not pin where the device lists go; accept them at the top level,
        # inside "error", or inside "error.details".
        details.update(error)
        if isinstance(error.get("details"), dict):
            details.update(error["details"])
    if response.status_code == 409 and code == "mismatched_devices":
        return MismatchedDevicesError(_ids(details.get("missing")), _ids(details.get("extra")))
    if response.status_code == 410 and code == "stale_devices":
        return StaleDevicesError(_ids(details.get("stale")))
    if response.status_code == 404 and account is not None:
        return UnknownAccountError(f"there is no account named {account!r}")
    return ServerError(code, message, response.status_code)


class Transport:
    """The HTTP client of one device (``credentials`` None: only unauthenticated calls).

    Use as ``async with Transport(...) as t:`` or call `aclose`.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def with_credentials(self, credentials: Credentials) -> Transport:
        """A transport sharing this one's connection pool, logged in as ``credentials``."""
        return Transport(self.base_url, credentials, http=self._http)

    # -- plumbing ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        auth: bool = True,
        params: dict[str, str] | None = None,
        account: str | None = None,
    ) -> Any:
        """One API request; its JSON answer (None for an empty one).

        Raises: `_error_from_response`'s typed error (``account``: the account the request
        names, see there), TransportError (unreachable, not JSON)."""
        headers = {}
        if auth:
            if self.credentials is None:
                raise TransportError("this device is not registered")
            headers["Authorization"] = self.credentials.authorization()
        try:
            response = await self._http.request(
                method, path, json=json_body, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            raise TransportError(
                f"cannot reach the server at {self.base_url} ({exc.__class__.__name__})"
            ) from None
        if response.status_code >= 400:
            raise _error_from_response(response, account)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise TransportError("the server's answer is not JSON") from None

    async def _request_obj(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        value = await self._request(method, path, **kwargs)
        if not isinstance(value, dict):
            raise TransportError("the server's answer is not a JSON object")
        return value

    # -- accounts and devices ----------------------------------------------------------------

    async def create_account(self, username: str, device: dict[str, Any]) -> int:
        """``POST /v1/accounts``; returns the device id. Raises ServerError
        (``username_taken``, ``invalid_signature``, ...)."""
        body = await self._request_obj(
            "POST", "/v1/accounts", json_body={"username": username, "device": device}, auth=False
        )
        return _int(body.get("device_id"), "device id")

    async def link_device(
        self, username: str, code: str, device: dict[str, Any], link_binding: bytes | None = None
    ) -> int:
        """``POST /v1/devices/link`` (with the key-transparency ``link_binding`` when the code
        carried a local secret); returns the new device id."""
        request: dict[str, Any] = {"username": username, "code": code, "device": device}
        if link_binding is not None:
            request["link_binding"] = b64e(link_binding)
        body = await self._request_obj("POST", "/v1/devices/link", json_body=request, auth=False)
        return _int(body.get("device_id"), "device id")

    async def create_provisioning_code(self) -> tuple[str, int]:
        """``POST /v1/devices/provisioning``; returns (code, expires_at_ms)."""
        body = await self._request_obj("POST", "/v1/devices/provisioning")
        code = body.get("code")
        if not isinstance(code, str):
            raise TransportError("the server sent a malformed provisioning code")
        return code, _int(body.get("expires_at_ms", 0), "expiry")

    async def own_devices(self) -> list[dict[str, Any]]:
        """``GET /v1/devices``: this account's devices."""
        body = await self._request_obj("GET", "/v1/devices")
        devices = body.get("devices")
        if not isinstance(devices, list):
            raise TransportError("the server sent a malformed device list")
        return [d for d in devices if isinstance(d, dict)]

    async def delete_device(self, device_id: int) -> None:
        await self._request("DELETE", f"/v1/devices/{device_id}")

    async def delete_account(self) -> None:
        await self._request("DELETE", "/v1/accounts/me")

    async def account_devices(self, username: str) -> list[RemoteDevice]:
        """``GET /v1/accounts/{username}/devices``. Raises UnknownAccountError."""
        body = await self._request_obj(
            "GET", f"/v1/accounts/{quote(username, safe='')}/devices", account=username
        )
        devices = body.get("devices")
        if not isinstance(devices, list):
            raise TransportError("the server sent a malformed device list")
        out = []
        for d in devices:
            if not isinstance(d, dict):
                raise TransportError("the server sent a malformed device list")
            out.append(
                RemoteDevice(
                    device_id=_int(d.get("device_id"), "device id"),
                    registration_id=_int(d.get("registration_id"), "registration id"),
                    identity_key=b64d(d.get("identity_key")),
                )
            )
        return out

    # -- key transparency (docs/api.md "Key transparency") -----------------------------------

    async def _kt_get(self, path: str, *, auth: bool = True) -> dict[str, Any] | None:
        """``GET path`` of the key-transparency API: its JSON object, or None while no epoch
        is published (404 ``unknown_epoch``). Raises as `_request_obj` otherwise."""
        try:
            return await self._request_obj("GET", path, auth=auth)
        except ServerError as exc:
            if exc.code == "unknown_epoch":
                return None
            raise

    async def kt_head(self, epoch: int | None = None) -> dict[str, Any] | None:
        """``GET /v1/kt/head[/{epoch}]`` (no authentication): the signed head's JSON, or None
        while no epoch is published (404 ``unknown_epoch``)."""
        path = "/v1/kt/head" if epoch is None else f"/v1/kt/head/{epoch}"
        return await self._kt_get(path, auth=False)

    async def kt_lookup(self, username: str) -> dict[str, Any] | None:
        """``GET /v1/kt/lookup/{username}``: head, proof and served list (None: no epoch)."""
        return await self._kt_get(f"/v1/kt/lookup/{quote(username, safe='')}", auth=False)

    async def kt_history(self, username: str) -> dict[str, Any] | None:
        """``GET /v1/kt/history/{username}`` (own account): lookup, history proof and every
        published list, newest first (None: no epoch yet)."""
        return await self._kt_get(f"/v1/kt/history/{quote(username, safe='')}")

    async def kt_submit(self, device_list: bytes) -> int:
        """``PUT /v1/kt/device-list``: queue this account's next signed list; its version."""
        body = await self._request_obj(
            "PUT", "/v1/kt/device-list", json_body={"device_list": b64e(device_list)}
        )
        return _int(body.get("version"), "version")

    # -- keys --------------------------------------------------------------------------------

    async def put_keys(self, keys: dict[str, Any]) -> None:
        """``PUT /v1/keys`` with any of signed_prekey, last_resort_kem_prekey, one_time_prekeys,
        kem_prekeys (already base64url)."""
        await self._request("PUT", "/v1/keys", json_body=keys)

    async def key_count(self) -> tuple[int, int]:
        """``GET /v1/keys/count``: (one-time X25519, one-time KEM) prekeys left on the server."""
        body = await self._request_obj("GET", "/v1/keys/count")
        return _int(body.get("one_time"), "key count"), _int(body.get("kem"), "key count")

    async def get_bundles(self, username: str, device_id: int | None = None) -> dict[int, bytes]:
        """``GET /v1/keys/{username}[?device_id=N]``: encoded PrekeyBundle per device id.

        Claims one-time prekeys on the server: call only when a session is needed.

        Raises: UnknownAccountError (all devices asked for), ServerError ``not_found`` (one
        device asked for: the account or that device is unknown).
        """
        params = None if device_id is None else {"device_id": str(device_id)}
        body = await self._request_obj(
            "GET", f"/v1/keys/{quote(username, safe='')}", params=params,
            account=username if device_id is None else None,
        )
        bundles = body.get("bundles")
        if not isinstance(bundles, list):
            raise TransportError("the server sent a malformed bundle list")
        out: dict[int, bytes] = {}
        for entry in bundles:
            if not isinstance(entry, dict):
                raise TransportError("the server sent a malformed bundle list")
            out[_int(entry.get("device_id"), "device id")] = b64d(entry.get("bundle"))
        return out

    # -- messages ----------------------------------------------------------------------------

    async def send_messages(
        self, username: str, messages: Sequence[OutgoingEnvelope]
    ) -> SendResult:
        """``PUT /v1/messages/{username}``.

        Raises:
            MismatchedDevicesError / StaleDevicesError: the device list is not current.
            UnknownAccountError: no such account.
            ServerError: any other refusal (``queue_full``, ``rate_limited``...).
        """
        body = await self._request_obj(
            "PUT",
            f"/v1/messages/{quote(username, safe='')}",
            json_body={"messages": [m.to_json() for m in messages]},
            account=username,
        )
        ids = body.get("message_ids", [])
        if not isinstance(ids, list):
            raise TransportError("the server sent malformed message ids")
        return SendResult(
            server_timestamp_ms=_int(body.get("server_timestamp_ms"), "timestamp"),
            message_ids=tuple(b64d(i) for i in ids),
        )

    async def get_messages(self) -> tuple[list[bytes], bool]:
        """``GET /v1/messages``: (encoded Envelopes oldest first, more?)."""
        body = await self._request_obj("GET", "/v1/messages")
        envelopes = body.get("envelopes")
        if not isinstance(envelopes, list):
            raise TransportError("the server sent a malformed message list")
        return [b64d(e) for e in envelopes], bool(body.get("more", False))

    async def ack_message(self, message_id: bytes) -> None:
        """``DELETE /v1/messages/{id}`` (idempotent)."""
        await self._request("DELETE", f"/v1/messages/{b64e(message_id)}")

    # -- attachments -------------------------------------------------------------------------

    async def upload_attachment(
        self, source: BinaryIO, length: int, *, progress: Progress | None = None
    ) -> str:
        """``POST /v1/attachments`` streaming ``length`` bytes of ciphertext from ``source``;
        returns the attachment id. ``progress`` sees (bytes sent, length) per chunk."""
        if self.credentials is None:
            raise TransportError("this device is not registered")

        async def chunks() -> AsyncIterator[bytes]:
            done = 0
            while piece := source.read(UPLOAD_CHUNK):
                yield piece
                done += len(piece)
                if progress is not None:
                    progress(done, length)

        try:
            response = await self._http.post(
                "/v1/attachments",
                content=chunks(),
                headers={
                    "Authorization": self.credentials.authorization(),
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                },
            )
        except httpx.HTTPError as exc:
            raise TransportError(
                f"cannot reach the server at {self.base_url} ({exc.__class__.__name__})"
            ) from None
        if response.status_code >= 400:
            raise _error_from_response(response)
        try:
            body = response.json()
            return str(body["id"])
        except (ValueError, KeyError, TypeError):
            raise TransportError("the server's answer is not the API") from None

    async def download_attachment(
        self, attachment_id: str, *, progress: Progress | None = None
    ) -> bytes:
        """``GET /v1/attachments/{id}``: the ciphertext, streamed; ``progress`` sees
        (bytes received, Content-Length or 0)."""
        if self.credentials is None:
            raise TransportError("this device is not registered")
        try:
            async with self._http.stream(
                "GET",
                f"/v1/attachments/{quote(attachment_id, safe='')}",
                headers={"Authorization": self.credentials.authorization()},
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_from_response(response)
                try:
                    total = int(response.headers.get("content-length", "0"))
                except ValueError:
                    total = 0
                parts: list[bytes] = []
                done = 0
                async for piece in response.aiter_bytes(UPLOAD_CHUNK):
                    parts.append(piece)
                    done += len(piece)
                    if progress is not None:
                        progress(done, total)
                return b"".join(parts)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"cannot reach the server at {self.base_url} ({exc.__class__.__name__})"
            ) from None

    # -- trust & safety ----------------------------------------------------------------------

    async def post_report(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/reports`` (body as docs/api.md); returns ``{"report_id", "case_id"}``.

        Raises:
            ServerError: the report was refused, with the reason's code
                (``commitment_mismatch``, ``broken_context_chain``, ``report_replayed``...).
        """
        return await self._request_obj("POST", "/v1/reports", json_body=body)

    async def account_status(self) -> dict[str, Any]:
        """``GET /v1/account/status``: enforcement state of this account and any appeal."""
        return await self._request_obj("GET", "/v1/account/status")

    async def post_appeal(self, decision_id: str, text: str) -> dict[str, Any]:
        """``POST /v1/appeals``; returns ``{"appeal_id"}``."""
        return await self._request_obj(
            "POST", "/v1/appeals", json_body={"decision_id": decision_id, "text": text}
        )

    # -- detection (docs/api.md "Detection") -------------------------------------------------

    async def detection_list_digest(self) -> dict[str, Any] | None:
        """``GET /v1/detection/list/digest`` (no authentication): the signed statement of the
        published list, or None while none is published (404 ``detection_list_missing``)."""
        try:
            return await self._request_obj("GET", "/v1/detection/list/digest", auth=False)
        except ServerError as exc:
            if exc.code == "detection_list_missing":
                return None
            raise

    async def detection_list(self, max_bytes: int) -> bytes | None:
        """``GET /v1/detection/list`` (no authentication): the published list's bytes, or
        None while none is published. Refuses (TransportError) a body over ``max_bytes``,
        without reading the rest of it."""
        try:
            async with self._http.stream("GET", "/v1/detection/list") as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = _error_from_response(response)
                    if isinstance(error, ServerError) and error.code == "detection_list_missing":
                        return None
                    raise error
                parts: list[bytes] = []
                done = 0
                async for piece in response.aiter_bytes(UPLOAD_CHUNK):
                    done += len(piece)
                    if done > max_bytes:
                        raise TransportError("the server's detection list is too large")
                    parts.append(piece)
                return b"".join(parts)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"cannot reach the server at {self.base_url} ({exc.__class__.__name__})"
            ) from None

    async def post_voucher(self, window_id: bytes, voucher: bytes) -> None:
        """``POST /v1/detection/vouchers``: one voucher of this device's window ``window_id``.
        The answer is the same whatever the voucher holds (202 ``accepted``).

        Raises: ServerError (``rate_limited``, ``not_found`` when the server takes no
        vouchers, a malformed voucher's code), TransportError.
        """
        await self._request(
            "POST",
            "/v1/detection/vouchers",
            json_body={"window": b64e(window_id), "voucher": b64e(voucher)},
        )

    # -- WebSocket ---------------------------------------------------------------------------

    @asynccontextmanager
    async def websocket(self) -> AsyncIterator[MessageSocket]:
        """Open ``/v1/websocket`` as this device.

        Raises:
            ServerError: the upgrade was refused (e.g. 401 ``unauthorized``).
            TransportError: the server cannot be reached.
        """
        if self.credentials is None:
            raise TransportError("this device is not registered")
        url = "ws" + self.base_url[len("http"):] + "/v1/websocket"
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": self.credentials.authorization()},
                open_timeout=DEFAULT_TIMEOUT,
                max_size=4 * 1024 * 1024,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ServerError(
                "unauthorized" if status == 401 else f"http_{status}",
                f"the server refused the WebSocket ({status})",
                status,
            ) from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise TransportError(
                f"cannot open the WebSocket to {self.base_url} ({exc.__class__.__name__})"
            ) from None
        try:
            yield MessageSocket(ws)
        finally:
            await ws.close()


@dataclass(frozen=True, slots=True)
class SocketEvent:
    """A server frame: ``kind`` "envelope" (with ``envelope`` bytes) or "queue_empty"."""

    kind: str
    envelope: bytes = b""


class MessageSocket:
    """The client side of the delivery WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def receive(self) -> SocketEvent:
        """The next frame the client understands (unknown frame types are skipped).

        Raises:
            TransportError: the connection closed or sent something that is not the API.
        """
        while True:
            try:
                frame = await self._ws.recv()
            except WebSocketException as exc:
                raise TransportError(
                    f"the WebSocket closed ({exc.__class__.__name__})"
                ) from None
            try:
                data = json.loads(frame)
            except ValueError:
                raise TransportError("the server sent a WebSocket frame that is not JSON") from None
            if not isinstance(data, dict):
                raise TransportError("the server sent a malformed WebSocket frame")
            kind = data.get("type")
            if kind == "envelope":
                return SocketEvent("envelope", b64d(data.get("envelope")))
            if kind == "queue_empty":
                return SocketEvent("queue_empty")
            # Forward compatibility: ignore frame types this client does not know.

    async def ack(self, message_id: bytes) -> None:
        """Acknowledge one envelope (the server deletes it)."""
        try:
            await self._ws.send(json.dumps({"type": "ack", "message_id": b64e(message_id)}))
        except WebSocketException as exc:
            raise TransportError(f"the WebSocket closed ({exc.__class__.__name__})") from None
