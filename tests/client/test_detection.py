"""The device side of detection (`tidings.client.sdk.detection`), with a real server for
everything but the detection routes, which a test "publisher" answers in its place: it holds
the PSI secret and the signing key, so it can serve honest lists, lists that must be refused
(a bad signature, another signing key, bytes that are not the published list, an older
version), fail the voucher route, and open the vouchers the device posted.

What is checked: a list that does not verify is refused and the list held is kept; no list
means no voucher; every image sent (1:1 and group) gets exactly one voucher that opens under
the list's secret and whose inner payload names the attachment sent; files that are not
images and repeated images get none; vouchers wait in the outbox while the server cannot take
them; windows turn over at W and on a new list version; the status never shows the window's
seed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tidings.client.sdk import Client
from tidings.client.store import KdfParams
from tidings.client.transport import Transport
from tidings.crypto.primitives import ed25519_public, ed25519_sign
from tidings.crypto.psi import DEFAULT_PSI_PARAMETERS, BlindedList, generate_list_secret, list_keys
from tidings.crypto.voucher import OpenedVoucher, VoucherOpener, recover_inner
from tidings.errors import DetectionListRefusedError
from tidings.media.pdq import hash_image
from tidings.wire.base64url import b64d, b64e
from tidings.wire.detection import DetectionInnerPayload, list_statement
from tidings.wire.voucher import VoucherWire

PASS = "detection passphrase"
FAST = KdfParams.fast_for_tests()
T = 2
PARAMS = replace(DEFAULT_PSI_PARAMETERS, threshold=T, synthetic_rate_ppm=0)


def _png(name: str) -> bytes:
    pixels = np.asarray(getattr(skimage.data, name)())
    out = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(out, "PNG")
    return out.getvalue()


def _turned(data: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270).save(out, "PNG")
    return out.getvalue()


LISTED = {name: _png(name) for name in ("astronaut", "coffee", "chelsea")}
UNLISTED = _png("camera")


class Publisher(httpx.AsyncBaseTransport):
    """Answers ``/v1/detection/*`` as the test says; passes everything else to the server."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.secret = generate_list_secret()
        self.signing_seed = os.urandom(32)
        self.lists: list[BlindedList] = []
        self.digest_doc: dict[str, Any] | None = None
        self.list_bytes: bytes | None = None
        self.vouchers: list[tuple[bytes, bytes]] = []
        self.voucher_status = 202

    def publish(self, *, params: Any = PARAMS, names: Any = LISTED, signing_seed: bytes | None
                = None, version: int | None = None) -> BlindedList:
        version = version or len(self.lists) + 1
        keys = [k for name in names for k in list_keys(hash_image(LISTED[name]).bits, params)]
        blinded = BlindedList.build(keys, self.secret, params, version)
        seed = signing_seed or self.signing_seed
        statement = list_statement(version=version, digest=blinded.digest(),
                                   threshold=params.threshold, created_ms=1)
        self.digest_doc = {
            "version": version,
            "digest": b64e(blinded.digest()),
            "signature": b64e(ed25519_sign(seed, statement)),
            "signing_public_key": b64e(ed25519_public(seed)),
            "threshold": params.threshold,
            "created_ms": 1,
            "size": len(blinded.encode()),
        }
        self.list_bytes = blinded.encode()
        self.lists.append(blinded)
        return blinded

    def opened(self) -> list[OpenedVoucher]:
        out = []
        for _, voucher in self.vouchers:
            version = VoucherWire.decode(voucher).list_version
            opened = VoucherOpener(self.secret, self.lists[version - 1]).open(voucher)
            if opened is not None:
                out.append(opened)
        return out

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        missing = {"error": {"code": "detection_list_missing", "message": "none"}}
        if path == "/v1/detection/list/digest":
            if self.digest_doc is None:
                return httpx.Response(404, json=missing)
            return httpx.Response(200, json=self.digest_doc)
        if path == "/v1/detection/list":
            if self.list_bytes is None:
                return httpx.Response(404, json=missing)
            return httpx.Response(200, content=self.list_bytes)
        if path == "/v1/detection/vouchers":
            if self.voucher_status == 0:
                raise httpx.ConnectError("down", request=request)
            if self.voucher_status != 202:
                return httpx.Response(self.voucher_status, json={"error": {
                    "code": "rate_limited" if self.voucher_status == 429 else "unavailable",
                    "message": "not now"}})
            body = json.loads(request.content)
            self.vouchers.append((b64d(body["window"]), b64d(body["voucher"])))
            return httpx.Response(202, json={"status": "accepted"})
        return await self.inner.handle_async_request(request)


class Pair:
    def __init__(self, sender: Client, receiver: Client, publisher: Publisher, tmp: Path):
        self.sender, self.receiver, self.publisher, self.tmp = sender, receiver, publisher, tmp

    async def send(self, data: bytes, name: str = "image.png") -> None:
        path = self.tmp / name
        path.write_bytes(data)
        await self.sender.send_file(self.receiver.account.username, path,
                                    content_type="image/png")


Body = Callable[[Pair], Awaitable[None]]


@pytest.fixture
def with_pair(tmp_path: Path, server_url: str, names: Callable[[str], str]) -> Any:
    """Runs an async test body with a fresh sender (through a `Publisher`) and receiver."""

    def run(body: Body) -> None:
        async def main() -> None:
            publisher = Publisher()
            http = httpx.AsyncClient(base_url=server_url, transport=publisher)
            sender = await Client.register(
                tmp_path / "s", PASS, names("vs"), server_url, kdf=FAST,
                transport=Transport(server_url, http=http),
            )
            receiver = await Client.register(tmp_path / "r", PASS, names("vr"), server_url,
                                             kdf=FAST)
            try:
                await body(Pair(sender, receiver, publisher, tmp_path))
            finally:
                await sender.aclose()
                await receiver.aclose()
                await http.aclose()

        asyncio.run(main())

    return run


def test_no_published_list_means_no_voucher(with_pair: Any) -> None:
    async def body(pair: Pair) -> None:
        await pair.send(LISTED["coffee"])
        status = pair.sender.detection_status()
        assert status["list"] is None and status["server_publishes"] is False
        assert pair.publisher.vouchers == []

    with_pair(body)


def test_each_image_sent_gets_one_voucher_that_opens_at_the_threshold(with_pair: Any) -> None:
    async def body(pair: Pair) -> None:
        pair.publisher.publish()
        sent = [LISTED["coffee"], _turned(LISTED["chelsea"])]
        await pair.send(sent[0])
        await pair.send(UNLISTED)
        await pair.send(b"%PDF-1.4 not an image", "notes.pdf")  # no voucher: not an image
        await pair.send(sent[0])  # a repeat: no second share of one image
        assert len(pair.publisher.vouchers) == 2
        assert len(pair.publisher.opened()) == 1  # the listed one; below t nothing decrypts
        assert recover_inner(pair.publisher.opened(), T) == []
        await pair.send(sent[1])  # turned a quarter: still a match
        opened = pair.publisher.opened()
        assert len(opened) == T and len({w for w, _ in pair.publisher.vouchers}) == 1
        payloads = [DetectionInnerPayload.decode(p) for _, p in recover_inner(opened, T)]
        assert sorted(p.pdq for p in payloads) == sorted(hash_image(d).bits for d in sent)
        assert sorted(p.size for p in payloads) == sorted(len(d) for d in sent)
        assert {p.content_type for p in payloads} == {"image/png"}
        received = await pair.receiver.poll()
        ids = {m.attachments[0].size for m in (e.message for e in received if e.message)
               if m.attachments}
        assert {p.size for p in payloads} <= ids
        status = pair.sender.detection_status()
        assert status["window_vouchers"] == 3 and status["pending_vouchers"] == 0
        assert "seed" not in repr(status)

    with_pair(body)


def test_group_files_get_vouchers_too(with_pair: Any) -> None:
    async def body(pair: Pair) -> None:
        pair.publisher.publish()
        group = await pair.sender.create_group("g", [pair.receiver.account.username])
        path = pair.tmp / "g.png"
        path.write_bytes(LISTED["astronaut"])
        await pair.sender.send_group_file(group.group.id, path, content_type="image/png")
        assert len(pair.publisher.opened()) == 1

    with_pair(body)


@pytest.mark.parametrize("tamper", ["signature", "signing_key", "bytes", "rollback"])
def test_a_list_that_does_not_verify_is_refused_and_the_held_one_kept(
    with_pair: Any, tamper: str
) -> None:
    async def body(pair: Pair) -> None:
        p = pair.publisher
        p.publish()
        await pair.sender.sync_detection_list()
        held = pair.sender.detection_status()["list"]
        assert held["version"] == 1
        if tamper == "signature":
            p.publish()
            assert p.digest_doc is not None
            p.digest_doc["signature"] = b64e(bytes(64))
        elif tamper == "signing_key":
            p.publish(signing_seed=os.urandom(32))
        elif tamper == "bytes":
            p.publish()
            p.list_bytes = p.lists[0].encode()  # a list other than the one the digest names
            assert p.digest_doc is not None
            p.digest_doc["size"] = len(p.list_bytes)
        else:
            p.publish(version=5)
            await pair.sender.sync_detection_list()
            held = pair.sender.detection_status()["list"]
            p.publish(version=4)
        with pytest.raises(DetectionListRefusedError):
            await pair.sender.sync_detection_list()
        status = pair.sender.detection_status()
        assert status["list"] == held and status["refused"]["code"] == "detection_list_refused"
        # Sending goes on, with vouchers against the list held.
        await pair.send(LISTED["coffee"])
        versions = {VoucherWire.decode(v).list_version for _, v in p.vouchers}
        assert versions == {held["version"]}

    with_pair(body)


def test_vouchers_wait_while_the_server_cannot_take_them(with_pair: Any) -> None:
    async def body(pair: Pair) -> None:
        p = pair.publisher
        p.publish()
        p.voucher_status = 0  # unreachable
        await pair.send(LISTED["coffee"])
        p.voucher_status = 429
        await pair.send(LISTED["chelsea"])
        assert pair.sender.detection_status()["pending_vouchers"] == 2 and p.vouchers == []
        p.voucher_status = 202
        assert (await pair.sender.sync_detection_list())["pending_vouchers"] == 0
        assert len(p.vouchers) == 2 and len(p.opened()) == 2

    with_pair(body)


def test_windows_turn_over_at_w_and_on_a_new_list_version(with_pair: Any) -> None:
    async def body(pair: Pair) -> None:
        p = pair.publisher
        p.publish(params=replace(PARAMS, window_size=2))
        for name in ("astronaut", "coffee", "chelsea"):
            await pair.send(LISTED[name])
        windows = [w for w, _ in p.vouchers]
        assert windows[0] == windows[1] != windows[2]
        p.publish(params=replace(PARAMS, window_size=2))
        await pair.sender.sync_detection_list()
        await pair.send(UNLISTED)
        assert p.vouchers[-1][0] not in windows
        assert VoucherWire.decode(p.vouchers[-1][1]).list_version == 2

    with_pair(body)
