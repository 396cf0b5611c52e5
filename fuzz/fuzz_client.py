"""Fuzz target for what a device decodes of the server's detection list: the signed digest
document (`tidings.client.detection_list.PublishedList`), parsed and verified as
``tidings detection-sync`` and ``tidings audit detection-list`` do. The list's bytes
themselves are `psi.blinded_list`'s target."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from tidings.client.detection_list import PublishedList
from tidings.crypto.primitives import ed25519_public, ed25519_sign
from tidings.errors import DecodeError
from tidings.wire.base64url import b64e
from tidings.wire.detection import list_statement

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]


def published_list(data: bytes) -> PublishedList:
    try:
        doc = json.loads(data)
    except ValueError:  # the transport's answer to a body that is not JSON
        raise DecodeError("not JSON") from None
    published = PublishedList.from_json(doc)
    published.verify()
    return published


def _seed() -> bytes:
    seed, digest = bytes(range(32)), bytes(32)
    statement = list_statement(version=3, digest=digest, threshold=10, created_ms=1)
    doc = {
        "version": 3,
        "digest": b64e(digest),
        "signature": b64e(ed25519_sign(seed, statement)),
        "signing_public_key": b64e(ed25519_public(seed)),
        "threshold": 10,
        "created_ms": 1,
        "size": 4096,
    }
    return json.dumps(doc).encode()


def client_targets() -> Iterator[TargetSpec]:
    yield "client.published_list", published_list, [_seed()]
