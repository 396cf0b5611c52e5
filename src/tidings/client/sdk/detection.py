"""Detection on the device (issue 10, docs/detection.md): the verified list, the window, one
voucher per image sent, and the voucher outbox.

- **The list.** `sync_detection_list` fetches the signed digest, checks it under the signing
  key pinned the first time (`tidings.client.detection_list`), and downloads the list only when
  its digest changed; the list's bytes are kept sealed in the profile store. A list that does
  not verify, or whose version is lower than the one held (a rollback), is refused and the
  device keeps what it had. Sending checks the digest again once it is older than
  `LIST_REFRESH_MS`; while the server publishes no list, images are sent without vouchers.
- **The window.** A device's vouchers fall into windows of ``W`` (the list's
  ``window_size``) with a fresh random 32-byte seed and a fresh random 16-byte id each; a new
  list version starts a new window, so one window has one threshold. The seed (from which the
  window key and its shares are derived, `tidings.crypto.threshold.WindowDealer`) never leaves
  the store. The set of the identity-orientation PDQ hashes vouched for in the window is kept
  too: a repeated image gets no second voucher (a second real share of one image would count
  twice towards the threshold).
- **Vouchers.** For every file sent (1:1 or group) that decodes as an image, the device
  computes PDQ in the list's orientation classes in pixel space (`tidings.media.pdq.
  oriented_hashes`) and builds one voucher (`tidings.crypto.voucher.VoucherBuilder`), both in
  a worker thread, off the event loop. The inner payload (`DetectionInnerPayload`) names the
  uploaded attachment, its key, digest, size and type and the device's PDQ hash. The device
  cannot tell whether a voucher matched; it does the same work either way. The voucher is
  filed in the outbox in the same store transaction that counts it in the window, before the
  message goes out, and posted after the send (`flush_vouchers`); a voucher that cannot be
  posted now (server unreachable, rate limited) stays filed and goes with the next send or
  sync. Files that are not images get no voucher.

What a modified client can do (omit vouchers) is in docs/detection.md, "Threat model".
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

from tidings.client.detection_list import MAX_LIST_BYTES, PublishedList
from tidings.client.errors import ServerError, StoreTamperedError, TransportError
from tidings.client.sdk.constants import (
    K_DETECTION,
    K_DETECTION_LIST,
    K_VOUCHER,
    LIST_REFRESH_MS,
    MAX_VOUCHERS_PER_FLUSH,
)
from tidings.client.sdk.outbox import OutboxMixin
from tidings.client.transport import b64d, b64e
from tidings.crypto.psi import BlindedList
from tidings.crypto.threshold import WindowDealer
from tidings.crypto.voucher import VoucherBuilder
from tidings.errors import (
    DecodeError,
    DetectionListRefusedError,
    ImageDecodeError,
    ImageTooLargeError,
    ImageTruncatedError,
    TidingsError,
)
from tidings.media.pdq import MAX_IMAGE_BYTES, oriented_hashes
from tidings.wire import tidings_pb2 as pb
from tidings.wire.detection import DetectionInnerPayload

_LIST = "list"  # the verified PublishedList (to_json) and when it was taken
_CHECKED = "checked"  # when the server's digest was last checked, and whether it had a list
_PIN = "pin"  # the pinned signing key
_WINDOW = "window"  # the current window
_REFUSED = "refused"  # the last refusal: code, message, time
_CURRENT = "current"  # K_DETECTION_LIST: the verified list's bytes
_WINDOW_ID_LEN = 16
_WINDOW_SEED_LEN = 32
_NOT_AN_IMAGE = (ImageDecodeError, ImageTruncatedError, ImageTooLargeError)
# Refusals of a posted voucher that a retry cannot change: the voucher is dropped.
_FINAL_VOUCHER_CODES = frozenset(
    {"malformed", "malformed_voucher", "truncated", "oversized", "unsupported_version",
     "not_found", "detection_list_mismatch"}
)


@dataclass(slots=True)
class DetectionWindow:
    """The device's current window (stored as JSON under ``K_DETECTION / window``)."""

    window_id: bytes
    seed: bytes
    list_version: int
    count: int
    vouched: set[str]

    @classmethod
    def fresh(cls, list_version: int) -> DetectionWindow:
        return cls(
            secrets.token_bytes(_WINDOW_ID_LEN),
            secrets.token_bytes(_WINDOW_SEED_LEN),
            list_version,
            0,
            set(),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": b64e(self.window_id),
            "seed": b64e(self.seed),
            "list_version": self.list_version,
            "count": self.count,
            "vouched": sorted(self.vouched),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DetectionWindow:
        """Raises StoreTamperedError for a record that is not a window."""
        try:
            window = cls(
                b64d(data["id"]),
                b64d(data["seed"]),
                int(data["list_version"]),
                int(data["count"]),
                {str(h) for h in data["vouched"]},
            )
        except (KeyError, TypeError, ValueError, TransportError):
            raise StoreTamperedError("the stored detection window is damaged") from None
        if len(window.window_id) != _WINDOW_ID_LEN or len(window.seed) != _WINDOW_SEED_LEN:
            raise StoreTamperedError("the stored detection window is damaged")
        return window


class DetectionMixin(OutboxMixin):
    """Detection, a part of `Client`."""

    _detection_list: BlindedList | None

    # -- the list ----------------------------------------------------------------------------

    async def sync_detection_list(self) -> dict[str, Any]:
        """Check the server's published list and take it if it is new and verifies; returns
        `detection_status`. Also posts vouchers still filed.

        Raises:
            DetectionListRefusedError: the published list does not verify (bad signature,
                another signing key than the pinned one, bytes that are not the published
                list, or a lower version than the one held); the list held is kept.
            TransportError, ServerError: the server cannot be reached or refused.
        """
        await self._sync_list()
        await self.flush_vouchers()
        return self.detection_status()

    async def _sync_list(self) -> None:
        now = self._clock()
        doc = await self._transport.detection_list_digest()
        if doc is None:
            self._store.put_json(K_DETECTION, _CHECKED, {"ms": now, "published": False})
            return
        try:
            blinded, published, data = await self._verified_list(doc)
        except DetectionListRefusedError as exc:
            with self._store.transaction():
                self._store.put_json(K_DETECTION, _CHECKED, {"ms": now, "published": True})
                self._store.put_json(
                    K_DETECTION, _REFUSED, {"code": exc.code, "message": str(exc), "ms": now}
                )
            raise
        with self._store.transaction():
            if blinded is not None:
                self._store.put(K_DETECTION_LIST, _CURRENT, data)
                self._store.put_json(
                    K_DETECTION, _LIST, {"published": published.to_json(), "taken_ms": now}
                )
                self._store.put_json(
                    K_DETECTION, _PIN, {"signing_public_key": b64e(published.signing_public_key)}
                )
            self._store.put_json(K_DETECTION, _CHECKED, {"ms": now, "published": True})
            self._store.delete(K_DETECTION, _REFUSED)
        if blinded is not None:
            self._detection_list = blinded

    async def _verified_list(
        self, doc: dict[str, Any]
    ) -> tuple[BlindedList | None, PublishedList, bytes]:
        """The published list if it is new and verifies, else (None, published, b"") when it
        is the one held. Raises DetectionListRefusedError (see `sync_detection_list`)."""
        try:
            published = PublishedList.from_json(doc)
        except DecodeError:
            raise DetectionListRefusedError("the published list digest is malformed") from None
        pin = self._store.get_json(K_DETECTION, _PIN)
        published.verify(pinned_key=None if pin is None else b64d(pin["signing_public_key"]))
        held = self._store.get_json(K_DETECTION, _LIST)
        if held is not None:
            current = PublishedList.from_json(held["published"])
            if published.version < current.version:
                raise DetectionListRefusedError(
                    f"the server offers list version {published.version}, older than the "
                    f"version {current.version} held"
                )
            if published == current:
                return None, published, b""
        data = await self._transport.detection_list(MAX_LIST_BYTES)
        if data is None:
            raise DetectionListRefusedError("the published list is not served")
        try:
            blinded = await asyncio.to_thread(published.check_list, data)
        except DetectionListRefusedError:
            raise
        except TidingsError:
            raise DetectionListRefusedError("the served list is not a valid list") from None
        return blinded, published, data

    async def _held_list(self) -> BlindedList | None:
        """The verified list held in the store (decoded once per open client, in a worker
        thread; the store itself is read on this one)."""
        if self._detection_list is not None:
            return self._detection_list
        held = self._store.get_json(K_DETECTION, _LIST)
        data = self._store.get(K_DETECTION_LIST, _CURRENT)
        if held is None or data is None:
            return None
        try:
            published = PublishedList.from_json(held["published"])
            self._detection_list = await asyncio.to_thread(published.check_list, data)
        except (KeyError, TidingsError):
            raise StoreTamperedError("the stored detection list is damaged") from None
        return self._detection_list

    async def _list_for_send(self) -> BlindedList | None:
        """The list to build vouchers against, checking the server's digest first when the
        last check is older than `LIST_REFRESH_MS`. A failed check keeps the list held (the
        refusal is recorded for `detection_status`); sending is never refused for it."""
        checked = self._store.get_json(K_DETECTION, _CHECKED)
        last = 0 if checked is None else int(checked["ms"])
        if self._clock() - last >= LIST_REFRESH_MS:
            with contextlib.suppress(DetectionListRefusedError, TransportError, ServerError):
                await self._sync_list()
        return await self._held_list()

    # -- vouchers ----------------------------------------------------------------------------

    async def _vouch(self, plaintext: bytes, pointer: pb.AttachmentPointer) -> bool:
        """File one voucher for the image in ``plaintext``, sent as ``pointer``; False (and
        nothing filed) when there is no list, the file is not an image, or the image was
        already vouched for in this window."""
        blinded = await self._list_for_send()
        if blinded is None or len(plaintext) > MAX_IMAGE_BYTES:
            return False
        params = blinded.params
        try:
            hashes = await asyncio.to_thread(
                oriented_hashes, plaintext, params.orientation_classes
            )
        except _NOT_AN_IMAGE:
            return False
        stored = self._store.get_json(K_DETECTION, _WINDOW)
        window = None if stored is None else DetectionWindow.from_json(stored)
        if (
            window is None
            or window.list_version != blinded.version
            or window.count >= params.window_size
        ):
            window = DetectionWindow.fresh(blinded.version)
        if hashes[0].hex in window.vouched:
            return False
        payload = DetectionInnerPayload(
            attachment_id=pointer.id,
            key=pointer.key,
            digest=pointer.digest,
            size=pointer.size,
            content_type=DetectionInnerPayload.for_content_type(pointer.content_type),
            pdq=hashes[0].bits,
        )
        dealer = WindowDealer(window.seed, params.threshold, params.tag_dimension)
        voucher = await asyncio.to_thread(
            VoucherBuilder(blinded, dealer).build, [h.bits for h in hashes], payload.encode()
        )
        window.count += 1
        window.vouched.add(hashes[0].hex)
        name = f"{self._clock():016d}-{secrets.token_hex(8)}"
        with self._store.transaction():
            self._store.put_json(K_DETECTION, _WINDOW, window.to_json())
            self._store.put_json(
                K_VOUCHER, name, {"window": b64e(window.window_id), "voucher": b64e(voucher)}
            )
        return True

    async def flush_vouchers(self) -> int:
        """Post the filed vouchers, oldest first (at most `MAX_VOUCHERS_PER_FLUSH`); returns
        how many the server took. One that the server refuses for good (malformed, no
        voucher route) is dropped; the rest stay filed when the server cannot be reached or
        is rate limiting."""
        posted = 0
        for name, record in sorted(self._store.items_json(K_VOUCHER))[:MAX_VOUCHERS_PER_FLUSH]:
            try:
                await self._transport.post_voucher(b64d(record["window"]), b64d(record["voucher"]))
            except TransportError:
                break
            except ServerError as exc:
                if exc.code not in _FINAL_VOUCHER_CODES:
                    break
            else:
                posted += 1
            self._store.delete(K_VOUCHER, name)
        return posted

    async def _flush_vouchers_quietly(self) -> None:
        """`flush_vouchers` after a send: a failure to post leaves them filed, never fails
        the send that has already gone out."""
        with contextlib.suppress(TransportError, ServerError):
            await self.flush_vouchers()

    def detection_status(self) -> dict[str, Any]:
        """What this device holds for detection: the verified list (version, digest,
        threshold, when last checked), the pinned signing key, the current window's fill,
        the vouchers still to post and the last refusal, if any. Never the window's seed."""
        held = self._store.get_json(K_DETECTION, _LIST)
        pin = self._store.get_json(K_DETECTION, _PIN)
        window = self._store.get_json(K_DETECTION, _WINDOW)
        refused = self._store.get_json(K_DETECTION, _REFUSED)
        checked = self._store.get_json(K_DETECTION, _CHECKED)
        listed = None
        if held is not None:
            published = held["published"]
            listed = {
                "version": published["version"],
                "digest": b64d(published["digest"]).hex(),
                "threshold": published["threshold"],
                "taken_ms": held["taken_ms"],
            }
        return {
            "list": listed,
            "checked_ms": None if checked is None else checked["ms"],
            "server_publishes": None if checked is None else bool(checked["published"]),
            "signing_public_key": None if pin is None else pin["signing_public_key"],
            "window_vouchers": 0 if window is None else int(window["count"]),
            "pending_vouchers": self._store.count(K_VOUCHER),
            "refused": None if refused is None else {
                "code": refused["code"], "message": refused["message"]
            },
        }
