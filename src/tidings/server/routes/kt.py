"""Key transparency's public endpoints (docs/key-transparency.md "Publication"): a device
submits its account's next signed device list; anyone reads signed epoch heads, lookup and
audit proofs; an account's own devices read its history; configured witnesses post
co-signatures. Thin: every check is `tidings.server.kt_directory.KeyDirectory`'s."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from tidings import errors as e
from tidings.crypto.kt_device_list import MAX_DEVICE_LIST_LEN
from tidings.crypto.kt_proofs import COSIGNATURE_LEN
from tidings.server.auth import DeviceDep
from tidings.server.ids import EpochText
from tidings.server.kt_directory import KeyDirectory, LookupAnswer
from tidings.server.models import b64url_max, b64url_of, check_username
from tidings.server.openapi import BAD_REQUEST, DEVICE_AUTH, errors
from tidings.storage.kt_store import EpochRow
from tidings.wire.base64url import B64URL_PATTERN, b64d, b64e

router = APIRouter(prefix="/v1/kt", tags=["key transparency"])


def get_directory(request: HTTPConnection) -> KeyDirectory:
    directory: KeyDirectory = request.app.state.kt
    return directory


DirectoryDep = Annotated[KeyDirectory, Depends(get_directory)]


class DeviceListUpload(BaseModel):
    device_list: str = Field(
        pattern=B64URL_PATTERN,
        max_length=b64url_max(MAX_DEVICE_LIST_LEN),
        description="base64url of the encoded signed device list (kt_device_list).",
    )


class DeviceListQueued(BaseModel):
    account: str
    version: int = Field(description="Queued for the next epoch (one version per epoch).")


class KtHead(BaseModel):
    epoch: int
    time_ms: int
    root: str = Field(description="base64url of the tree root (32 bytes).")
    head: str = Field(description="base64url of the signed epoch head (kt_proofs.sign_head).")
    cosignatures: str = Field(description="base64url of u8 count || (witness key || sig)s.")
    server_key: str = Field(description="base64url of the server's KT Ed25519 public key.")
    vrf_key: str = Field(description="base64url of the directory's VRF public key.")


class KtLookup(BaseModel):
    head: KtHead
    proof: str = Field(description="base64url of the lookup proof against head.root.")
    device_list: str | None = Field(description="The signed list the entry commits to.")


class KtHistory(BaseModel):
    lookup: KtLookup
    history: str = Field(description="base64url of the history proof (entries newest first).")
    device_lists: list[str] = Field(description="Every published list, newest first.")


class KtAudit(BaseModel):
    epoch: int
    proof: str = Field(description="base64url of the audit proof from epoch - 1 to epoch.")


class CosignatureUpload(BaseModel):
    cosignature: str = Field(
        pattern=b64url_of(COSIGNATURE_LEN),
        description="base64url of the witness's public key (32) || signature (64).",
    )


class Cosigned(BaseModel):
    epoch: int
    witnesses: int = Field(description="Configured witnesses that have co-signed the head.")


def _head(directory: KeyDirectory, row: EpochRow) -> KtHead:
    head = directory.decode_head(row)
    return KtHead(
        epoch=head.epoch,
        time_ms=head.time_ms,
        root=b64e(head.root),
        head=b64e(row.head),
        cosignatures=b64e(row.cosignatures),
        server_key=b64e(directory.server_public),
        vrf_key=b64e(directory.vrf_public),
    )


def _lookup(directory: KeyDirectory, answer: LookupAnswer) -> KtLookup:
    return KtLookup(
        head=_head(directory, answer.epoch),
        proof=b64e(answer.proof),
        device_list=None if answer.device_list is None else b64e(answer.device_list),
    )


@router.put(
    "/device-list",
    status_code=202,
    response_model=DeviceListQueued,
    responses=errors(
        *DEVICE_AUTH,
        *BAD_REQUEST,
        e.TruncatedError,
        e.ForbiddenError,
        e.DeviceListChainError,
        e.KtVersionConflictError,
        e.KtQueueFullError,
        e.KtDeviceListMismatchError,
    ),
)
async def submit(
    body: DeviceListUpload, auth: DeviceDep, directory: DirectoryDep
) -> DeviceListQueued:
    data = b64d(body.device_list, what="device list", max_len=MAX_DEVICE_LIST_LEN)
    signed = await directory.submit(auth.username, data)
    return DeviceListQueued(account=signed.account, version=signed.version)


READ_ERRORS = (e.DecodeError, e.UnknownEpochError, e.StorageUnavailableError)
"""A public read: a malformed path, no such epoch, a stored log this node cannot vouch for."""


@router.get("/head", response_model=KtHead, responses=errors(*READ_ERRORS[1:]))
async def latest_head(directory: DirectoryDep) -> KtHead:
    return _head(directory, await directory.epoch())


@router.get(
    "/head/{epoch}", response_model=KtHead, responses=errors(*READ_ERRORS)
)
async def head_of(epoch: EpochText, directory: DirectoryDep) -> KtHead:
    return _head(directory, await directory.epoch(epoch))


@router.get(
    "/lookup/{username}",
    response_model=KtLookup,
    responses=errors(*READ_ERRORS),
)
async def lookup(username: str, directory: DirectoryDep) -> KtLookup:
    return _lookup(directory, await directory.lookup(check_username(username)))


@router.get(
    "/history/{username}",
    response_model=KtHistory,
    responses=errors(
        *DEVICE_AUTH,
        e.DecodeError,
        e.ForbiddenError,
        e.UnknownEpochError,
        e.StorageUnavailableError,
    ),
)
async def history(username: str, auth: DeviceDep, directory: DirectoryDep) -> KtHistory:
    if check_username(username) != auth.username:
        raise e.ForbiddenError("a device reads only its own account's history")
    answer = await directory.history(username)
    return KtHistory(
        lookup=_lookup(directory, answer.lookup),
        history=b64e(answer.history),
        device_lists=[b64e(d) for d in answer.device_lists],
    )


@router.get(
    "/audit/{epoch}", response_model=KtAudit, responses=errors(*READ_ERRORS)
)
async def audit(epoch: EpochText, directory: DirectoryDep) -> KtAudit:
    row = await directory.epoch(epoch, with_audit=True)
    return KtAudit(epoch=row.epoch, proof=b64e(row.audit))


@router.post(
    "/cosign/{epoch}",
    response_model=Cosigned,
    responses=errors(
        *BAD_REQUEST,
        e.KtWitnessUnknownError,
        e.UnknownEpochError,
        e.InvalidSignatureError,
        e.StorageUnavailableError,
    ),
)
async def cosign(epoch: EpochText, body: CosignatureUpload, directory: DirectoryDep) -> Cosigned:
    data = b64d(body.cosignature, what="co-signature", max_len=COSIGNATURE_LEN)
    return Cosigned(epoch=epoch, witnesses=await directory.cosign(epoch, data))
