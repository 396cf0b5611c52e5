"""The public detection routes (docs/api.md "Detection"): the published blinded list, its
signed digest, and voucher intake.

``GET /v1/detection/list`` and ``GET /v1/detection/list/digest`` need no authentication (any
client, and ``tidings audit detection-list``, may check what everyone is served): 404
``detection_list_missing`` while no list is published. ``POST /v1/detection/vouchers`` is
device-authenticated like ``/v1/reports``, rate limited per account, size limited, and
answers 202 with the same body whatever the voucher holds: the server stores it and opens it
later, in a background task (`tidings.safety.detection`), so neither the answer nor its
timing can depend on whether it matched.
"""

# No `from __future__ import annotations`: FastAPI must see the route parameters' Annotated
# dependencies (local to `build_detection_router`) as objects, not strings.
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tidings import errors as e
from tidings.safety.detection import WINDOW_ID_LEN, DetectionService
from tidings.safety.detection_model import ListRecord
from tidings.safety.http import DEVICE_ERRORS, ErrorDocs, no_error_docs
from tidings.wire.base64url import B64URL_PATTERN, b64d, b64e
from tidings.wire.voucher import MAX_VOUCHER_BYTES

__all__ = ["LIST_MEDIA_TYPE", "VOUCHER_ERRORS", "build_detection_router"]

LIST_MEDIA_TYPE = "application/octet-stream"

LIST_ERRORS: tuple[type[e.TidingsError], ...] = (
    e.DetectionListMissingError,
    e.StorageUnavailableError,
)
"""What the two list routes can answer besides the list."""

VOUCHER_ERRORS: tuple[type[e.TidingsError], ...] = (
    e.DecodeError,
    e.TruncatedError,
    e.OversizedError,
    e.UnsupportedVersionError,
    e.RateLimitedError,
    e.StorageUnavailableError,
)
"""What ``POST /v1/detection/vouchers`` can refuse with (besides device authentication)."""

class VoucherBody(BaseModel):
    window: str = Field(pattern=B64URL_PATTERN, max_length=(WINDOW_ID_LEN * 4 + 2) // 3)
    voucher: str = Field(pattern=B64URL_PATTERN, max_length=(MAX_VOUCHER_BYTES * 4 + 2) // 3)


class VoucherAccepted(BaseModel):
    status: str = "accepted"


class ListDigest(BaseModel):
    version: int
    digest: str
    signature: str
    signing_public_key: str
    threshold: int
    created_ms: int
    size: int


def _etag(record: ListRecord) -> str:
    return f'"{b64e(record.digest)}"'


def build_detection_router(
    service: DetectionService,
    authenticate: Callable[..., Any],
    *,
    limit_voucher: Callable[[Any], Awaitable[None]] | None = None,
    on_voucher: Callable[[], None] | None = None,
    accept_vouchers: bool = True,
    error_docs: ErrorDocs = no_error_docs,
) -> APIRouter:
    """The detection routes. ``authenticate``: the device dependency (refusing banned and
    suspended accounts); ``limit_voucher`` is awaited with the device before a voucher is
    decoded and raises (`RateLimitedError`) to refuse it; ``on_voucher`` is called after one is
    stored (the composition root wakes the processing task). ``accept_vouchers`` False
    (``detection_enabled = false``): no voucher route."""
    router = APIRouter(prefix="/v1/detection", tags=["detection"])
    Device = Annotated[Any, Depends(authenticate)]

    @router.get(
        "/list",
        response_class=Response,
        responses={
            200: {"content": {LIST_MEDIA_TYPE: {}}, "description": "The blinded list"},
            304: {"description": "Not modified (If-None-Match names the current digest)"},
            **error_docs(*LIST_ERRORS),
        },
    )
    async def detection_list(request: Request) -> Response:
        record, data = await run_in_threadpool(service.list_bytes)
        etag = _etag(record)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(content=data, media_type=LIST_MEDIA_TYPE, headers=headers)

    @router.get("/list/digest", response_model=ListDigest, responses=error_docs(*LIST_ERRORS))
    async def detection_list_digest() -> ListDigest:
        record = await run_in_threadpool(service.current_list)
        if record is None:
            raise e.DetectionListMissingError()
        return ListDigest(
            version=record.version,
            digest=b64e(record.digest),
            signature=b64e(record.signature),
            signing_public_key=b64e(record.signing_public),
            threshold=record.threshold,
            created_ms=record.created_ms,
            size=record.size,
        )

    if not accept_vouchers:
        return router

    @router.post(
        "/vouchers",
        status_code=202,
        response_model=VoucherAccepted,
        responses=error_docs(*DEVICE_ERRORS, *VOUCHER_ERRORS),
    )
    async def submit_voucher(body: VoucherBody, device: Device) -> VoucherAccepted:
        if limit_voucher is not None:
            await limit_voucher(device)
        window = b64d(body.window, what="window id", max_len=WINDOW_ID_LEN)
        voucher = b64d(body.voucher, what="voucher", max_len=MAX_VOUCHER_BYTES)
        await run_in_threadpool(
            service.accept_voucher, device.username, device.device_id, window, voucher
        )
        if on_voucher is not None:
            on_voucher()
        return VoucherAccepted()

    return router
