"""The user-facing trust & safety routes (docs/api.md "Reports, enforcement and appeals"):
``POST /v1/reports``, ``GET /v1/account/status``, ``POST /v1/appeals``.

`build_router` takes the device-authentication dependencies from the composition root, so this
module never imports the messaging server: ``authenticate`` refuses banned and suspended
accounts (reports), ``authenticate_any`` lets them through (status and appeals stay open to
them). Each returns an object with ``username`` and ``device_id``.

The service is synchronous: every call runs in the thread pool. A refused report answers 400
with the exact reason's code and stores nothing (`tidings.safety.reports`).
"""

# No `from __future__ import annotations`: FastAPI must see the route parameters' Annotated
# dependencies (local to `build_router`) as objects, not strings.
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictBool, StrictInt
from starlette.concurrency import run_in_threadpool

from tidings import errors as e
from tidings.crypto.franking import MAX_CONTEXT_ITEMS, ReportItem
from tidings.errors import InvalidReportError
from tidings.safety.reports import AttachmentReveal, ReportSubmission
from tidings.safety.service import SafetyService
from tidings.storage.blobs import ATTACHMENT_ID_PATTERN, AttachmentStore
from tidings.wire.base64url import B64URL_PATTERN, b64d
from tidings.wire.report import MAX_REPORT_NOTE_CHARS, MAX_REPORTED_ATTACHMENTS

__all__ = [
    "DEVICE_ERRORS",
    "ErrorDocs",
    "StoreAttachmentFetcher",
    "build_router",
    "no_error_docs",
]

ErrorDocs = Callable[..., dict[int | str, dict[str, Any]]]
"""Builds a route's ``responses=`` from the error classes it can raise (the composition root
passes `tidings.server.openapi.errors`: the status table lives with the server)."""

REPORT_ERRORS: tuple[type[e.TidingsError], ...] = (
    e.DecodeError,
    e.OversizedError,
    e.TruncatedError,
    e.UnsupportedVersionError,
    e.InvalidKeyError,
    e.InvalidReportError,
    e.ReporterNotRecipientError,
    e.ReportReplayError,
    e.MessageAlreadyReportedError,
    e.CommitmentMismatchError,
    e.InvalidFrankingTagError,
    e.ContextChainError,
    e.AttachmentError,
    e.AttachmentKeyMismatchError,
    e.AttachmentUnavailableError,
    e.StorageUnavailableError,
    e.UnknownKeyIdError,
    e.ConflictError,
    e.RateLimitedError,
)
"""What ``POST /v1/reports`` can refuse with (besides device authentication)."""

APPEAL_ERRORS: tuple[type[e.TidingsError], ...] = (
    e.DecodeError,
    e.OversizedError,
    e.SafetyInputError,
    e.InvalidCaseStateError,
    e.PermissionDeniedError,
    e.NotFoundError,
)
"""What ``POST /v1/appeals`` can refuse with (besides device authentication)."""

DEVICE_ERRORS: tuple[type[e.TidingsError], ...] = (
    e.UnauthorizedError,
    e.AccountBannedError,
    e.AccountSuspendedError,
)
"""``authenticate``: no valid credentials, or a banned / suspended account (the device
dependency of every device-authenticated safety and detection route)."""


def no_error_docs(*_: type[e.TidingsError]) -> dict[int | str, dict[str, Any]]:
    """The `ErrorDocs` of a router built without the server's status table: none."""
    return {}


_MAX_ITEM_B64 = 96 * 1024  # one ReportItem (content is at most a few KiB of text + pointers)


class DeviceIdentity(Protocol):
    @property
    def username(self) -> str: ...

    @property
    def device_id(self) -> int: ...


class StoreAttachmentFetcher:
    """`tidings.safety.reports.AttachmentFetcher` over the server's attachment store (local
    disk or S3), blocking: the safety service calls it from a worker thread. Ids that are not
    43 base64url characters are never looked up (no path or key tricks).

    Raises (from ``fetch``):
        StorageUnavailableError: the store cannot be reached (the report is refused with 503
            and nothing is stored; the reporter may send it again).
    """

    def __init__(self, store: AttachmentStore) -> None:
        self._store = store

    def fetch(self, attachment_id: str) -> bytes | None:
        if not isinstance(attachment_id, str) or not ATTACHMENT_ID_PATTERN.fullmatch(
            attachment_id
        ):
            return None
        return self._store.read(attachment_id)


_MAX_KEY_BYTES = 64


class RevealBody(BaseModel):
    item: StrictInt = Field(ge=0, lt=MAX_CONTEXT_ITEMS)
    pointer: StrictInt = Field(ge=0)
    key: str = Field(pattern=B64URL_PATTERN, max_length=(_MAX_KEY_BYTES * 4 + 2) // 3)


class ReportBody(BaseModel):
    category: str = Field(max_length=64)
    note: str | None = Field(default=None, max_length=MAX_REPORT_NOTE_CHARS)
    items: list[Annotated[str, Field(pattern=B64URL_PATTERN, max_length=_MAX_ITEM_B64)]] = Field(
        min_length=1, max_length=MAX_CONTEXT_ITEMS
    )
    reported_index: StrictInt = Field(ge=0, lt=MAX_CONTEXT_ITEMS)
    attachments: list[RevealBody] = Field(
        default_factory=list, max_length=MAX_REPORTED_ATTACHMENTS
    )
    block: StrictBool = False  # the reporter's client blocks locally; the server ignores it


class ReportAccepted(BaseModel):
    report_id: str
    case_id: str


class AppealBody(BaseModel):
    decision_id: str = Field(max_length=64)
    # The service strips the text and refuses an empty statement; the pattern says so in the
    # schema only (Python's idea of whitespace, which the JSON-Schema regex engines lack).
    text: str = Field(max_length=10_000, json_schema_extra={"pattern": r"\S"})


class AppealFiled(BaseModel):
    appeal_id: str


def decode_report(body: ReportBody, username: str, device_id: int) -> ReportSubmission:
    """The `ReportSubmission` of a request body.

    Raises:
        DecodeError: an item or key is not valid base64url / not a valid `ReportItem`.
        InvalidReportError: an item is far too large.
    """
    items = []
    for text in body.items:
        if len(text) > _MAX_ITEM_B64:
            raise InvalidReportError("a report item is too large")
        items.append(ReportItem.decode(b64d(text, what="report item")))
    reveals = tuple(
        AttachmentReveal(
            item_index=r.item,
            attachment_index=r.pointer,
            key=b64d(r.key, what="attachment key", max_len=_MAX_KEY_BYTES),
        )
        for r in body.attachments
    )
    return ReportSubmission(
        reporter=username,
        reporter_device=device_id,
        category=body.category,
        items=tuple(items),
        reported_index=body.reported_index,
        attachments=reveals,
        comment=body.note or "",
    )


def build_router(
    service: SafetyService,
    authenticate: Callable[..., Any],
    *,
    authenticate_any: Callable[..., Any] | None = None,
    limit_report: Callable[[Any], Awaitable[None]] | None = None,
    error_docs: ErrorDocs = no_error_docs,
) -> APIRouter:
    """The router of the three user-facing safety routes.

    ``authenticate``: FastAPI dependency for device authentication that refuses banned and
    suspended accounts. ``authenticate_any``: the same, letting them through (for status and
    appeals); defaults to ``authenticate``. ``limit_report``: awaited with the authenticated
    device before a report is decoded; it raises (e.g. `RateLimitedError`, 429) to refuse it.
    ``error_docs``: builds each route's documented error responses (`ErrorDocs`).
    """
    router = APIRouter(prefix="/v1", tags=["safety"])
    Device = Annotated[Any, Depends(authenticate)]
    AnyDevice = Annotated[Any, Depends(authenticate_any or authenticate)]

    @router.post(
        "/reports",
        status_code=201,
        response_model=ReportAccepted,
        responses=error_docs(*DEVICE_ERRORS, *REPORT_ERRORS),
    )
    async def submit_report(body: ReportBody, device: Device) -> ReportAccepted:
        who: DeviceIdentity = device
        if limit_report is not None:
            await limit_report(device)
        submission = decode_report(body, who.username, who.device_id)
        receipt = await run_in_threadpool(service.submit_report, submission)
        return ReportAccepted(report_id=receipt.report_id, case_id=receipt.case_id)

    @router.get("/account/status", responses=error_docs(e.UnauthorizedError))
    async def account_status(device: AnyDevice) -> dict[str, Any]:
        who: DeviceIdentity = device
        status = await run_in_threadpool(service.account_status, who.username)
        return status.to_json()

    @router.post(
        "/appeals",
        status_code=201,
        response_model=AppealFiled,
        responses=error_docs(e.UnauthorizedError, *APPEAL_ERRORS),
    )
    async def file_appeal(body: AppealBody, device: AnyDevice) -> AppealFiled:
        who: DeviceIdentity = device
        appeal = await run_in_threadpool(
            service.file_appeal, who.username, body.decision_id, body.text
        )
        return AppealFiled(appeal_id=appeal.appeal_id)

    return router
